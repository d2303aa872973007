"""The one rule that turns weighted sums into a weighted mean, used by every path (in memory,
streaming, out of core, on a cluster, the qlty classes):

* ``mean = acc * (1 / max(weight_sum, smallest normal number))`` where ``weight_sum > 0``: the
  clamp keeps a subnormal weight sum from giving ``inf``;
* ``fill_value`` where ``weight_sum`` is 0 (no window covers the voxel, or only zero weights).

The compiled grid ops (``stitch_grid`` on the CPU, ``grid_weight_sum(inverse=True)``,
``grid_normalize_``) apply the same rule (``inverse_or_zero`` in the C++ index math); the
tests check that both give the same bits.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch

from . import buffers, ops

# grid_inverse_rows tables kept across calls (their bytes, weight copies included, at most)
REMEMBERED_BYTES = 32 << 20
_remembered: OrderedDict = OrderedDict()  # key -> (weight copy, inverse_rows, row_class)
_remembered_lock = threading.Lock()


def inverse_weight_sum(weight_sum: torch.Tensor) -> torch.Tensor:
    """``1 / max(weight_sum, tiny)`` where ``weight_sum > 0``, else 0; same shape and dtype.
    Differentiable."""
    tiny = torch.finfo(weight_sum.dtype).tiny
    inv = weight_sum.clamp_min(tiny).reciprocal()
    return torch.where(weight_sum > 0, inv, torch.zeros((), dtype=inv.dtype, device=inv.device))


def remembered_inverse_rows(weight: torch.Tensor, spatial_shape: Sequence[int],
                            step: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`ops.grid_inverse_rows` ``(inverse_rows (K, S[-1]), row_class (*S[:-1]))`` of a
    full grid, remembered across calls for the most recent grids whose tables take at most
    :data:`REMEMBERED_BYTES` together: sliding-window inference over many volumes of one shape
    builds them once (3D 256^3, window 64, step 32: 9,216 rows, 9 MiB, 3-9 ms at one thread).
    A remembered table serves only a weight equal to the one it was built from, element by
    element. Read-only (shared between calls)."""
    key = (tuple(spatial_shape), tuple(step), tuple(weight.shape), weight.dtype, weight.device)
    with _remembered_lock:
        hit = _remembered.get(key)
        if hit is not None and torch.equal(hit[0], weight):
            _remembered.move_to_end(key)
            return hit[1], hit[2]
    weight = weight.detach().clone()  # the table is built from the very values it keeps
    inverse_rows, row_class = ops.grid_inverse_rows(weight, spatial_shape, step)
    entry = (weight, inverse_rows, row_class)
    with _remembered_lock:
        _remembered[key] = entry
        _remembered.move_to_end(key)
        while sum(map(_entry_bytes, _remembered.values())) > REMEMBERED_BYTES:
            _remembered.popitem(last=False)  # the least recently used first
    return inverse_rows, row_class


def _entry_bytes(entry: tuple[torch.Tensor, ...]) -> int:
    return sum(t.nbytes for t in entry)


def _inverse_and_covered(weight_sum: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`inverse_weight_sum` in one buffer, in place (no autograd), and the mask of the
    voxels no weight covers (None when every voxel is covered, the usual case)."""
    inv = buffers.empty(weight_sum.shape, weight_sum.dtype, weight_sum.device)
    inv.copy_(weight_sum)  # contiguous: weight_sum may be a strided view (a unit of a slab)
    # one reduction tells the usual case (every voxel covered; NaN fails it) from the rest
    covered = inv.numel() == 0 or bool(inv.amin() > 0)
    uncovered = None if covered else (inv > 0).logical_not_()
    inv.clamp_min_(torch.finfo(inv.dtype).tiny).reciprocal_()
    return (inv, None) if covered else (inv.masked_fill_(uncovered, 0), uncovered)


def _check(acc: torch.Tensor, weight_sum: torch.Tensor) -> torch.Tensor:
    """``weight_sum`` ``(N, *S)`` as ``(N, 1, *S)``, to broadcast over ``acc`` ``(N, C, *S)``."""
    if not acc.is_floating_point() or not weight_sum.is_floating_point():
        raise TypeError(f"acc and weight_sum must be floating point, got {acc.dtype} and "
                        f"{weight_sum.dtype}")
    if acc.device != weight_sum.device:
        raise ValueError(f"acc ({acc.device}) and weight_sum ({weight_sum.device}) must be on "
                         "one device")
    if acc.dim() < 3 or weight_sum.shape != acc.shape[:1] + acc.shape[2:]:
        raise ValueError(f"weight_sum {tuple(weight_sum.shape)} does not match acc "
                         f"{tuple(acc.shape)}: acc is (N, C, *S) and weight_sum (N, *S)")
    return weight_sum.unsqueeze(1)


def divide_by_weight_sum_(
    acc: torch.Tensor, weight_sum: torch.Tensor, fill_value: float = 0.0
) -> torch.Tensor:
    """``acc`` ``(N, C, *S)`` divided by ``weight_sum`` ``(N, *S)`` in place by the rule
    above; returns ``acc``. Records no autograd."""
    ws = _check(acc, weight_sum)
    with torch.no_grad():
        inv, uncovered = _inverse_and_covered(ws)
        acc.mul_(inv)
        if uncovered is not None:
            acc.masked_fill_(uncovered, fill_value)
    return acc


def weighted_mean(
    acc: torch.Tensor, weight_sum: torch.Tensor, fill_value: float = 0.0
) -> torch.Tensor:
    """The weighted mean by the rule above as a new tensor, differentiable in ``acc`` and
    ``weight_sum`` (the path of a trainable weight); ``acc`` is not modified."""
    ws = _check(acc, weight_sum)
    if not (torch.is_grad_enabled() and (acc.requires_grad or ws.requires_grad)):
        with torch.no_grad():
            inv, uncovered = _inverse_and_covered(ws)
            mean = torch.mul(acc, inv, out=buffers.empty(acc.shape, acc.dtype, acc.device))
            return mean if uncovered is None else mean.masked_fill_(uncovered, fill_value)
    inv = inverse_weight_sum(ws)
    mean = acc * inv
    uncovered = inv == 0
    if bool(uncovered.any()):
        mean = mean.masked_fill(uncovered, fill_value)
    return mean
