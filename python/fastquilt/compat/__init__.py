"""qlty 1.5.0 drop-in: qlty's names, signatures, defaults and return shapes on fastquilt's
kernels. Change one import::

    from fastquilt.compat import NCYXQuilt, weed_sparse_classification_training_pairs_2D

Where qlty is wrong fastquilt deviates on purpose (docs/qlty-compatibility.md): step-back in
3D, a race-free stitch, dtype and device kept, ``missing_label`` in 3D, NaN-aware weeding,
absolute positional channels that work, an empty result instead of a crash, per-image weight
sums in the Large classes, 2.5D boundary modes against the whole volume.

Also qlty's 2.5D quilt (``NCZYX25DQuilt``, ``ZOperation``, the data-source backends and their
``from_*`` helpers) and its patch pairs (``extract_patch_pairs[_3d]``,
``extract_overlapping_pixels[_3d]``), with qlty's random numbers for a given seed.
"""

from .backends25d import (
    DataSource3DBackend,
    HDF5Backend,
    InMemoryBackend,
    MemoryMappedBackend,
    TensorLike3D,
    ZarrBackend,
    from_hdf5,
    from_memmap,
    from_zarr,
)
from .large import LargeNCYXQuilt, LargeNCZYXQuilt
from .patch_pairs import (
    extract_overlapping_pixels,
    extract_overlapping_pixels_3d,
    extract_patch_pairs,
    extract_patch_pairs_3d,
)
from .quilt25d import NCZYX25DQuilt
from .quilts import NCYXQuilt, NCZYXQuilt
from .weeding import (
    weed_sparse_classification_training_pairs_2D,
    weed_sparse_classification_training_pairs_3D,
)
from .zspec import ZOperation

__all__ = [
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
    "weed_sparse_classification_training_pairs_2D",
    "weed_sparse_classification_training_pairs_3D",
]
