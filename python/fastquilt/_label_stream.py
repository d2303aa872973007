"""Sparse labels on disk, read slab by slab: the coordinates and values of the labelled
voxels, without holding the label array in memory (for cleaning label volumes larger than
RAM). Dense labels are not worth it (their coordinates outweigh the array): the reader gives
up as soon as more than 1/8 of the voxels are labelled, and the caller reads the array."""

from __future__ import annotations

import numpy as np
import torch

_SLAB_BYTES = 16 << 20  # labels read per step (memory: about twice this)


def array_label_layout(labels, spatial: tuple[int, ...]) -> tuple[int, int, bool]:
    """``(N, C, has_channel_axis)`` of an array-like of labels ``(N, *S)`` or ``(N, C, *S)``."""
    shape = tuple(int(s) for s in labels.shape)
    D = len(spatial)
    if len(shape) == D + 1 and shape[1:] == spatial:
        return shape[0], 1, False
    if len(shape) == D + 2 and shape[2:] == spatial:
        return shape[0], shape[1], True
    raise ValueError(
        f"labels must have shape (N, {', '.join(map(str, spatial))}) or (N, C, "
        f"{', '.join(map(str, spatial))}) to match the image, got {shape}")


def sparse_label_coords(labels, spatial: tuple[int, ...], missing_label):
    """``(coords, values)``: ``(L, 2 + D)`` int64 ``[n, c, p...]`` and ``(L,)`` for the
    labelled voxels of an array-like (numpy, memmap, zarr, dask), in the order
    ``torch.nonzero`` gives on the whole array; None when the labels are dense."""
    N, C, channel = array_label_layout(labels, spatial)
    total = N * C * int(np.prod(spatial))
    plane = C * int(np.prod(spatial[1:])) * np.dtype(labels.dtype).itemsize
    chunks = getattr(labels, "chunks", None)
    depth = max(1, _SLAB_BYTES // max(plane, 1))
    if isinstance(chunks, tuple) and all(isinstance(c, int) for c in chunks):
        z_chunk = chunks[2 if channel else 1]  # whole chunks per read
        depth = max(z_chunk, depth // z_chunk * z_chunk)
    # (check_missing_label allows NaN for float labels only)
    nan_missing = isinstance(missing_label, float) and np.isnan(missing_label)
    coords, values, found = [], [], 0
    for n in range(N):
        per_channel: list[list] = [[] for _ in range(C)]
        for z0 in range(0, spatial[0], depth):
            z = slice(z0, min(z0 + depth, spatial[0]))
            block = labels[(n, slice(None), z) if channel else (n, z)]
            if hasattr(block, "compute"):  # dask
                block = block.compute()
            a = np.asarray(block)
            if not channel:
                a = a[None]
            # numpy, not torch: its nonzero sizes the result first (torch's needs temporaries
            # of 8 bytes per element of the slab)
            valid = ~np.isnan(a) if nan_missing else a != missing_label
            idx = np.nonzero(valid)  # [c, p...] in this slab, C order
            found += idx[0].size
            if found * 8 >= total:
                return None
            vals = torch.from_numpy(np.ascontiguousarray(a[idx]))
            at = torch.from_numpy(np.stack(idx, axis=1).astype(np.int64))
            at[:, 1] += z0
            for c in range(C):  # nonzero's order is channel-major: regroup by channel
                sel = at[:, 0] == c
                per_channel[c].append((at[sel], vals[sel]))
        for c in range(C):
            for at, vals in per_channel[c]:
                coords.append(torch.cat([torch.full((at.shape[0], 1), n), at], dim=1))
                values.append(vals)
    if not coords:
        return (torch.zeros((0, 2 + len(spatial)), dtype=torch.int64),
                torch.from_numpy(np.zeros(0, np.dtype(labels.dtype))))
    return torch.cat(coords), torch.cat(values)
