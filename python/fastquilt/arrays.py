"""The array-likes fastquilt reads from — torch tensors, numpy arrays and memmaps, zarr and dask
arrays — and the one reader for all of them (:func:`read_box`), used by the out-of-core
inference, the training dataset and the label scan alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def read_box(array, index, *, copy: bool = False) -> torch.Tensor:
    """``array[index]`` as a torch tensor.

    A tensor gives a detached view on its own device; a numpy array, memmap, zarr or dask
    array is read into CPU memory (a memmap is read here, not later when the result is used,
    so a reader thread really does the reading). ``copy=True``: the result never shares
    memory with ``array`` (the caller may write into it).
    """
    block = array[index]
    if isinstance(block, torch.Tensor):
        return block.detach().clone() if copy else block.detach()
    if hasattr(block, "compute"):  # dask
        block = block.compute()
    a = np.asarray(block)
    if isinstance(a, np.memmap) or not a.flags.writeable or (copy and not a.flags.owndata):
        a = np.array(a)  # the read itself; torch takes only writable arrays
    return torch.from_numpy(a)


class MemmapArray:
    """A read-only numpy memmap that pickles as its file name, so dask workers reopen it
    instead of receiving its contents."""

    def __init__(self, mm: np.memmap) -> None:
        self.filename, self.dtype, self.shape = str(mm.filename), mm.dtype, mm.shape
        self.offset, self._mm = mm.offset, mm

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_mm"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._mm = None

    def __getitem__(self, key):
        if self._mm is None:
            self._mm = np.memmap(self.filename, self.dtype, "r", self.offset, self.shape)
        return self._mm[key]


class OneImage:
    """A ``(*S)`` array-like seen as ``(1, *S)`` (zarr arrays have no ``[None]``); reads stay
    lazy."""

    def __init__(self, arr) -> None:
        self.arr, self.shape, self.dtype = arr, (1, *arr.shape), arr.dtype
        chunks = getattr(arr, "chunks", None)
        if chunks is not None:
            self.chunks = (1, *chunks)

    def __getitem__(self, key):
        if key is Ellipsis:
            return np.asarray(self.arr[...])[None]
        return self.arr[key[1:]]  # key[0] is image 0


def with_absolute_paths(x):
    """``x``, naming the files it reads by absolute paths, so that a process started in another
    folder (a dask worker) reads the same data: a zarr array on a local store given by a
    relative path is reopened by its absolute one (numpy memmaps name theirs absolutely)."""
    root = getattr(getattr(x, "store", None), "root", None)
    if root is None or Path(root).is_absolute():
        return x
    import zarr
    from zarr.storage import LocalStore

    return zarr.open_array(store=LocalStore(Path(root).absolute(), read_only=True),
                           path=x.path, mode="r")
