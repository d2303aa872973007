"""The output store of an out-of-core run: the zarr v3 array, the metadata that refuses to
resume into an output made differently, one done-marker file per finished unit that a resumed
run skips (once storage is seen to hold its chunks), and the lease that keeps a second run
from writing the same output at the same time."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import socket
import threading
import time
from pathlib import Path

import torch

from .._args import float_dtype_arg
from ..formats.ome_writer import OmeWriter, level0_array, output_kind
from ..formats.ome_zarr import is_ome_zarr
from ..reductions import Reduction
from .fingerprints import describe, same_source
from .outputs import create_outputs, is_group, open_outputs
from .units import Units

FORMAT_VERSION = 1
# every written chunk is stored, even one equal to the fill value, so that "done" can be
# checked against what storage holds
WRITE_ALL = {"write_empty_chunks": True}


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


_MARKER = re.compile(r"u(\d+)")


class Progress:
    """Done-markers, one small file per finished unit, beside the output store."""

    def __init__(self, out_path: Path) -> None:
        self.dir = out_path.parent / (out_path.name + ".fastquilt-progress")

    def done(self) -> set[int]:
        """The units marked done (other files in the folder are not markers: ignored)."""
        if not self.dir.exists():
            return set()
        if not self.dir.is_dir():
            raise ValueError(f"{self.dir} is a file, where fastquilt keeps the done-markers of "
                             f"{self.dir.name[:-len('.fastquilt-progress')]}; move it away")
        return {int(m.group(1)) for p in self.dir.iterdir()
                if (m := _MARKER.fullmatch(p.name))}

    def unmark(self, uid: int) -> None:
        (self.dir / f"u{uid}").unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove the markers (and their folder): they belong to an output that is gone."""
        if not self.dir.exists():
            return
        self.done()  # (a file in its place: a clear error)
        for p in self.dir.iterdir():
            if p.name.startswith(("u", ".tmp-")):
                p.unlink(missing_ok=True)
        try:
            self.dir.rmdir()
        except OSError:  # something else lives there: leave the folder
            pass

    def mark(self, uid: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".tmp-{uid}-{os.getpid()}-{threading.get_ident()}"
        try:
            tmp.write_text("done")
            os.replace(tmp, self.dir / f"u{uid}")  # atomic: a marker exists only once written
        finally:
            tmp.unlink(missing_ok=True)


class Lease:
    """An exclusive claim on an output while a run writes it: an advisory lock (``flock``) on a
    file beside the output, which also names the holder (host, pid, start time). The operating
    system releases the lock when the holder's process ends, killed or not, so a lease is
    never stale. A second run on the same output is refused while the first holds it."""

    def __init__(self, out_path: Path) -> None:
        self.path = out_path.parent / (out_path.name + ".fastquilt-lease")
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ValueError(f"cannot create the lease file {self.path} ({e.strerror}); is its "
                             "folder writable?") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(
                f"output {self.path.name[:-len('.fastquilt-lease')]} is being written by another "
                f"run ({holder}); wait for it to finish, or choose another output path") from None
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        """Give the output up (the file stays: removing it would race with a run opening it)."""
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class OutputStore:
    """The zarr v3 output ``(N, C_out, *S)`` at ``path``, cut into ``units``: one array, or
    a group of one array per name of ``outputs`` (:mod:`.outputs`), or with ``ome`` an
    OME-Zarr image whose outputs have pyramid levels (:mod:`fastquilt.formats.ome_writer`);
    ``arr`` holds the metadata (the array, the group, or the root image's level 0),
    ``arrays`` the (level-0) arrays by output name.

    ``metadata`` is what the output is made with except the model's channel count
    (``out_channels`` is added when the model has run); ``sources`` identifies the model and
    the input (fingerprints.py). Both are stored with the array and checked on resume.
    """

    def __init__(self, path, units: Units, chunk: tuple[int, ...],
                 shards: tuple[int, ...] | None, *, out_dtype: str, compressors,
                 fill_value: float, metadata: dict,
                 outputs: tuple[str, ...] = ("mean",), ome: OmeWriter | None = None) -> None:
        # absolute: the path crosses process boundaries (dask workers start elsewhere)
        self.path = Path(os.path.abspath(path))
        self.units, self.chunk, self.shards = units, chunk, shards
        self.out_dtype, self.compressors, self.fill_value = out_dtype, compressors, fill_value
        self.base_metadata = metadata
        self.sources: dict = {"model": None, "input": None}
        self.progress = Progress(self.path)
        self.lease = Lease(self.path)
        self.outputs = tuple(outputs)
        self.arr = None
        self.arrays: dict = {}  # level 0 of every output, by name
        self.ome: OmeWriter | None = ome  # an OME-Zarr output: its levels and metadata

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "lease"}  # the client's alone

    def _set(self, root, arrays: dict) -> None:
        self.arrays = {n: a.with_config(WRITE_ALL) for n, a in arrays.items()}
        self.arr = self.arrays["mean"] if not is_group(self.outputs) else root

    def _set_ome(self) -> None:
        # the metadata live on level 0 of the root image
        self.ome.writable(WRITE_ALL)
        self.arrays = {n: self.ome.arrays[n][0] for n in self.outputs}
        self.arr = self.arrays[self.ome.root]

    def result(self):
        """What a run returns: the output array of a lone ``mean`` (level 0 of an
        OME-Zarr image), else the group holding every output (an OME-Zarr output's root
        group)."""
        if self.ome is not None and is_group(self.outputs):
            import zarr

            return zarr.open_group(str(self.path), mode="r")
        return self.arr

    def metadata(self, out_channels: int) -> dict:
        """The stored metadata of an output with ``out_channels`` channels."""
        return json.loads(json.dumps({**self.base_metadata, "out_channels": int(out_channels)}))

    def open_existing(self) -> None:
        """Open an existing output and refuse one made differently (or not by fastquilt)."""

        if not self.path.exists():
            # Markers without their output (the user removed it to redo the run) would skip
            # units that no longer exist on disk: they are stale, start afresh.
            self.progress.clear()
            return
        if self.ome is not None:  # (its own clear errors; the other outputs once checked)
            self.arr = self.ome.open(self.ome.root)
        else:
            try:
                self._set(*open_outputs(self.path, self.outputs, mode="r+"))
            except Exception as e:
                what = "zarr group of outputs" if is_group(self.outputs) else "zarr array"
                raise ValueError(
                    f"output {self.path} exists and is not a {what} (it holds other contents, "
                    "or was made for other outputs); choose a new path or remove it") from e
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
        if self.ome is not None:  # (made for these outputs: the metadata say so)
            for name in self.outputs:
                if name != self.ome.root:
                    self.ome.open(name, output_kind(name))
            self._set_ome()

    def ensure(self, c_out: int) -> None:
        """Create the output for a model with ``c_out`` channels, or check the opened one."""

        if self.arr is None:
            specs = Reduction(self.outputs, c_out).specs(self.out_dtype)
            attributes = {"fastquilt": self.metadata(c_out), "fastquilt_sources": self.sources}
            try:
                if self.ome is not None:  # the root image first, with the metadata
                    for name in sorted(specs, key=lambda n: n != self.ome.root):
                        c, dt = specs[name]
                        self.ome.create(name, output_kind(name), self.units.N, c, dt,
                                        attributes if name == self.ome.root else {})
                    self._set_ome()
                else:
                    self._set(*create_outputs(
                        self.path, specs, self.units.N, self.units.spatial, self.chunk,
                        self.shards, self.compressors, self.fill_value, attributes))
            except OSError as e:
                raise ValueError(f"cannot create the output {self.path}: {e.strerror or e}; "
                                 "choose a writable path") from None
        elif (made := dict(self.arr.attrs)["fastquilt"]["out_channels"]) != c_out:
            raise ValueError(
                f"model output has {c_out} channels but {self.path} was made for "
                f"{made}; cannot resume into it")

    def open_finished(self):
        """The output (:meth:`result`), opened for reading (a run that had nothing left to
        do)."""

        if self.arr is None:
            if self.ome is not None:
                self.arr = level0_array(self.path)
            else:
                self._set(*open_outputs(self.path, self.outputs, mode="r"))
        return self.result()

    def write_unit(self, uid: int, outputs: dict[str, torch.Tensor]) -> None:
        """Write a finished unit's outputs ``{name: (c, *unit)}`` once each, then mark the
        unit done (idempotent): a marker means every output of the unit is written."""
        n, box = self.units.box(uid)
        try:
            for name, arr in self.arrays.items():
                arr[(n, slice(None), *box)] = outputs[name].numpy().astype(arr.dtype,
                                                                           copy=False)
                if self.ome is not None:  # the unit's blocks of every level, before the mark
                    self.ome.write_levels(name, n, box, outputs[name], arr.dtype)
            self.progress.mark(uid)
        except Exception as e:
            raise RuntimeError(
                f"writing unit {uid} (image {n}, {box}) to {self.path} failed: {e}; it is "
                "not marked done, re-run the same call to resume") from e

    def block_keys(self, uid: int) -> list[str]:
        """The storage keys (chunks, or shards) that hold unit ``uid`` in every output."""
        n, box = self.units.box(uid)
        block = self.shards or self.chunk
        ranges = [range(b.start // k, math.ceil(b.stop / k)) for b, k in zip(box, block)]
        keys = []
        for name, arr in self.arrays.items():
            encode = arr.metadata.encode_chunk_key
            prefix = f"{arr.path}/" if arr.path else ""
            keys += [prefix + encode((n, 0, *idx)) for idx in itertools.product(*ranges)]
            if self.ome is not None:
                keys += self.ome.level_keys(name, n, box)
        return keys

    def stored(self, uids) -> set[int]:
        """The units among ``uids`` whose every chunk (or shard) is in storage: one look-up per
        key, all of them in one pass of zarr's event loop."""
        import asyncio

        from zarr.core.sync import sync

        uids = list(uids)
        keys = [self.block_keys(uid) for uid in uids]
        store = self.arr.store

        async def exists(flat):
            return await asyncio.gather(*(store.exists(k) for k in flat))

        found = iter(sync(exists([k for ks in keys for k in ks])))
        return {uid for uid, ks in zip(uids, keys) if all([next(found) for _ in ks])}

    def verified_done(self) -> set[int]:
        """The units marked done whose chunks storage holds; markers of units whose chunks are
        gone (deleted, or never written where this machine sees them) are removed, so those
        units run again."""
        done = self.progress.done()
        if not done or self.arr is None:
            return done
        ok = self.stored(done)
        for uid in done - ok:
            self.progress.unmark(uid)
        return ok

    def check_written(self, uids) -> None:
        """Raise unless every unit of ``uids`` is marked done and in storage (after a run)."""
        uids = set(uids)
        missing = uids - self.progress.done()
        missing |= uids - missing - self.stored(uids - missing)
        if missing:
            raise RuntimeError(
                f"{len(missing)} of {len(uids)} units of {self.path} are not in storage after the "
                f"run (e.g. unit {min(missing)}): the workers wrote somewhere this machine does "
                "not see (a disk local to each worker?). Use storage every node sees; re-run the "
                "same call to compute the missing units")


def metadata_root(out_path: Path):
    """What holds an existing output's metadata, opened for reading: the array, the group of
    outputs, or an OME-Zarr image's level 0."""
    import zarr

    return level0_array(out_path) if is_ome_zarr(out_path) else zarr.open(str(out_path),
                                                                          mode="r")


def progress_of(out: str | os.PathLike) -> dict:
    """Units done / total of an output made by :func:`sliding_window_zarr` (for monitoring)."""
    out_path = Path(out)
    meta = dict(metadata_root(out_path).attrs)["fastquilt"]
    shape = meta["input_shape"]
    units = Units(shape[0], tuple(shape[2:]), tuple(meta["unit"]))
    return {"done": len(Progress(out_path).done()), "total": units.total(),
            "metadata": dict(meta)}
