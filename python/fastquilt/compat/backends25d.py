"""qlty 1.5.0's 2.5D data sources: ``TensorLike3D`` over a ``DataSource3DBackend`` (in-memory
tensor, numpy memmap, zarr, HDF5) and the ``from_*`` helpers, with qlty's names and signatures.

A ``TensorLike3D`` has ``shape`` ``(N, C, Z, Y, X)``, ``dtype``, ``device`` (CPU) and tensor
indexing (``src[n, c, z0:z1, y0:y1, x0:x1]``) that reads only what is asked for. zarr and HDF5
arrays of 3 (``Z, Y, X``) or 4 (``C, Z, Y, X``) dimensions are seen as 5D: their reads come
back with the missing leading axes (qlty returns 3D reads of 3D HDF5 data).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch


def torch_dtype_of(np_dtype) -> torch.dtype:
    """The torch dtype of a numpy dtype."""
    return torch.from_numpy(np.empty(0, dtype=np_dtype)).dtype


class DataSource3DBackend(ABC):
    """Reads parts of an ``(N, C, Z, Y, X)`` array on demand."""

    @abstractmethod
    def get_shape(self) -> tuple[int, int, int, int, int]:
        """``(N, C, Z, Y, X)``."""

    @abstractmethod
    def get_dtype(self) -> torch.dtype:
        """The dtype reads are returned in."""

    @abstractmethod
    def load_slice(self, n=None, c=None, z=None, y=None, x=None) -> torch.Tensor:
        """The part selected by ints / slices per axis (None: the whole axis)."""

    @property
    @abstractmethod
    def supports_batch_loading(self) -> bool:
        """True when a range of z-slices is read in one call."""

    def get_z_slices(self, n: int, c: int, z_indices: list[int]) -> torch.Tensor:
        """Planes ``z_indices`` of image ``n``, channel ``c``: ``(len(z_indices), Y, X)``
        (with batch loading: the planes ``min..max`` of ``z_indices``)."""
        if self.supports_batch_loading:
            return self.load_slice(n=n, c=c, z=slice(min(z_indices), max(z_indices) + 1))
        return torch.stack([self.load_slice(n=n, c=c, z=z) for z in z_indices], dim=0)


def _key5(n, c, z, y, x) -> tuple:
    return tuple(slice(None) if v is None else v for v in (n, c, z, y, x))


class InMemoryBackend(DataSource3DBackend):
    """An ``(N, C, Z, Y, X)`` tensor; reads are views."""

    def __init__(self, tensor: torch.Tensor) -> None:
        if len(tensor.shape) != 5:
            raise ValueError(f"Tensor must be 5D (N, C, Z, Y, X), got shape {tensor.shape}")
        self.tensor = tensor

    def get_shape(self):
        return tuple(self.tensor.shape)

    def get_dtype(self):
        return self.tensor.dtype

    def load_slice(self, n=None, c=None, z=None, y=None, x=None):
        return self.tensor[_key5(n, c, z, y, x)]

    @property
    def supports_batch_loading(self):
        return True


class MemoryMappedBackend(DataSource3DBackend):
    """An ``(N, C, Z, Y, X)`` ``np.memmap``; reads are copied into tensors of ``dtype``
    (default: the array's)."""

    def __init__(self, mmap_array: np.memmap, dtype: torch.dtype | None = None) -> None:
        if len(mmap_array.shape) != 5:
            raise ValueError(
                f"Array must be 5D (N, C, Z, Y, X), got shape {mmap_array.shape}")
        self.mmap_array = mmap_array
        self._dtype = dtype or torch_dtype_of(mmap_array.dtype)

    def get_shape(self):
        return tuple(self.mmap_array.shape)

    def get_dtype(self):
        return self._dtype

    def load_slice(self, n=None, c=None, z=None, y=None, x=None):
        data = np.array(self.mmap_array[_key5(n, c, z, y, x)], copy=True)
        return torch.from_numpy(data).to(self._dtype)

    @property
    def supports_batch_loading(self):
        return True


class _ArrayBackend(DataSource3DBackend):
    """A 3D, 4D or 5D array read with numpy indexing, seen as ``(N, C, Z, Y, X)``."""

    _kind = "array"

    def __init__(self, array, dtype: torch.dtype | None = None) -> None:
        shape = tuple(array.shape)
        if len(shape) not in (3, 4, 5):
            raise ValueError(f"{self._kind} must be 3D, 4D, or 5D, got shape {shape}")
        self._array = array
        self._lead = 5 - len(shape)
        self.shape = (1,) * self._lead + shape
        self._dtype = dtype if dtype is not None else torch_dtype_of(array.dtype)

    def get_shape(self):
        return self.shape

    def get_dtype(self):
        return self._dtype

    def load_slice(self, n=None, c=None, z=None, y=None, x=None):
        key = _key5(n, c, z, y, x)
        # The missing leading axes have size 1: read with the rest of the key, then put back
        # the axes that the key keeps (slices keep an axis, ints drop it).
        data = np.asarray(self._array[key[self._lead:]])
        t = torch.from_numpy(np.array(data, copy=True)).to(self._dtype)
        for k in reversed(key[:self._lead]):
            if isinstance(k, slice):
                t = t.unsqueeze(0)[k]
            elif int(k) not in (0, -1):
                raise IndexError(f"index {k} is out of bounds for an axis of size 1")
        return t

    @property
    def supports_batch_loading(self):
        return True


class ZarrBackend(_ArrayBackend):
    """A zarr array of shape ``(N, C, Z, Y, X)``, ``(C, Z, Y, X)`` or ``(Z, Y, X)``."""

    _kind = "Zarr array"

    def __init__(self, zarr_array, dtype: torch.dtype | None = None) -> None:
        try:
            import zarr  # noqa: F401
        except ImportError as err:
            raise ImportError(
                "zarr is required for ZarrBackend. Install with: pip install zarr") from err
        super().__init__(zarr_array, dtype)
        self.zarr_array = zarr_array


class HDF5Backend(_ArrayBackend):
    """An h5py dataset of shape ``(N, C, Z, Y, X)``, ``(C, Z, Y, X)`` or ``(Z, Y, X)``
    (install the ``h5py`` extra: ``pip install fastquilt[h5py]``)."""

    _kind = "HDF5 dataset"

    def __init__(self, h5_dataset, dtype: torch.dtype | None = None) -> None:
        try:
            import h5py  # noqa: F401
        except ImportError as err:
            raise ImportError(
                "h5py is required for HDF5Backend. Install with: pip install h5py") from err
        super().__init__(h5_dataset, dtype)
        self.h5_dataset = h5_dataset


class TensorLike3D:
    """A data source that looks like an ``(N, C, Z, Y, X)`` CPU tensor and reads on demand:
    ``src[0]`` -> ``(C, Z, Y, X)``, ``src[0, 1, 5:10]`` -> ``(5, Y, X)``."""

    def __init__(self, backend: DataSource3DBackend) -> None:
        self.backend = backend
        self._shape = tuple(backend.get_shape())
        self._dtype = backend.get_dtype()

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return self._shape

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, (int, slice)):
            return self.backend.load_slice(n=key)
        if isinstance(key, tuple):
            if len(key) > 5:
                raise IndexError(f"too many indices for a 5D source: {len(key)}")
            return self.backend.load_slice(*key)
        raise TypeError(f"Unsupported indexing type: {type(key)}")

    def __len__(self) -> int:
        return self._shape[0]

    def __repr__(self) -> str:
        return (f"TensorLike3D(shape={self.shape}, dtype={self.dtype}, "
                f"backend={type(self.backend).__name__})")


