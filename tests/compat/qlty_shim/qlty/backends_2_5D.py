"""``qlty.backends_2_5D`` -> fastquilt.compat."""

from fastquilt.compat.backends25d import (  # noqa: F401
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
