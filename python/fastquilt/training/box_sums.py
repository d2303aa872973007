"""Labelled voxels per window interior, without gathering any window: from a mask by
separable interval sums (O(volume)), or from the labelled voxels' coordinates by a difference
array over the small window grid (O(labelled voxels)); and whether any kept window covers a
labelled voxel."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from ..quilt import Quilt


def grid_box_sums(mask: torch.Tensor, quilt: Quilt) -> torch.Tensor:
    """Number of True entries of ``mask`` (``(N, C, *S)`` bool) inside the interior of every
    window of ``quilt``, in qlty order: ``(N * num_windows,)`` int64.

    Separable and O(volume): the first axis is reduced to one plane per window interval (one
    read of the mask), then each following axis is reduced on the already-small result. No
    integral image or per-window patch is materialised."""
    D = quilt.ndim
    b = quilt.border if quilt.border is not None else (0,) * D
    acc = mask
    for d in range(D):
        axis = 2 + d if d == 0 else 1 + d  # after the first reduction, C is gone
        parts = []
        for s0 in quilt.grid.starts[d]:
            lo, hi = s0 + b[d], s0 + quilt.window[d] - b[d]
            sl = acc.narrow(axis, lo, hi - lo)
            if d == 0:
                parts.append(sl.sum(dim=(1, 2), dtype=torch.int64))  # channels and the interval
            else:
                parts.append(sl.sum(dim=axis, dtype=torch.int64))
        acc = torch.stack(parts, dim=1 + d)  # (N, n0, ..., n_d, S_{d+1}, ...)
    return acc.reshape(-1)


def _window_ranges(coords: torch.Tensor, quilt: Quilt):
    """Per axis, the range ``[first, last]`` of grid windows whose interior holds each voxel
    of ``coords`` (``(L, >=1 + D)``, spatial coordinates in the last D columns)."""
    D = quilt.ndim
    b = quilt.border if quilt.border is not None else (0,) * D
    first, last = [], []
    for d in range(D):
        st = torch.tensor(quilt.grid.starts[d])
        p = coords[:, coords.shape[1] - D + d].contiguous()
        last.append(torch.searchsorted(st + b[d], p, right=True) - 1)  # start + b <= p
        first.append(torch.searchsorted(st + quilt.window[d] - b[d], p, right=True))  # end > p
    return first, last


def coordinate_box_sums(coords: torch.Tensor, num_images: int, quilt: Quilt) -> torch.Tensor:
    """Labelled elements per window interior from their coordinates (``(L, 2 + D)``
    ``[n, c, p...]``): each adds 1 to the box of windows covering it, via a difference array
    on the small window grid and cumulative sums. O(labelled voxels + windows): for sparse
    labels this beats reading every interval of the volume again."""
    D = quilt.ndim
    first, last = _window_ranges(coords, quilt)
    ok = torch.ones(coords.shape[0], dtype=torch.bool)
    for d in range(D):
        ok &= first[d] <= last[d]
    n = coords[ok, 0]
    first = [f[ok] for f in first]
    last = [v[ok] for v in last]
    diff = torch.zeros((num_images, *(c + 1 for c in quilt.counts)), dtype=torch.int64)
    for corner in itertools.product((0, 1), repeat=D):
        idx = (n, *[last[d] + 1 if c else first[d] for d, c in enumerate(corner)])
        sign = -1 if sum(corner) % 2 else 1
        diff.index_put_(idx, torch.full((n.numel(),), sign, dtype=torch.int64), accumulate=True)
    for d in range(D):
        diff = diff.cumsum(1 + d)
    return diff[(slice(None), *(slice(0, c) for c in quilt.counts))].reshape(-1)


def covered_by_kept(coords: torch.Tensor, kept_grid: torch.Tensor, quilt: Quilt) -> torch.Tensor:
    """For labelled elements ``coords`` (``(L, 2 + D)`` ``[n, c, p...]``), whether any kept
    window's interior covers them: the covering windows form a box of grid indices per voxel,
    tested with an integral image of the small kept-window grid."""
    D = quilt.ndim
    first, last = _window_ranges(coords, quilt)
    lo = [f.clamp(0, n) for f, n in zip(first, quilt.counts)]
    hi = [(v + 1).clamp(0, n) for v, n in zip(last, quilt.counts)]
    integral = F.pad(kept_grid.to(torch.int32), [1, 0] * D)
    for d in range(D):
        integral = integral.cumsum(1 + d)
    total = torch.zeros(coords.shape[0], dtype=torch.int64)
    for corner in itertools.product((0, 1), repeat=D):
        idx = [coords[:, 0]] + [hi[d] if c else lo[d] for d, c in enumerate(corner)]
        sign = 1 if (D - sum(corner)) % 2 == 0 else -1
        total += sign * integral[tuple(idx)].to(torch.int64)
    empty = torch.zeros_like(total, dtype=torch.bool)
    for d in range(D):
        empty |= hi[d] <= lo[d]
    return (total > 0) & ~empty