def from_zarr(zarr_path: str, dtype: torch.dtype | None = None) -> TensorLike3D:
    """A ``TensorLike3D`` over the zarr array at ``zarr_path`` (opened read-only)."""
    try:
        import zarr
    except ImportError as err:
        raise ImportError("zarr is required. Install with: pip install zarr") from err
    return TensorLike3D(ZarrBackend(zarr.open(zarr_path, mode="r"), dtype=dtype))


def from_hdf5(hdf5_path: str, dataset_path: str,
              dtype: torch.dtype | None = None) -> TensorLike3D:
    """A ``TensorLike3D`` over dataset ``dataset_path`` of the HDF5 file ``hdf5_path``
    (opened read-only; the file stays open while the source is used)."""
    try:
        import h5py
    except ImportError as err:
        raise ImportError("h5py is required. Install with: pip install h5py") from err
    f = h5py.File(hdf5_path, "r")
    if dataset_path not in f:
        f.close()
        raise ValueError(f"dataset_path={dataset_path!r} is not in {hdf5_path!r}")
    return TensorLike3D(HDF5Backend(f[dataset_path], dtype=dtype))


def from_memmap(file_path: str, dtype: np.dtype, shape: tuple[int, ...],
                mode: str = "r") -> TensorLike3D:
    """A ``TensorLike3D`` over a raw file mapped with ``np.memmap(file_path, dtype, mode,
    shape)``; ``shape`` is ``(N, C, Z, Y, X)``."""
    mmap = np.memmap(file_path, dtype=dtype, mode=mode, shape=tuple(shape))
    return TensorLike3D(MemoryMappedBackend(mmap))
