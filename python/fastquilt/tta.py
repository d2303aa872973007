"""Test-time augmentation: the symmetries of a window (flips, and permutations of axes of
equal size, i.e. 90-degree rotations and transpositions), applied to a batch of windows before
the model and inverted on its predictions.

A transform is ``(perm, flips)``: flip the spatial axes ``flips`` of the window, then reorder
its spatial axes by ``perm`` (spatial axis ``i`` of the result is axis ``perm[i]`` of the
flipped window). Its inverse reorders by the inverse permutation, then flips the same axes.

Sets (``tta=``):

* ``"none"``: the identity only;
* ``"flips"``: every subset of axes flipped (4 in 2D, 8 in 3D);
* ``"all"``: the flips combined with every permutation of axes of equal window size: the
  8-element dihedral group of a square window in 2D, the 48-element group of a cube in 3D
  (a window with unequal sizes keeps only the permutations that map it onto itself).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

TTA_SETS = ("none", "flips", "all")

Transform = tuple[tuple[int, ...], tuple[int, ...]]


def tta_transforms(tta: str, window: Sequence[int]) -> list[Transform]:
    """The transforms of the set ``tta`` (see the module docstring) for ``window``; the
    identity comes first."""
    if tta not in TTA_SETS:
        raise ValueError(f"tta must be one of {', '.join(map(repr, TTA_SETS))}, got {tta!r}")
    D = len(window)
    ident = tuple(range(D))
    flip_sets = [()] if tta == "none" else [
        tuple(a for a in range(D) if mask >> a & 1) for mask in range(2 ** D)]
    perms = [ident]
    if tta == "all":
        perms = [p for p in itertools.permutations(range(D))
                 if all(window[p[i]] == window[i] for i in range(D))]
    return [(p, f) for p in perms for f in flip_sets]


def apply_transform(x: torch.Tensor, t: Transform) -> torch.Tensor:
    """Transform a batch ``x`` ``(B, C, *window)``."""
    perm, flips = t
    if flips:
        x = x.flip([2 + a for a in flips])
    if perm != tuple(range(len(perm))):
        x = x.permute(0, 1, *[2 + a for a in perm])
    return x


def invert_transform(y: torch.Tensor, t: Transform) -> torch.Tensor:
    """Undo :func:`apply_transform` on predictions ``y`` ``(B, C_out, *window)``."""
    perm, flips = t
    if perm != tuple(range(len(perm))):
        inv = [perm.index(i) for i in range(len(perm))]
        y = y.permute(0, 1, *[2 + a for a in inv])
    if flips:
        y = y.flip([2 + a for a in flips])
    return y
