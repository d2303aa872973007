"""The local loop's weighted sums under a byte cap, for runs whose plane-wide slab
(:class:`~.slab.Slab`) does not fit the memory bound: each unit in flight has a tensor of its
own, and the units over the cap are spilled to a scratch file and read back when a window
needs them again. The unit whose next window comes last is spilled first (the order of the
windows is known in advance: Belady's choice), so what is spilled is mostly the band of units
that the next row of windows along axis 0 shares with this one.

Windows are added a row at a time (windows that differ only along the last axis): the row's
units are gathered into one region, the row is scatter-added there by the same compiled op as
the slab's, and the units go back to their tensors, or, once the row holds their last window,
are normalised and handed over. Every voxel adds its windows in the same order as in the
slab, so the results are the slab's, bit for bit.

The scratch file is unnamed (created in ``spill_dir``, by default next to the output, and
unlinked at once), so a killed run leaves nothing behind; its pages go through the OS's page
cache, which the kernel reclaims as it needs (they are not the process's memory)."""

from __future__ import annotations

import itertools
import math
import os
import tempfile
from collections.abc import Container, Mapping, Sequence

import numpy as np
import torch

from ..reductions import Reduction
from .job import Layout
from .slab import last_windows, scatter_windows, touch_pairs
from .unit_sums import UnitSums, piece_of


