"""Sliding-window inference from an array larger than RAM (zarr, numpy memmap, dask) into a
zarr v3 array, without read-modify-write of storage, resumable after a kill.

Design ("chunk owner", see shared/notes/out-of-core.md): the output is cut into *units*, blocks
of whole zarr chunks (or shards). Windows run once each, in raster order; their weighted
predictions and weights are scatter-added (the C++ op) into a RAM slab of about one plane of
units. When no later window can touch a unit, it is divided by its weight sum (recomputed from
the geometry, never stored), written once, and a done-marker is written. Only one writer ever
touches a chunk. A killed run resumes with the same call: finished units are skipped, and only
windows touching unfinished units are recomputed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ._args import device_arg
from ._fingerprint import describe, input_fingerprint, model_fingerprint, same_source
from ._ooc_slab import Slab
from ._ooc_store import (  # noqa: F401  (progress_of: public here)
    Progress,
    Units,
    progress_of,
    store_metadata,
    weight_desc,
    zarr_dtype,
)
from ._transfer import to_device
from .quilt import Quilt


def _spatial_read(x, n: int, sl: tuple) -> np.ndarray:
    block = x[(n, slice(None), *sl)]
    if hasattr(block, "compute"):  # dask
        block = block.compute()
    if isinstance(block, torch.Tensor):  # on any device, with or without grad
        return block.detach().cpu().numpy()
    return np.asarray(block)


class _Memmap:
    """A numpy memmap that pickles as its file (workers reopen it instead of copying it)."""

    def __init__(self, mm: np.memmap) -> None:
        self.filename, self.dtype, self.shape = str(mm.filename), mm.dtype, mm.shape
        self.offset, self._mm = mm.offset, mm

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_mm"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._mm = None

    def __getitem__(self, key):
        if self._mm is None:
            self._mm = np.memmap(self.filename, self.dtype, "r", self.offset, self.shape)
        return self._mm[key]


class _Job:
    """Everything one out-of-core run needs: geometry, units, output store and done-markers."""

    def __init__(self, x, out, window, step, weight, border, border_weight, chunks, unit,
                 compressors, out_dtype, fill_value, shards=None) -> None:
        from ._args import per_axis

        self.shape = tuple(int(s) for s in getattr(x, "shape", ()))
        if len(self.shape) not in (4, 5):
            raise ValueError(
                f"x must be an (N, C, Y, X) or (N, C, Z, Y, X) array, got shape {self.shape}")
        self.N, self.spatial = self.shape[0], self.shape[2:]
        if self.N == 0:  # the output's channel count comes from running the model
            raise ValueError("x has no images (N = 0): there is nothing to run the model on")
        D = len(self.spatial)
        self.q = Quilt(self.spatial, window, step, border=border, border_weight=border_weight,
                       weight=weight)
        chunk = per_axis(chunks if chunks is not None else (64 if D == 3 else 256), D, "chunks",
                         minimum=1)
        self.chunk = tuple(min(c, S) for c, S in zip(chunk, self.spatial))
        # With sharding the shard is zarr's write unit: units must hold whole shards.
        self.shards = (tuple(min(v, S) for v, S in zip(per_axis(shards, D, "shards", minimum=1),
                                                        self.spatial))
                       if shards is not None else None)
        block = self.shards or self.chunk
        if self.shards is not None:
            for d in range(D):
                if self.shards[d] % self.chunk[d] and self.shards[d] < self.spatial[d]:
                    raise ValueError(f"shards {self.shards} must be a multiple of chunks "
                                     f"{self.chunk} on every axis (axis {d})")
        self.unit = (per_axis(unit, D, "unit", minimum=1) if unit is not None
                     else tuple(min(2 * c, S) for c, S in zip(block, self.spatial)))
        for d in range(D):
            if self.unit[d] % block[d] and self.unit[d] < self.spatial[d]:
                name = "shards" if self.shards else "chunks"
                raise ValueError(
                    f"unit {self.unit} must be a multiple of {name} {block} on every axis "
                    f"(axis {d}), so that no two units share a {name[:-1]}")
        self.out_path = Path(out)
        self.progress = Progress(self.out_path)
        self.units = Units(self.N, self.spatial, self.unit)
        self.wdesc = weight_desc(weight, border_weight)
        self.out_dtype, self.fill_value, self.compressors = out_dtype, fill_value, compressors
        self.origins = self.q.grid.origins(self.N)
        self.w_np = self.q.weight.detach().to("cpu", torch.float32).numpy()
        self.w_t = torch.from_numpy(self.w_np)
        self.x = _Memmap(x) if isinstance(x, np.memmap) else x
        self.arr = None
        # What made the output (_fingerprint): set by the caller, who has the model.
        self.sources: dict = {"model": None, "input": input_fingerprint(x)}

    # ---- output store --------------------------------------------------------------------
    def open_existing(self) -> None:
        """Open an existing output and refuse one made differently (or not by fastquilt)."""
        import zarr

        if not self.out_path.exists():
            # Markers without their output (the user removed it to redo the run) would skip
            # units that no longer exist on disk: they are stale, start afresh.
            self.progress.clear()
            return
        try:
            self.arr = zarr.open_array(str(self.out_path), mode="r+")
        except Exception as e:
            raise ValueError(
                f"output {self.out_path} exists and is not a zarr array (it holds other "
                "contents); choose a new path or remove it") from e
        meta = dict(self.arr.attrs).get("fastquilt")
        if meta is None:
            raise ValueError(f"output {self.out_path} is a zarr array that fastquilt did not "
                             "create; refusing to write into it")
        want = self.metadata(meta["out_channels"])
        if meta != want:
            diff = {k: (meta.get(k), want[k]) for k in want if meta.get(k) != want[k]}
            raise ValueError(
                f"output {self.out_path} was made with a different geometry/dtype; cannot "
                f"resume into it (stored vs requested: {diff}); use a new output path")
        stored = dict(self.arr.attrs).get("fastquilt_sources") or {}
        for what in ("model", "input"):
            if not same_source(stored.get(what), self.sources.get(what)):
                raise ValueError(
                    f"output {self.out_path} was made with another {what} "
                    f"({describe(stored.get(what))}; now {describe(self.sources.get(what))}): "
                    "resuming would mix the results of both in one array; use a new output "
                    "path, or remove this one to redo the run")

    def metadata(self, out_channels: int) -> dict:
        return store_metadata(self.shape, self.q, self.unit, out_channels, self.out_dtype,
                              self.wdesc)

    def ensure_output(self, c_out: int) -> None:
        import zarr

        if self.arr is None:
            self.arr = zarr.create_array(
                store=str(self.out_path), shape=(self.N, c_out, *self.spatial),
                chunks=(1, c_out, *self.chunk), dtype=self.out_dtype,
                shards=(1, c_out, *self.shards) if self.shards else None,
                compressors=self.compressors, fill_value=self.fill_value,
                attributes={"fastquilt": self.metadata(c_out),
                            "fastquilt_sources": self.sources})
        elif self.arr.shape[1] != c_out:
            raise ValueError(
                f"model output has {c_out} channels but {self.out_path} was made for "
                f"{self.arr.shape[1]}; cannot resume into it")

    # ---- windows ---------------------------------------------------------------------------
    def plan(self, done: set[int]):
        """Windows to run (touching an unfinished unit) and, per unfinished unit, how many."""
        todo, remaining = [], {}
        for k in range(self.origins.shape[0]):
            undone = [u for u in self.units.touched(self.origins[k].tolist(), self.q.window)
                      if u not in done]
            if undone:
                todo.append(k)
                for u in undone:
                    remaining[u] = remaining.get(u, 0) + 1
        return todo, remaining

    def windows_by_row(self, todo: list[int], reader):
        """Yield ``(k, window)`` for ``todo`` in order. The input is read in blocks of whole
        input-chunk planes along axis 0 (each read once, the next one ahead of time) and every
        window is cut from them: rows of windows overlap, so reading window by window (or row
        by row) would read most voxels two or more times."""
        chunks = getattr(self.x, "chunks", None)
        depth = int(chunks[2]) if isinstance(chunks, tuple) and len(chunks) > 2 and isinstance(
            chunks[2], int) else self.q.window[0]
        S0, w0 = self.spatial[0], self.q.window[0]
        rest = [slice(None)] * (len(self.spatial) - 1)

        def read_block(n: int, j: int) -> np.ndarray:
            return _spatial_read(self.x, n, (slice(j * depth, min((j + 1) * depth, S0)), *rest))

        blocks: dict[tuple[int, int], Future] = {}

        def need(n: int, j: int) -> Future:
            if (n, j) not in blocks and j * depth < S0:
                blocks[(n, j)] = reader.submit(read_block, n, j)
            return blocks.get((n, j))

        row_key, slab = None, None
        for k in todo:
            o = self.origins[k].tolist()
            n, s0 = o[0], o[1]
            if (n, s0) != row_key:  # a new row of windows: assemble its planes once
                j0, j1 = s0 // depth, (s0 + w0 - 1) // depth
                for key in [key for key in blocks if key[0] != n or key[1] < j0]:
                    del blocks[key]  # planes no later window needs
                parts = [need(n, j).result() for j in range(j0, j1 + 1)]
                need(n, j1 + 1)  # read ahead
                if len(parts) == 1:
                    slab = parts[0][:, s0 - j0 * depth:s0 - j0 * depth + w0]
                else:  # copy just the w0 planes of this row out of the blocks
                    slab = np.empty((parts[0].shape[0], w0, *parts[0].shape[2:]),
                                    parts[0].dtype)
                    pos = 0
                    for j, part in zip(range(j0, j1 + 1), parts):
                        a = max(s0, j * depth) - j * depth
                        b = min(s0 + w0, j * depth + part.shape[1]) - j * depth
                        slab[:, pos:pos + b - a] = part[:, a:b]
                        pos += b - a
                row_key = (n, s0)
            sl = tuple(slice(a, a + w) for a, w in zip(o[2:], self.q.window[1:]))
            yield k, slab[(slice(None), slice(None), *sl)]

    def read_window(self, k: int) -> np.ndarray:
        o = self.origins[k].tolist()
        sl = tuple(slice(s, s + w) for s, w in zip(o[1:], self.q.window))
        return _spatial_read(self.x, o[0], sl)

    def predict(self, model, blocks: list[np.ndarray], device) -> torch.Tensor:
        """Predictions ``(B, C_out, *window)`` float32 on the CPU for a batch of windows."""
        xb = to_device(torch.from_numpy(np.stack(blocks)), device)
        with torch.no_grad():
            y = model(xb)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"model must return a tensor, got {type(y).__name__}")
        D = len(self.spatial)
        if y.dim() != D + 2 or y.shape[0] != len(blocks) or tuple(y.shape[2:]) != self.q.window:
            raise ValueError(
                f"model output must have shape ({len(blocks)}, C_out, "
                f"{', '.join(map(str, self.q.window))}), got {tuple(y.shape)}")
        return y.detach().to("cpu", torch.float32)

    def new_unit_buffers(self, uid: int, c_out: int) -> tuple[np.ndarray, np.ndarray]:
        """Zeroed weighted-sum ``(C_out, *unit)`` and weight-sum ``(*unit)`` buffers."""
        _, box = self.units.box(uid)
        shape = tuple(b.stop - b.start for b in box)
        return np.zeros((c_out, *shape), np.float32), np.zeros(shape, np.float32)

    def scatter(self, acc: np.ndarray, wsum: np.ndarray, region_lo, ks, pred: torch.Tensor):
        """Add windows ``ks`` (their predictions ``pred``, weighted) and their weights into
        ``acc`` ``(1, C_out, *region)`` / ``wsum`` ``(1, *region)`` starting at ``region_lo``;
        every window lies inside the region. The C++ scatter-add, all cores."""
        from . import _ops

        rel = self.origins[ks].clone()
        rel[:, 0] = 0
        rel[:, 1:] -= torch.as_tensor(region_lo, dtype=torch.int64)
        _ops.scatter_add_windows_(pred, rel, torch.from_numpy(acc), torch.from_numpy(wsum),
                                  weight=self.w_t)

    def normalise(self, acc: np.ndarray, wsum: np.ndarray) -> np.ndarray:
        """``acc / wsum`` in place (``fill_value`` where nothing covers a voxel)."""
        # 1 / max(wsum, smallest normal), 0 where uncovered: the C++ inverse_or_zero, so the
        # out-of-core mean is the in-memory one and a subnormal sum never gives inf.
        tiny = np.finfo(np.float32).tiny
        inv = np.where(wsum > 0, 1.0 / np.maximum(wsum, tiny), 0).astype(np.float32)
        torch.from_numpy(acc).mul_(torch.from_numpy(inv))  # all cores, no temporaries
        if self.fill_value != 0 and not bool((wsum > 0).all()):
            acc = np.where(wsum > 0, acc, np.float32(self.fill_value))
        return acc

    def finish(self, uid: int, acc: np.ndarray, wsum: np.ndarray) -> None:
        """Divide a complete unit by its weight sum, write it once, then mark it done."""
        self.write_unit(uid, self.normalise(acc, wsum))

    def write_unit(self, uid: int, mean: np.ndarray) -> None:
        """Write a finished unit once, then mark it done (idempotent)."""
        n, box = self.units.box(uid)
        try:
            self.arr[(n, slice(None), *box)] = mean.astype(self.out_dtype, copy=False)
        except Exception as e:
            raise RuntimeError(
                f"writing unit {uid} (image {n}, {box}) to {self.out_path} failed: {e}; it is "
                "not marked done, re-run the same call to resume") from e
        self.progress.mark(uid)


def sliding_window_zarr(
    model: Callable[[torch.Tensor], torch.Tensor],
    x,
    out: str | os.PathLike,
    window: int | Sequence[int],
    step: int | Sequence[int],
    batch_size: int = 8,
    weight: str | torch.Tensor | None = "gaussian",
    *,
    border: int | Sequence[int] | None = None,
    border_weight: float = 0.1,
    device: torch.device | str | None = None,
    chunks: int | Sequence[int] | None = None,
    unit: int | Sequence[int] | None = None,
    compressors="auto",
    shards: int | Sequence[int] | None = None,
    out_dtype: str | torch.dtype = "float32",
    fill_value: float = 0.0,
    progress: bool = False,
    client=None,
):
    """Apply ``model`` to every window of ``x`` ``(N, C, *S)`` (zarr array, numpy array or
    memmap, dask array, or tensor) and write the weighted mean to the zarr v3 array at ``out``
    ``(N, C_out, *S)``. Returns the opened output array.

    ``chunks`` (spatial) sets the output chunking (default 64 per axis in 3D, 256 in 2D);
    ``unit`` (spatial, a multiple of ``chunks``; default 2 chunks) is the block written at once;
    ``compressors`` and ``shards`` (spatial; then ``unit`` must hold whole shards) are passed
    to ``zarr.create_array``; ``out_dtype`` is float16, float32 (default) or float64 (zarr
    has no bfloat16). Each window runs exactly once; memory is
    about one plane of units plus a batch. Re-running the same call after a crash resumes:
    finished units are kept, only windows touching unfinished units run again. Resuming into an
    output made with another geometry, model-output channel count or dtype raises.

    With ``client`` (a ``dask.distributed.Client``) the same work runs as a static task graph
    of producers and owners on the cluster: see :mod:`fastquilt.distributed`.
    """
    if not callable(model) and client is None:
        raise TypeError("model must be callable (a torch.nn.Module or function)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    # On a cluster the device is the workers', which this machine may lack.
    device = device_arg(device, here=client is None) or torch.device("cpu")
    job = _Job(x, out, window, step, weight, border, border_weight, chunks, unit, compressors,
               zarr_dtype(out_dtype), fill_value, shards)
    job.sources["model"] = model_fingerprint(model)
    job.open_existing()
    if client is not None:
        from .distributed import run_distributed

        return run_distributed(client, job, model, batch_size, device, progress)
    done = job.progress.done()
    todo, _ = job.plan(done)
    writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fastquilt-writer")
    reader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fastquilt-reader")
    writes: list[Future] = []
    slab = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="win", desc="sliding_window -> zarr")

    max_pending = int(np.prod(job.units.counts[1:]))  # one plane of units

    def submit(units):
        for uid, mean in units:
            while len(writes) >= max_pending:  # back-pressure: memory stays bounded
                writes.pop(0).result()
            writes.append(writer.submit(job.write_unit, uid, mean))

    try:
        windows = job.windows_by_row(todo, reader)
        while True:
            batch, blocks = [], []
            for k, block in windows:
                batch.append(k)
                blocks.append(block)
                if len(batch) == batch_size:
                    break
            if not batch:
                break
            pred = job.predict(model, blocks, device)
            job.ensure_output(pred.shape[1])
            if slab is None:
                slab = Slab(job, pred.shape[1], done)
            submit(slab.add(batch, pred))
            for f in [f for f in writes if f.done()]:
                f.result()  # raise a failed write now
            writes = [f for f in writes if not f.done()]
            if bar is not None:
                bar.update(len(batch))
                bar.set_postfix(units_written=slab.flushed)
        if slab is not None:
            submit(slab.flush_image())
        for f in writes:
            f.result()
    finally:
        writer.shutdown(wait=True)
        reader.shutdown(wait=False, cancel_futures=True)
        if bar is not None:
            bar.close()
    if job.arr is None:  # everything was already done
        import zarr

        job.arr = zarr.open_array(str(job.out_path), mode="r")
    return job.arr
