"""The out-of-core search of ``tune``: reader threads and unit size of a run from a zarr array
into zarr, on a crop of the user's input (its first image, a few units per axis), each
configuration one cold run into a fresh temporary store (a run writes and then resumes, so it
does not repeat: one wall-clock call per configuration)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence

import torch

from ..outofcore import sliding_window_zarr
from .budget import Budget
from .timing import single_call

READER_THREADS = (1, 2, 4)
UNIT_CHUNKS = (1, 2, 4)  # units measured, in output chunks per axis
TIE = 1.05  # within 5% of the fastest, the configuration with fewer threads / smaller unit


class Crop:
    """The box ``[0, extent)`` of image 0 of an ``(N, C, *S)`` array, read lazily (reads go
    to the array, so the disk is measured)."""

    def __init__(self, arr, extent: Sequence[int]) -> None:
        self.arr, self.dtype = arr, arr.dtype
        self.shape = (1, arr.shape[1], *extent)
        chunks = getattr(arr, "chunks", None)
        if chunks is not None:
            self.chunks = tuple(chunks)

    def _clip(self, key: slice, size: int) -> slice:
        start, stop, _ = key.indices(size)
        return slice(start, stop)

    def __getitem__(self, key):
        if key is Ellipsis:
            key = (slice(None),) * len(self.shape)
        key = tuple(key) + (slice(None),) * (len(self.shape) - len(key))
        n = key[0] if isinstance(key[0], int) else self._clip(key[0], 1)
        return self.arr[(n, key[1], *(self._clip(k, s) if isinstance(k, slice) else k
                                      for k, s in zip(key[2:], self.shape[2:])))]


def default_chunk(ndim: int) -> int:
    """sliding_window_zarr's default output chunk per axis."""
    return 64 if ndim == 3 else 256


def search_out_of_core(model: Callable, x, window: tuple[int, ...], step: tuple[int, ...],
                       batch: int, device: torch.device, budget: Budget, weight: str,
                       chunks: int | None = None) -> dict:
    """Seconds of a run on a crop at reader threads 1, 2, 4 (unit 2 chunks), then at units of
    1, 2, 4 chunks (the best reader threads); configurations beyond the crop or the budget
    are skipped. Chooses the fastest, preferring fewer threads and smaller units within 5%."""
    budget.phase("out of core")
    ndim = len(x.shape) - 2
    chunk = chunks or default_chunk(ndim)
    extent = tuple(min(s, max(2 * 2 * chunk, 2 * w)) for s, w in zip(x.shape[2:], window))
    crop = Crop(x, extent)
    rows: list[dict] = []
    tmp = tempfile.mkdtemp(prefix="fastquilt-tune-")
    last = 0.0

    def run(threads: int, unit_chunks: int) -> float | None:
        nonlocal last
        unit = chunk * unit_chunks
        if unit > max(extent):
            return None
        if not budget.affords(1.5 * last, f"reader_threads {threads}, unit {unit}"):
            return None
        out = f"{tmp}/run-{len(rows)}.zarr"
        t = single_call(lambda: sliding_window_zarr(
            model, crop, out, window, step, batch, weight, device=device, chunks=chunk,
            unit=unit, reader_threads=threads), device)
        shutil.rmtree(out, ignore_errors=True)
        budget.tick()
        last = t
        rows.append({"reader_threads": threads, "unit": unit, "seconds": t,
                     "voxels_per_s": float(torch.tensor(extent).prod()) / t})
        return t

    try:
        for threads in READER_THREADS:
            run(threads, 2)
        if not rows:
            return {"rows": rows, "crop": list(extent), "chunk": chunk}
        best_threads = _choose(rows, "reader_threads")["reader_threads"]
        for u in UNIT_CHUNKS:
            if u != 2:
                run(best_threads, u)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    chosen = _choose([r for r in rows if r["reader_threads"] == best_threads], "unit")
    return {"rows": rows, "crop": list(extent), "chunk": chunk,
            "chosen": {"reader_threads": best_threads, "unit": chosen["unit"], "chunks": chunk}}


def _choose(rows: list[dict], key: str) -> dict:
    fastest = min(r["seconds"] for r in rows)
    return min((r for r in rows if r["seconds"] <= TIE * fastest), key=lambda r: r[key])
