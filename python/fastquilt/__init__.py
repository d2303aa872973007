"""fastquilt: overlapping windows over huge 2D/3D images — unstitch, stitch, sliding window.

The fast, correct successor of qlty: fused C++/CUDA gather and weighted scatter-add registered
as ``torch.ops.fastquilt.*`` with autograd and fake kernels.

The package reads as the pipeline, each layer importing only the ones before it:
``grid``, ``weights`` (geometry) -> ``ops`` (the compiled kernels) -> ``normalize`` ->
``quilt`` -> ``accumulator``, ``sliding`` (streaming) -> ``training/`` -> ``outofcore/`` ->
``inference`` (``sliding_window``), ``compat/`` (qlty), ``cli``. ``demo/`` stands apart.
"""

from __future__ import annotations

import torch  # noqa: F401  (must be loaded before the extension)

from .accumulator import StitchAccumulator
from .buffers import set_buffer_cache
from .compat import (
    DataSource3DBackend,
    HDF5Backend,
    InMemoryBackend,
    LargeNCYXQuilt,
    LargeNCZYXQuilt,
    MemoryMappedBackend,
    NCYXQuilt,
    NCZYX25DQuilt,
    NCZYXQuilt,
    TensorLike3D,
    ZarrBackend,
    ZOperation,
    extract_overlapping_pixels,
    extract_overlapping_pixels_3d,
    extract_patch_pairs,
    extract_patch_pairs_3d,
    from_hdf5,
    from_memmap,
    from_zarr,
    weed_sparse_classification_training_pairs_2D,
    weed_sparse_classification_training_pairs_3D,
)
from .formats import open_ome_zarr
from .grid import Grid, axis_count, axis_starts, grid_origins
from .inference import sliding_window
from .ops import (
    gather_windows,
    gather_windows_into,
    gather_windows_oriented,
    grid_normalize_,
    grid_weight_sum,
    scatter_add_windows,
    scatter_add_windows_,
    stitch_grid,
    stitch_grid_into,
)
from .quilt import Quilt
from .training import (
    CleaningStats,
    PatchDataset,
    WindowSampler,
    clean_pairs,
    select_windows,
    unstitch_pair,
)
from .weights import (
    border_mask,
    border_weight,
    gaussian_weight,
    hann_weight,
    linear_weight,
    make_weight,
)

__version__ = "0.1.0"

__all__ = [
    "CleaningStats",
    "DataSource3DBackend",
    "HDF5Backend",
    "InMemoryBackend",
    "MemoryMappedBackend",
    "NCZYX25DQuilt",
    "TensorLike3D",
    "ZOperation",
    "ZarrBackend",
    "extract_overlapping_pixels",
    "extract_overlapping_pixels_3d",
    "extract_patch_pairs",
    "extract_patch_pairs_3d",
    "from_hdf5",
    "from_memmap",
    "from_zarr",
    "LargeNCYXQuilt",
    "LargeNCZYXQuilt",
    "NCYXQuilt",
    "NCZYXQuilt",
    "PatchDataset",
    "WindowSampler",
    "clean_pairs",
    "select_windows",
    "unstitch_pair",
    "weed_sparse_classification_training_pairs_2D",
    "weed_sparse_classification_training_pairs_3D",
    "Grid",
    "Quilt",
    "StitchAccumulator",
    "axis_count",
    "axis_starts",
    "border_mask",
    "border_weight",
    "gather_windows",
    "gather_windows_into",
    "gather_windows_oriented",
    "gaussian_weight",
    "grid_origins",
    "grid_normalize_",
    "grid_weight_sum",
    "hann_weight",
    "linear_weight",
    "make_weight",
    "open_ome_zarr",
    "scatter_add_windows",
    "scatter_add_windows_",
    "set_buffer_cache",
    "sliding_window",
    "stitch_grid",
    "stitch_grid_into",
]
