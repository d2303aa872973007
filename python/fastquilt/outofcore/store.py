"""The output store of an out-of-core run: the zarr v3 array, the metadata that refuses to
resume into an output made differently, and one done-marker file per finished unit that a
resumed run skips."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import torch

from .._args import float_dtype_arg
from .fingerprints import describe, same_source
from .units import Units

FORMAT_VERSION = 1


def zarr_dtype(out_dtype) -> str:
    """The numpy name of a floating ``out_dtype`` that zarr can store (not bfloat16)."""
    d = float_dtype_arg(out_dtype) or torch.float32
    if d is torch.bfloat16:
        raise TypeError("out_dtype bfloat16 cannot be stored in zarr (numpy has no bfloat16); "
                        "use float16 or float32")
    return str(d).replace("torch.", "")


def weight_desc(weight, border_weight: float) -> object:
    """The weight as stored in the metadata (a tensor by its hash)."""
    if isinstance(weight, torch.Tensor):
        w = weight.detach().double().cpu().numpy()
        return {"tensor_sha256": hashlib.sha256(w.tobytes()).hexdigest(), "shape": list(w.shape)}
    return {"kind": weight or "border", "border_weight": float(border_weight)}


class Progress:
    """Done-markers, one small file per finished unit, beside the output store."""

    def __init__(self, out_path: Path) -> None:
        self.dir = out_path.parent / (out_path.name + ".fastquilt-progress")

    def done(self) -> set[int]:
        if not self.dir.exists():
            return set()
        return {int(p.name[1:]) for p in self.dir.iterdir() if p.name.startswith("u")}

    def clear(self) -> None:
        """Remove the markers (and their folder): they belong to an output that is gone."""
        if not self.dir.exists():
            return
        for p in self.dir.iterdir():
            if p.name.startswith(("u", ".tmp-")):
                p.unlink(missing_ok=True)
        try:
            self.dir.rmdir()
        except OSError:  # something else lives there: leave the folder
            pass

    def mark(self, uid: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".tmp-{uid}-{threading.get_ident()}"
        tmp.write_text("done")
        os.replace(tmp, self.dir / f"u{uid}")  # atomic: a marker exists only once written


class OutputStore:
    """The zarr v3 output ``(N, C_out, *S)`` at ``path``, cut into ``units``.

    ``metadata`` is what the output is made with except the model's channel count
    (``out_channels`` is added when the model has run); ``sources`` identifies the model and
    the input (fingerprints.py). Both are stored with the array and checked on resume.
    """

    def __init__(self, path, units: Units, chunk: tuple[int, ...],
                 shards: tuple[int, ...] | None, *, out_dtype: str, compressors,
                 fill_value: float, metadata: dict) -> None:
        self.path = Path(path)
        self.units, self.chunk, self.shards = units, chunk, shards
        self.out_dtype, self.compressors, self.fill_value = out_dtype, compressors, fill_value
        self.base_metadata = metadata
        self.sources: dict = {"model": None, "input": None}
        self.progress = Progress(self.path)
        self.arr = None

    def metadata(self, out_channels: int) -> dict:
        """The stored metadata of an output with ``out_channels`` channels."""
        meta = dict(self.base_metadata)
        dtype = meta.pop("dtype")
        meta["out_channels"] = int(out_channels)
        meta["dtype"] = dtype
        return json.loads(json.dumps(meta))

    def open_existing(self) -> None:
        """Open an existing output and refuse one made differently (or not by fastquilt)."""
        import zarr

        if not self.path.exists():
            # Markers without their output (the user removed it to redo the run) would skip
            # units that no longer exist on disk: they are stale, start afresh.
            self.progress.clear()
            return
        try:
            self.arr = zarr.open_array(str(self.path), mode="r+")
        except Exception as e:
            raise ValueError(
                f"output {self.path} exists and is not a zarr array (it holds other "
                "contents); choose a new path or remove it") from e
        meta = dict(self.arr.attrs).get("fastquilt")
        if meta is None:
            raise ValueError(f"output {self.path} is a zarr array that fastquilt did not "
                             "create; refusing to write into it")
        want = self.metadata(meta["out_channels"])
        if meta != want:
            diff = {k: (meta.get(k), want[k]) for k in want if meta.get(k) != want[k]}
            raise ValueError(
                f"output {self.path} was made with a different geometry/dtype; cannot "
                f"resume into it (stored vs requested: {diff}); use a new output path")
        stored = dict(self.arr.attrs).get("fastquilt_sources") or {}
        for what in ("model", "input"):
            if not same_source(stored.get(what), self.sources.get(what)):
                raise ValueError(
                    f"output {self.path} was made with another {what} "
                    f"({describe(stored.get(what))}; now {describe(self.sources.get(what))}): "
                    "resuming would mix the results of both in one array; use a new output "
                    "path, or remove this one to redo the run")

    def ensure(self, c_out: int) -> None:
        """Create the output for a model with ``c_out`` channels, or check the opened one."""
        import zarr

        if self.arr is None:
            N, spatial = self.units.N, self.units.spatial
            self.arr = zarr.create_array(
                store=str(self.path), shape=(N, c_out, *spatial),
                chunks=(1, c_out, *self.chunk), dtype=self.out_dtype,
                shards=(1, c_out, *self.shards) if self.shards else None,
                compressors=self.compressors, fill_value=self.fill_value,
                attributes={"fastquilt": self.metadata(c_out),
                            "fastquilt_sources": self.sources})
        elif self.arr.shape[1] != c_out:
            raise ValueError(
                f"model output has {c_out} channels but {self.path} was made for "
                f"{self.arr.shape[1]}; cannot resume into it")

    def open_finished(self):
        """The output array, opened for reading (a run that had nothing left to do)."""
        import zarr

        if self.arr is None:
            self.arr = zarr.open_array(str(self.path), mode="r")
        return self.arr

    def write_unit(self, uid: int, mean: torch.Tensor) -> None:
        """Write a finished unit ``(C_out, *unit)`` once, then mark it done (idempotent)."""
        n, box = self.units.box(uid)
        try:
            self.arr[(n, slice(None), *box)] = mean.numpy().astype(self.out_dtype, copy=False)
        except Exception as e:
            raise RuntimeError(
                f"writing unit {uid} (image {n}, {box}) to {self.path} failed: {e}; it is "
                "not marked done, re-run the same call to resume") from e
        self.progress.mark(uid)


def progress_of(out: str | os.PathLike) -> dict:
    """Units done / total of an output made by :func:`sliding_window_zarr` (for monitoring)."""
    import zarr

    out_path = Path(out)
    arr = zarr.open_array(str(out_path), mode="r")
    meta = dict(arr.attrs)["fastquilt"]
    units = Units(arr.shape[0], tuple(arr.shape[2:]), tuple(meta["unit"]))
    return {"done": len(Progress(out_path).done()), "total": units.total(),
            "metadata": dict(meta)}
