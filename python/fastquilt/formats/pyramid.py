"""Multiscale pyramids written block by block: the geometry of the levels (level ``l`` halves
every spatial axis ``l`` times, rounding up), the check that the units a run writes are
aligned to the pyramid (so that each unit's blocks at every level belong to it alone and no
level is ever read back), and the downsampling of one unit's block: the mean for intensities
and probabilities, the mode for labels.

Level ``l``'s voxel ``i`` covers the level-0 voxels ``[i * 2^l, (i + 1) * 2^l)`` (clipped at
the far edge): its mean is the mean of those voxels, exactly, edges included; its mode is the
mode of the ``2^D`` level-``l-1`` voxels below it (ties: the smallest label), the usual
iterative label downsampling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

SCREEN = 1024  # default: levels until the largest spatial side fits a screen


def level_shape(spatial: Sequence[int], level: int) -> tuple[int, ...]:
    """The spatial shape of pyramid level ``level`` of an image of ``spatial`` voxels."""
    f = 1 << level
    return tuple(-(-int(S) // f) for S in spatial)


def max_levels(spatial: Sequence[int], unit: Sequence[int]) -> int:
    """The most levels (besides level 0) that units of ``unit`` voxels are aligned to: a unit
    must be a multiple of ``2^levels`` on every axis it does not span whole."""
    most = 62
    for S, u in zip(spatial, unit):
        if u < S:
            most = min(most, (u & -u).bit_length() - 1)  # the power of two dividing u
    return most


def default_levels(spatial: Sequence[int], unit: Sequence[int], screen: int = SCREEN) -> int:
    """Levels until the largest spatial side is at most ``screen`` voxels, as far as the
    units allow (:func:`max_levels`)."""
    want = max(0, math.ceil(math.log2(max(spatial) / screen))) if max(spatial) > screen else 0
    return min(want, max_levels(spatial, unit))


def check_levels(levels: int, spatial: Sequence[int], unit: Sequence[int]) -> int:
    """``levels`` (extra levels besides level 0), checked against the units."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 0:
        raise ValueError(f"levels must be an int >= 0 (pyramid levels besides level 0), got "
                         f"{levels!r}")
    most = max_levels(spatial, unit)
    if levels > most:
        need = 1 << levels
        raise ValueError(
            f"levels={levels} needs units that are multiples of {need} voxels on every axis "
            f"(so that every unit writes its own blocks of each level), but unit is "
            f"{tuple(unit)}: give unit= a multiple of {need} (and of chunks), or levels <= "
            f"{most}")
    return levels


def level_chunks(chunk: Sequence[int], unit: Sequence[int], spatial: Sequence[int],
                 level: int) -> tuple[int, ...]:
    """Chunks of level ``level``: level 0's where a unit's block at that level holds whole
    ones, else the unit's block itself; never larger than the level."""
    out = []
    for c, u, S, L in zip(chunk, unit, spatial, level_shape(spatial, level)):
        block = L if u >= S else u >> level
        out.append(min(c if block % c == 0 else block, L))
    return tuple(out)


