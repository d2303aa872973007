"""Sliding-window inference from an array larger than RAM (zarr, numpy memmap, dask) into a
zarr v3 array, without read-modify-write of storage, resumable after a kill.

Design ("chunk owner", see shared/notes/out-of-core.md): the output is cut into *units*, blocks
of whole zarr chunks (or shards). Windows run once each, in raster order; each window's weighted
prediction is added, piece by piece, into RAM buffers of the units it touches. When the last
window touching a unit has run, the unit is normalised by its weight sum (recomputed from the
geometry, never stored), written once, and a done-marker is written. Only one writer ever
touches a chunk. About one plane of units is open at a time. A killed run resumes with the same
call: finished units are skipped, and only windows touching unfinished units are recomputed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .quilt import Quilt

FORMAT_VERSION = 1


def _spatial_read(x, n: int, sl: tuple) -> np.ndarray:
    block = x[(n, slice(None), *sl)]
    if hasattr(block, "compute"):  # dask
        block = block.compute()
    if isinstance(block, torch.Tensor):
        return block.numpy()
    return np.asarray(block)


class _Units:
    """The output cut into units of whole chunks: ids, boxes and the units a window touches."""

    def __init__(self, N: int, spatial: tuple[int, ...], unit: tuple[int, ...]) -> None:
        self.N, self.spatial, self.unit = N, spatial, unit
        self.counts = tuple(math.ceil(S / u) for S, u in zip(spatial, unit))
        self.per_image = int(np.prod(self.counts))

    def total(self) -> int:
        return self.N * self.per_image

    def id(self, n: int, idx: Sequence[int]) -> int:
        return n * self.per_image + int(np.ravel_multi_index(tuple(idx), self.counts))

    def box(self, uid: int) -> tuple[int, tuple[slice, ...]]:
        n, rest = divmod(uid, self.per_image)
        idx = np.unravel_index(rest, self.counts)
        return n, tuple(slice(i * u, min((i + 1) * u, S))
                        for i, u, S in zip(idx, self.unit, self.spatial))

    def touched(self, origin: Sequence[int], window: Sequence[int]) -> list[int]:
        """Units that the window at ``origin`` ``[n, start...]`` overlaps."""
        n, starts = origin[0], origin[1:]
        ranges = [range(s // u, (s + w - 1) // u + 1) for s, w, u in zip(starts, window, self.unit)]
        return [self.id(n, idx) for idx in itertools.product(*ranges)]


def _metadata(x_shape, q: Quilt, unit, out_channels: int, out_dtype: str, weight_desc) -> dict:
    return json.loads(json.dumps({
        "format": FORMAT_VERSION,
        "input_shape": list(x_shape),
        "window": list(q.window),
        "step": list(q.step),
        "border": list(q.border) if q.border is not None else None,
        "weight": weight_desc,
        "unit": list(unit),
        "out_channels": int(out_channels),
        "dtype": str(np.dtype(out_dtype)),
    }))


def _weight_desc(weight, border_weight: float) -> object:
    if isinstance(weight, torch.Tensor):
        w = weight.detach().double().cpu().numpy()
        return {"tensor_sha256": hashlib.sha256(w.tobytes()).hexdigest(), "shape": list(w.shape)}
    return {"kind": weight or "border", "border_weight": float(border_weight)}


class _Progress:
    """Done-markers, one small file per finished unit, beside the output store."""

    def __init__(self, out_path: Path) -> None:
        self.dir = out_path.parent / (out_path.name + ".fastquilt-progress")

    def done(self) -> set[int]:
        if not self.dir.exists():
            return set()
        return {int(p.name[1:]) for p in self.dir.iterdir() if p.name.startswith("u")}

    def mark(self, uid: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".tmp-{uid}-{threading.get_ident()}"
        tmp.write_text("done")
        os.replace(tmp, self.dir / f"u{uid}")  # atomic: a marker exists only once written


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
    out_dtype: str = "float32",
    fill_value: float = 0.0,
    progress: bool = False,
):
    """Apply ``model`` to every window of ``x`` ``(N, C, *S)`` (zarr array, numpy array or
    memmap, dask array, or tensor) and write the weighted mean to the zarr v3 array at ``out``
    ``(N, C_out, *S)``. Returns the opened output array.

    ``chunks`` (spatial) sets the output chunking (default 64 per axis in 3D, 256 in 2D);
    ``unit`` (spatial, a multiple of ``chunks``; default 2 chunks) is the block written at once;
    ``compressors`` is passed to ``zarr.create_array``. Each window runs exactly once; memory is
    about one plane of units plus a batch. Re-running the same call after a crash resumes:
    finished units are kept, only windows touching unfinished units run again. Resuming into an
    output made with another geometry, model-output channel count or dtype raises.
    """
    import zarr

    if not callable(model):
        raise TypeError("model must be callable (a torch.nn.Module or function)")
    shape = tuple(int(s) for s in getattr(x, "shape", ()))
    if len(shape) not in (4, 5):
        raise ValueError(f"x must be an (N, C, Y, X) or (N, C, Z, Y, X) array, got shape {shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    N, spatial = shape[0], shape[2:]
    D = len(spatial)
    q = Quilt(spatial, window, step, border=border, border_weight=border_weight, weight=weight)
    from ._args import per_axis

    chunk = per_axis(chunks if chunks is not None else (64 if D == 3 else 256), D, "chunks",
                     minimum=1)
    chunk = tuple(min(c, S) for c, S in zip(chunk, spatial))
    unit = per_axis(unit, D, "unit", minimum=1) if unit is not None else tuple(
        min(2 * c, S) for c, S in zip(chunk, spatial))
    for d in range(D):
        if unit[d] % chunk[d] and unit[d] < spatial[d]:
            raise ValueError(
                f"unit {unit} must be a multiple of chunks {chunk} on every axis (axis {d}), so "
                "that no two units share a chunk")
    device = torch.device(device) if device is not None else torch.device("cpu")
    out_path = Path(out)
    progress_store = _Progress(out_path)
    units = _Units(N, spatial, unit)
    wdesc = _weight_desc(weight, border_weight)

    arr = None
    if out_path.exists():
        try:
            arr = zarr.open_array(str(out_path), mode="r+")
        except Exception as e:
            raise ValueError(
                f"output {out_path} exists and is not a zarr array (it holds other contents); "
                "choose a new path or remove it") from e
        meta = dict(arr.attrs).get("fastquilt")
        if meta is None:
            raise ValueError(f"output {out_path} is a zarr array that fastquilt did not create; "
                             "refusing to write into it")
        want = _metadata(shape, q, unit, meta["out_channels"], out_dtype, wdesc)
        if meta != want:
            diff = {k: (meta.get(k), want[k]) for k in want if meta.get(k) != want[k]}
            raise ValueError(
                f"output {out_path} was made with a different geometry/dtype; cannot resume "
                f"into it (stored vs requested: {diff}); use a new output path")

    done = progress_store.done()
    origins = q.grid.origins(N)
    todo_windows, remaining = [], {}
    for k in range(origins.shape[0]):
        o = origins[k].tolist()
        undone = [u for u in units.touched(o, q.window) if u not in done]
        if undone:
            todo_windows.append(k)
            for u in undone:
                remaining[u] = remaining.get(u, 0) + 1
    w_np = q.weight.to(torch.float32).numpy()

    buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fastquilt-writer")
    reader = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fastquilt-reader")
    writes: list[Future] = []
    written = [0]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo_windows), unit="win", desc="sliding_window -> zarr")

    def finish(uid: int, acc: np.ndarray, wsum: np.ndarray) -> None:
        n, box = units.box(uid)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(wsum > 0, acc / np.where(wsum > 0, wsum, 1), fill_value)
        try:
            arr[(n, slice(None), *box)] = mean.astype(out_dtype, copy=False)
        except Exception as e:
            raise RuntimeError(
                f"writing unit {uid} (image {n}, {box}) to {out_path} failed: {e}; it is not "
                "marked done, re-run the same call to resume") from e
        progress_store.mark(uid)
        written[0] += 1

    def read_window(k: int) -> np.ndarray:
        o = origins[k].tolist()
        sl = tuple(slice(s, s + w) for s, w in zip(o[1:], q.window))
        return _spatial_read(x, o[0], sl)

    try:
        batches = [todo_windows[i:i + batch_size] for i in range(0, len(todo_windows), batch_size)]
        pending = [reader.submit(read_window, k) for k in batches[0]] if batches else []
        for bi, batch in enumerate(batches):
            blocks = [f.result() for f in pending]
            if bi + 1 < len(batches):  # read the next batch while the model runs
                pending = [reader.submit(read_window, k) for k in batches[bi + 1]]
            xb = torch.from_numpy(np.stack(blocks)).to(device, non_blocking=True)
            with torch.no_grad():
                y = model(xb)
            if not isinstance(y, torch.Tensor):
                raise TypeError(f"model must return a tensor, got {type(y).__name__}")
            if y.dim() != D + 2 or y.shape[0] != len(batch) or tuple(y.shape[2:]) != q.window:
                raise ValueError(
                    f"model output must have shape ({len(batch)}, C_out, "
                    f"{', '.join(map(str, q.window))}), got {tuple(y.shape)}")
            c_out = int(y.shape[1])
            if arr is None:
                arr = zarr.create_array(
                    store=str(out_path), shape=(N, c_out, *spatial), chunks=(1, c_out, *chunk),
                    dtype=out_dtype, compressors=compressors, fill_value=fill_value,
                    attributes={"fastquilt": _metadata(shape, q, unit, c_out, out_dtype,
                                                       wdesc)})
            elif arr.shape[1] != c_out:
                raise ValueError(
                    f"model output has {c_out} channels but {out_path} was made for "
                    f"{arr.shape[1]}; cannot resume into it")
            yb = (y.detach().to("cpu", torch.float32) * torch.from_numpy(w_np)).numpy()
            for j, k in enumerate(batch):
                o = origins[k].tolist()
                for uid in units.touched(o, q.window):
                    if uid in done:
                        continue
                    n, box = units.box(uid)
                    if uid not in buffers:
                        ushape = tuple(b.stop - b.start for b in box)
                        buffers[uid] = (np.zeros((c_out, *ushape), np.float32),
                                        np.zeros(ushape, np.float32))
                    acc, wsum = buffers[uid]
                    src, dst = [], []
                    for s, w, b in zip(o[1:], q.window, box):
                        lo, hi = max(s, b.start), min(s + w, b.stop)
                        src.append(slice(lo - s, hi - s))
                        dst.append(slice(lo - b.start, hi - b.start))
                    acc[(slice(None), *dst)] += yb[(j, slice(None), *src)]
                    wsum[tuple(dst)] += w_np[tuple(src)]
                    remaining[uid] -= 1
                    if remaining[uid] == 0:
                        a, ws = buffers.pop(uid)
                        writes.append(writer.submit(finish, uid, a, ws))
            for f in [f for f in writes if f.done()]:
                f.result()  # raise a failed write now
            writes = [f for f in writes if not f.done()]
            if bar is not None:
                bar.update(len(batch))
                bar.set_postfix(units_written=written[0], open_units=len(buffers))
        for f in writes:
            f.result()
    finally:
        writer.shutdown(wait=True)
        reader.shutdown(wait=False, cancel_futures=True)
        if bar is not None:
            bar.close()
    if arr is None:  # everything was already done
        arr = zarr.open_array(str(out_path), mode="r")
    return arr


def progress_of(out: str | os.PathLike) -> dict:
    """Units done / total of an output made by :func:`sliding_window_zarr` (for monitoring)."""
    import zarr

    out_path = Path(out)
    arr = zarr.open_array(str(out_path), mode="r")
    meta = dict(arr.attrs)["fastquilt"]
    units = _Units(arr.shape[0], tuple(arr.shape[2:]), tuple(meta["unit"]))
    return {"done": len(_Progress(out_path).done()), "total": units.total(),
            "metadata": json.loads(json.dumps(meta))}