class SpillingSlab:
    """Weighted sums ``(K + 1, *unit)`` (``K`` state channels, then the weight sum) of the
    units in flight: up to ``cap_bytes`` of them in a pool of unit slots allocated once (on
    ``device``), the rest in the scratch file; the same interface as :class:`~.slab.Slab`:
    :meth:`add` the windows of ``todo`` in that order, then :meth:`flush_image`. Its own
    memory is the pool, one row region (reused, or freed after each :meth:`add` without
    ``keep_region``) and one unit of staging for the file."""

    def __init__(self, layout: Layout, reduction: Reduction, done: Container[int],
                 device: torch.device | str = "cpu", todo: Sequence[int] = (), *,
                 cap_bytes: int, spill_dir: str | os.PathLike | None = None,
                 keep_region: bool = True,
                 raw: Mapping[int, tuple[int, int]] | None = None) -> None:
        self.layout, self.reduction, self.done = layout, reduction, done
        self.raw = raw or {}  # as the slab's
        self.device = torch.device(device)
        self.K = reduction.state_channels
        self.todo = list(todo)
        uids, positions = touch_pairs(layout, self.todo)
        # next uses are looked up in one sorted array of uid * T + position
        self._T = len(self.todo) + 1
        self._keys = np.unique(uids * self._T + positions)
        self._last = last_windows(layout, uids, positions)
        self._numel = (self.K + 1) * math.prod(layout.units.unit)  # of a whole unit
        slots = min(max(int(cap_bytes), 0) // (self._numel * 4),
                    int((self._last >= 0).sum()))  # (never more than there are units)
        self._pool = torch.empty((slots, self._numel), device=self.device)
        self.cap = slots * self._numel * 4
        self.held: dict[int, int] = {}  # units in memory: their pool slot
        self._free = list(range(slots - 1, -1, -1))
        self._on_disk: dict[int, int] = {}  # units in the scratch file: their file slot
        self._free_disk: list[int] = []
        self._n_disk = 0
        self._file = None
        self._stage: np.ndarray | None = None
        self._region = torch.empty(0, device=self.device)
        self.keep_region = keep_region  # else freed after each add (while the model runs)
        self.spill_dir = spill_dir
        self.added = 0  # windows added so far (positions in todo)
        self.flushed = 0
        self.spilled_bytes = 0  # written to the scratch file so far
        self.largest_region = 0  # voxels of the largest row region so far

    @property
    def held_bytes(self) -> int:
        return len(self.held) * self._numel * 4

    def add(self, ks: list[int], pred: torch.Tensor) -> list[tuple[int, dict]]:
        """Add the windows ``ks`` (the next ones of ``todo``) and their per-window state
        ``pred`` ``(B, K, *window)``; returns the units they complete,
        ``(uid, {output: (c, *unit)})``."""
        ks = list(ks)
        if ks != self.todo[self.added:self.added + len(ks)]:
            raise RuntimeError(f"SpillingSlab.add: windows {ks[:4]}... are not the next ones "
                               f"of the run's order (from position {self.added})")
        org = self.layout.origins[ks]
        step = self.layout.q.step[-1]
        out, i = [], 0
        while i < len(ks):
            # a row: windows next to each other along the last axis (on a resume, windows
            # that touch only done units are skipped: the region must not span the gap)
            j = i + 1
            while (j < len(ks) and torch.equal(org[j, :-1], org[i, :-1])
                   and 0 < int(org[j, -1] - org[j - 1, -1]) <= step):
                j += 1
            out += self._add_row(ks[i:j], pred[i:j], org[i:j])
            i = j
        if not self.keep_region:
            self._region = torch.empty(0, device=self.device)
        return out

    def _add_row(self, ks: list[int], pred: torch.Tensor,
                 org: torch.Tensor) -> list[tuple[int, dict]]:
        units, window = self.layout.units, self.layout.window
        n = int(org[0, 0])
        lo = org[:, 1:].min(0).values.tolist()
        hi = (org[:, 1:].max(0).values + torch.as_tensor(window)).tolist()
        ulo = [a // u for a, u in zip(lo, units.unit)]
        uhi = [min(-(-b // u), c) for b, u, c in zip(hi, units.unit, units.counts)]
        r_lo = [i * u for i, u in zip(ulo, units.unit)]
        shape = [min(i * u, S) - a for i, u, S, a in zip(uhi, units.unit, units.spatial, r_lo)]
        numel = (self.K + 1) * math.prod(shape)
        if self._region.numel() < numel:  # (one buffer, grown to the largest region)
            self._region = torch.empty(numel, device=self.device)
        # (not zeroed: every unit the row touches is loaded or zeroed below, and the windows
        # touch nothing else)
        region = self._region[:numel].view(1, self.K + 1, *shape)
        self.largest_region = max(self.largest_region, math.prod(shape))
        first, end = self.added, self.added + len(ks)
        boxes = []
        for idx in itertools.product(*[range(a, b) for a, b in zip(ulo, uhi)]):
            uid = units.id(n, idx)
            if self._last[uid] < first:  # finished before, or no window of the run touches it
                continue
            box = tuple(slice(i * u - r, min((i + 1) * u, S) - r)
                        for i, u, S, r in zip(idx, units.unit, units.spatial, r_lo))
            boxes.append((uid, box))
            self._load(uid, region[(0, slice(None), *box)])
        scatter_windows(self.layout, region[:, :self.K], region[:, self.K], r_lo, ks, pred,
                        self.reduction)
        self.added = end
        out, keep = [], []
        for uid, box in boxes:
            if uid in self.done:  # (summed, as its windows touch others, and dropped)
                continue
            if self._last[uid] < end:
                state = region[(slice(None), slice(None), *box)]
                self.flushed += 1
                if uid in self.raw:  # (a copy: the next row overwrites the region)
                    out.append((uid, piece_of(units, uid, state[:, :self.K], state[:, self.K],
                                              self.raw[uid])))
                    continue
                outputs = self.reduction.finish(state[:, :self.K], state[:, self.K])
                # (outputs may be views of the region, which the next row overwrites)
                out.append((uid, {name: t[0].clone() for name, t in outputs.items()}))
            else:
                keep.append((uid, region[(0, slice(None), *box)]))
        self._store(keep)
        return out

    def _next_use(self, uids: np.ndarray) -> np.ndarray:
        """The position in todo of each unit's next window (every one has a window to come)."""
        at = np.searchsorted(self._keys, uids * self._T + self.added)
        return self._keys[at] - uids * self._T

    def _store(self, keep: list[tuple[int, torch.Tensor]]) -> None:
        """Put the row's unfinished units ``keep`` (uid, region view) away: the pool keeps
        the units, of these and those it holds, whose next windows come first; the others
        go to the scratch file."""
        if len(keep) > len(self._free):
            held = np.fromiter(self.held, np.int64, len(self.held))
            new = np.asarray([uid for uid, _ in keep], np.int64)
            both = np.concatenate([held, new])
            order = np.argsort(self._next_use(both), kind="stable")
            stay = set(both[order[:len(self._pool)]].tolist())
            for uid in held.tolist():
                if uid not in stay:  # its slot is freed for a unit needed sooner
                    slot = self.held.pop(uid)
                    self._write(uid, self._pool[slot, :self._numel_of(uid)])
                    self._free.append(slot)
            keep_now = []
            for uid, view in keep:
                if uid in stay:
                    keep_now.append((uid, view))
                else:
                    self._write(uid, view)
            keep = keep_now
        for uid, view in keep:
            slot = self._free.pop()
            self._pool[slot, :view.numel()].view(view.shape).copy_(view)
            self.held[uid] = slot

    def _numel_of(self, uid: int) -> int:
        return (self.K + 1) * math.prod(self.layout.units.shape(uid))

    def _load(self, uid: int, dst: torch.Tensor) -> None:
        """Copy unit ``uid``'s sums into ``dst`` and free its place (pool slot or file
        slot); a unit not seen yet is zeros."""
        if uid in self.held:
            slot = self.held.pop(uid)
            dst.copy_(self._pool[slot, :dst.numel()].view(dst.shape))
            self._free.append(slot)
        elif uid in self._on_disk:
            slot = self._on_disk.pop(uid)
            stage = self._staging()[:dst.numel()]
            _read_exactly(self._file.fileno(), memoryview(stage).cast("B"),
                          slot * self._numel * 4)
            self._free_disk.append(slot)
            dst.copy_(torch.from_numpy(stage).view(dst.shape))
        else:
            dst.zero_()

    def _write(self, uid: int, src: torch.Tensor) -> None:
        """Write unit ``uid``'s sums ``src`` to a slot of the scratch file."""
        try:
            self._write_slot(uid, src)
        except OSError as e:  # (a full disk, most likely)
            where = self.spill_dir if self.spill_dir is not None else tempfile.gettempdir()
            raise RuntimeError(
                f"spilling partial sums to a scratch file in {where} failed: {e}; free space "
                "there (it holds about the sums of a plane of units) or give more max_memory, "
                "then re-run the same call to resume") from e

    def _write_slot(self, uid: int, src: torch.Tensor) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix=".fastquilt-spill-", dir=self.spill_dir)
        if self._free_disk:
            slot = self._free_disk.pop()
        else:
            slot, self._n_disk = self._n_disk, self._n_disk + 1
        if src.device.type == "cpu" and src.is_contiguous():
            data = src.numpy().reshape(-1)
        else:
            data = self._staging()[:src.numel()]
            torch.from_numpy(data).view(src.shape).copy_(src)
        _write_exactly(self._file.fileno(), memoryview(data).cast("B"), slot * self._numel * 4)
        self.spilled_bytes += data.nbytes
        self._on_disk[uid] = slot

    def _staging(self) -> np.ndarray:
        if self._stage is None:
            self._stage = np.empty(self._numel, np.float32)
        return self._stage

    def flush_image(self) -> list[tuple[int, dict]]:
        """After the last window: the units that no window of the run touches (outside
        every window, ``allow_gaps``) and that are not done, at the fill value."""
        if self.held or self._on_disk:
            raise RuntimeError(f"SpillingSlab: {len(self.held) + len(self._on_disk)} units "
                               "still wait for windows after the last one")
        out = []
        nothing = UnitSums(self.layout.units, self.K, self.reduction)  # (gives the fill value)
        for uid in np.flatnonzero(self._last < 0).tolist():
            if uid in self.done:
                continue
            self._last[uid] = self.added  # handed over once
            self.flushed += 1
            out.append((uid, nothing.pop_outputs(uid)))
        self.close()
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _write_exactly(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _read_exactly(fd: int, buf: memoryview, offset: int) -> None:
    while len(buf):
        n = os.preadv(fd, [buf], offset)
        if n == 0:
            raise RuntimeError("SpillingSlab: the scratch file ended early")
        buf, offset = buf[n:], offset + n