def level_box(box: Sequence[slice], level: int) -> tuple[slice, ...]:
    """The part of level ``level`` below the level-0 box ``box`` (which starts aligned)."""
    f = 1 << level
    return tuple(slice(b.start // f, -(-b.stop // f)) for b in box)


def _block_sums(x: torch.Tensor, f: int) -> torch.Tensor:
    """Sums of each ``f``-cube of the floating ``x`` ``(C, *s)``, partial cubes at the far
    edges over the voxels they hold: torch's average pooling with the divisor 1 (ceil_mode
    keeps the partial cubes; an axis shorter than ``f`` is padded with zeros to ``f``)."""
    pad = []
    for n in reversed(x.shape[1:]):
        pad += [0, max(0, f - n)]
    if any(pad):
        x = F.pad(x, pad)
    pool = F.avg_pool3d if x.dim() == 4 else F.avg_pool2d
    return pool(x, f, f, ceil_mode=True, divisor_override=1)


def _counts(s: Sequence[int], level: int, dtype) -> torch.Tensor:
    """Level-0 voxels below each voxel of level ``level`` of a block of ``s`` voxels: ``2^(l D)``,
    fewer in the last voxel along an axis whose size is no multiple of ``2^l``."""
    f = 1 << level
    count = torch.ones((), dtype=dtype)
    for n in s:
        c = torch.full((-(-n // f),), float(f), dtype=dtype)
        c[-1] = n - (c.numel() - 1) * f
        count = count.unsqueeze(-1) * c
    return count


def downsample_mean(block: torch.Tensor, level: int) -> torch.Tensor:
    """Level ``level`` of a level-0 block ``(C, *s)`` (D = 2 or 3 spatial axes): the mean of
    each ``2^level`` cube of voxels, partial cubes at the far edges over the voxels they hold.
    Returns ``(C, *ceil(s / 2^level))`` in ``block``'s floating dtype."""
    if level == 0:
        return block
    return _block_sums(block, 1 << level) / _counts(block.shape[1:], level, block.dtype)


def mean_levels(block: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Levels ``1..levels`` of :func:`downsample_mean`, each level's sums made from the
    previous level's by pairwise sums along each axis (one pass over the block, then ever
    smaller ones). In numpy, on the calling thread: the writer threads call this, and small
    torch ops that share torch's thread pool between threads stall on a busy machine."""
    a = block.numpy()
    out = []
    for lv in range(1, levels + 1):
        a = _pair_sums(a)
        out.append(torch.from_numpy(a / _np_counts(block.shape[1:], lv, a.dtype)))
    return out


def _np_counts(s: Sequence[int], level: int, dtype) -> np.ndarray:
    """:func:`_counts` in numpy."""
    f = 1 << level
    count = np.ones((), dtype)
    for n in s:
        c = np.full(-(-n // f), f, dtype)
        c[-1] = n - (c.size - 1) * f
        count = np.multiply.outer(count, c)
    return count


def _pair_sums(a: np.ndarray) -> np.ndarray:
    """Sums of each 2-cube of ``a`` ``(C, *s)`` (an odd axis gains a zero plane first)."""
    if any(n % 2 for n in a.shape[1:]):
        a = np.pad(a, [(0, 0)] + [(0, n % 2) for n in a.shape[1:]])
    for ax in range(1, a.ndim):
        even = tuple(slice(0, None, 2) if i == ax else slice(None) for i in range(a.ndim))
        odd = tuple(slice(1, None, 2) if i == ax else slice(None) for i in range(a.ndim))
        a = a[even] + a[odd]
    return a


def _mode2(a: np.ndarray) -> np.ndarray:
    """One halving of an integer block ``(C, *s)`` by the mode of each ``2^D`` cube (ties:
    the smallest label; voxels past the far edge do not count). In numpy, like
    :func:`mean_levels`."""
    lo, hi = int(a.min()), int(a.max())
    labels = (lo + np.flatnonzero(np.bincount((a.astype(np.int64) - lo).ravel()))
              if hi - lo < 1 << 16
              else np.unique(a)).astype(a.dtype)
    if labels.size <= 16:  # few labels (semantic classes): count each one per cube
        counts = np.stack([_pair_sums((a == v).astype(np.uint8)) for v in labels])
        return labels[counts.argmax(0)].astype(a.dtype)  # (first maximum: smallest label)
    C, *s = a.shape
    D = len(s)
    out = [-(-n // 2) for n in s]
    x = a.astype(np.int64)
    valid = np.ones(x.shape, bool)
    if any(n % 2 for n in s):
        pad = [(0, 0)] + [(0, n % 2) for n in s]
        x, valid = np.pad(x, pad), np.pad(valid, pad)  # (padding: not valid)
    # (C, *out, 2^D): the voxels of each cube side by side
    shape = [C]
    for n in out:
        shape += [n, 2]
    perm = [0, *range(1, 2 * D, 2), *range(2, 2 * D + 1, 2)]
    cubes = x.reshape(shape).transpose(perm).reshape(C, *out, 1 << D)
    ok = valid.reshape(shape).transpose(perm).reshape(C, *out, 1 << D)
    same = (cubes[..., :, None] == cubes[..., None, :]) & ok[..., None, :]
    counts = np.where(ok, same.sum(-1), -1)
    top = counts.max(-1, keepdims=True)
    winner = np.where(counts == top, cubes, np.iinfo(np.int64).max).min(-1)
    return winner.astype(a.dtype)


def downsample_mode(block: torch.Tensor, level: int) -> list[torch.Tensor]:
    """Levels ``1..level`` of an integer level-0 block ``(C, *s)``, each the mode of the
    ``2^D`` voxels below it in the level before (ties: the smallest label)."""
    out, cur = [], block.numpy()
    for _ in range(level):
        cur = _mode2(cur)
        out.append(torch.from_numpy(cur))
    return out
