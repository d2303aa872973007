"""Reuse of large CPU output buffers once the caller has dropped them.

A fresh multi-hundred-MB CPU tensor costs a page fault per 4 KiB page on its first write, and
glibc gives freed large blocks back to the kernel, so every call that returns a new large
output pays that again (at 512^3 float32, unstitch into a new tensor took 1.3-2.0 s, into a
reused one 0.21-0.27 s). Like the CUDA caching allocator, but for the library's own outputs
only: :func:`empty` hands out a cached buffer of the same size when nothing but the cache
references its memory any more (no tensor, view, numpy array or autograd graph of the caller's),
else a new one that it then caches. The cache is bounded (:func:`set_buffer_cache`, default a
quarter of the RAM, at most 8 GiB; ``FASTQUILT_BUFFER_CACHE=<bytes>`` in the environment, 0 to
turn it off); buffers under 16 MiB are left to the allocator.
"""

from __future__ import annotations

import os
import threading

import torch

MIN_BYTES = 16 << 20
_lock = threading.Lock()
_cache: list[torch.Tensor] = []  # aliases of handed-out storages, most recently used first


def _default_limit() -> int:
    env = os.environ.get("FASTQUILT_BUFFER_CACHE")
    if env is not None:
        return max(0, int(env))
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 0
    return min(ram // 4, 8 << 30)


_limit = _default_limit()
# The storage's reference count tells whether the caller still holds the buffer (a private
# torch API: without it, nothing is cached).
_use_count = getattr(torch._C, "_storage_Use_Count", None)


def set_buffer_cache(max_bytes: int) -> None:
    """Keep at most ``max_bytes`` of dropped output buffers for reuse (0: none, and the
    cached ones are released)."""
    global _limit
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
    with _lock:
        _limit = max_bytes
        _trim(0)


def buffer_cache_bytes() -> int:
    """Bytes the cache holds (buffers in use by the caller included)."""
    with _lock:
        return sum(a.untyped_storage().nbytes() for a in _cache)


def _free(alias: torch.Tensor) -> bool:
    # the alias itself and the temporary storage object: nobody else holds the memory
    return _use_count(alias.untyped_storage()._cdata) <= 2


def _trim(extra: int) -> None:
    """Drop the least recently used buffers until the cache and ``extra`` bytes fit."""
    total = sum(a.untyped_storage().nbytes() for a in _cache) + extra
    while _cache and total > _limit:
        total -= _cache.pop().untyped_storage().nbytes()


def empty(shape, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype, device=device)``, reusing a dropped CPU buffer of the
    same size when the cache holds one. The contents are undefined (the caller overwrites
    them)."""
    device = torch.device(device)
    nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    if device.type != "cpu" or nbytes < MIN_BYTES or _limit < nbytes or _use_count is None:
        return torch.empty(shape, dtype=dtype, device=device)
    with _lock:
        for i, alias in enumerate(_cache):
            storage = alias.untyped_storage()
            if storage.nbytes() == nbytes and _free(alias):
                _cache.insert(0, _cache.pop(i))
                return torch.empty(0, dtype=dtype).set_(storage, 0, tuple(shape))
        _trim(nbytes)
        t = torch.empty(shape, dtype=dtype)
        _cache.insert(0, torch.empty(0, dtype=dtype).set_(t.untyped_storage()))
        return t
