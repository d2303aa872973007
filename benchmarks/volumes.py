"""The benchmarks' out-of-core input: a random float32 zarr volume made on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def random_zarr_volume(path: str | Path, size: int):
    """A ``(1, 1, size^3)`` float32 zarr v3 array at ``path`` (64^3 chunks, no compression),
    standard normal, written 64 planes at a time (each slab seeded by its first plane)."""
    import zarr

    z = zarr.create_array(store=str(path), shape=(1, 1, size, size, size), dtype="float32",
                          chunks=(1, 1, 64, 64, 64), compressors=None)
    for i in range(0, size, 64):
        z[:, :, i:i + 64] = np.random.default_rng(i).standard_normal(
            (1, 1, min(64, size - i), size, size)).astype(np.float32)
    return z
