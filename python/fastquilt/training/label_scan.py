"""Sparse labels on disk, read slab by slab: the coordinates and values of the labelled
voxels, without holding the label array in memory (for cleaning label volumes larger than
RAM). Dense labels are not worth it (their coordinates outweigh the array): the reader gives
up as soon as more than 1/8 of the voxels are labelled, and the caller reads the array."""

from __future__ import annotations

import numpy as np
import torch

from ..arrays import read_box
from .labels import label_has_channel_axis, torch_dtype

_SLAB_BYTES = 16 << 20  # labels read per step (memory: about twice this)


def sparse_label_coords(labels, spatial: tuple[int, ...], missing_label):
    """``(coords, values)``: ``(L, 2 + D)`` int64 ``[n, c, p...]`` and ``(L,)`` for the
    labelled voxels of an array-like (numpy, memmap, zarr, dask), image by image and slab by
    slab (the counts built from them do not depend on the order); None when the labels are
    dense."""
    channel = label_has_channel_axis(labels.shape, spatial)
    N, C = int(labels.shape[0]), int(labels.shape[1]) if channel else 1
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
        for z0 in range(0, spatial[0], depth):
            z = slice(z0, min(z0 + depth, spatial[0]))
            a = read_box(labels, (n, slice(None), z) if channel else (n, z)).numpy()
            if not channel:
                a = a[None]
            # numpy, not torch: its nonzero sizes the result first (torch's needs temporaries
            # of 8 bytes per element of the slab)
            valid = ~np.isnan(a) if nan_missing else a != missing_label
            idx = np.nonzero(valid)  # [c, p...] in this slab
            found += idx[0].size
            if found * 8 >= total:
                return None
            at = np.stack([np.full(idx[0].size, n), *idx], axis=1).astype(np.int64)
            at[:, 2] += z0
            coords.append(torch.from_numpy(at))
            values.append(torch.from_numpy(np.ascontiguousarray(a[idx])))
    return (torch.cat(coords), torch.cat(values)) if coords else (
        torch.zeros((0, 2 + len(spatial)), dtype=torch.int64),
        torch.zeros(0, dtype=torch_dtype(labels.dtype)))
