"""The local loop's RAM slab: weighted sums over about one plane of output units, which hands
each unit over, normalised, as soon as no later window can touch it."""

from __future__ import annotations

import itertools
from collections.abc import Container, Mapping, Sequence

import numpy as np
import torch

from ..reductions import Reduction
from .job import Layout
from .unit_sums import Piece, piece_of


def scatter_windows(layout: Layout, acc: torch.Tensor, wsum: torch.Tensor,
                    region_lo: Sequence[int], ks: Sequence[int], pred: torch.Tensor,
                    reduction: Reduction) -> None:
    """Add windows ``ks`` (their per-window state ``pred`` ``(B, K, *window)``, weighted) and
    their weights into ``acc`` ``(1, K, *region)`` / ``wsum`` ``(1, *region)``, a region
    starting at ``region_lo`` that holds every one of the windows, by ``reduction`` (the
    compiled scatter-add of weighted sums, or the merge of moments): whole windows, no
    clipping."""
    rel = layout.origins[list(ks)].clone()
    rel[:, 0] = 0
    rel[:, 1:] -= torch.as_tensor(list(region_lo), dtype=torch.int64)
    reduction.add(acc, wsum, rel.to(acc.device), pred, layout.weight_on(acc.device))


def touch_pairs(layout: Layout, todo: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(uids, positions)``: one pair for each window of ``todo`` (by its position there) and
    each unit it touches, in no particular order."""
    units = layout.units
    if len(todo) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    org = layout.origins[list(todo)].numpy()
    n, starts = org[:, 0], org[:, 1:]
    unit, window = np.asarray(units.unit), np.asarray(layout.window)
    lo, hi = starts // unit, (starts + window - 1) // unit
    pos = np.arange(len(todo))
    uids, positions = [], []
    for off in itertools.product(*[range(k) for k in (hi - lo).max(axis=0) + 1]):
        idx = lo + np.asarray(off)
        ok = (idx <= hi).all(axis=1)
        uids.append(n[ok] * units.per_image + np.ravel_multi_index(tuple(idx[ok].T), units.counts))
        positions.append(pos[ok])
    return np.concatenate(uids).astype(np.int64), np.concatenate(positions).astype(np.int64)


def last_windows(layout: Layout, uids: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Per unit of the layout, the largest of ``positions`` paired with it in ``uids`` (the
    position of the last window touching it), -1 for a unit no pair names."""
    last = np.full(layout.units.total(), -1, np.int64)
    np.maximum.at(last, uids, positions)
    return last


def completion_order(layout: Layout, todo: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, uids)``: every unit the windows ``todo`` touch, with the position in
    ``todo`` of the last window that touches it, in the order of those positions (a unit is
    complete once that window is added)."""
    last = last_windows(layout, *touch_pairs(layout, todo))
    uids = np.flatnonzero(last >= 0)
    order = np.argsort(last[uids], kind="stable")
    return last[uids][order], uids[order]


class Slab:
    """Weighted sums over the full-image planes ``[lo, lo + H)`` (axis 0) of one image.
    Windows come in raster order, so once windows start at ``s`` every unit ending at or
    before ``s`` is complete: it is cut out, normalised and handed over, and the slab slides
    on. ``H = unit + window`` planes suffice, so memory is about one plane of units. Given
    the order of the windows (``todo``), a unit is also cut as soon as the last window
    touching it is added: units then leave one by one as the windows pass them, not a plane
    at a time, and the last plane does not wait for the end of the image."""

    def __init__(self, layout: Layout, reduction: Reduction, done: Container[int],
                 device: torch.device | str = "cpu", todo: Sequence[int] | None = None,
                 raw: Mapping[int, tuple[int, int]] | None = None) -> None:
        # done: units never handed over; raw: units handed over unfinished, as the piece of
        # their sums between two planes (a cluster band's units that other bands add to)
        self.layout, self.done, self.reduction = layout, done, reduction
        self.raw = raw or {}
        c_out = reduction.state_channels
        self.U, self.w = layout.unit[0], layout.window[0]
        self.H = min(layout.spatial[0], self.U + self.w)
        # on the model's device: predictions are summed (and units normalised) where they are
        self.acc = torch.zeros((1, c_out, self.H, *layout.spatial[1:]), device=device)
        # weight sums come from the same scatter (geometry only; never stored on disk)
        self.wsum = torch.zeros((1, self.H, *layout.spatial[1:]), device=device)
        self.n, self.lo, self.start, self.flushed = None, 0, -1, 0
        self.next_unit_plane = 0  # index (along axis 0) of the first unit plane not yet cut
        self.finishing = completion_order(layout, todo) if todo is not None else ((), ())
        self.todo = list(todo) if todo is not None else None
        self.next_finishing, self.added = 0, 0  # into self.finishing; windows added so far
        self.cut_early: set[int] = set()  # units cut before their plane

    def add(self, ks: list[int], pred: torch.Tensor) -> list[tuple[int, dict]]:
        """Add the windows ``ks`` (raster order) and their per-window state; returns the
        units they complete, ``(uid, {output: (c, *unit)})``."""
        if self.todo is not None and list(ks) != self.todo[self.added:self.added + len(ks)]:
            # units are cut by their place in todo: windows in another order would cut a unit
            # before all its windows are in
            raise RuntimeError(f"Slab.add: windows {list(ks)[:4]}... are not the next ones of "
                               f"the run's order (from position {self.added})")
        out = []
        org = self.layout.origins[ks]
        i = 0
        while i < len(ks):
            n, s0 = int(org[i, 0]), int(org[i, 1])
            if n != self.n:
                out += self.flush_image()
                self.n, self.lo, self.start, self.next_unit_plane = n, 0, -1, 0
            if s0 > self.start:
                out += self._flush_below(s0)
                self.start = s0
            j = i + 1  # a run of windows of this image and plane start
            while j < len(ks) and int(org[j, 0]) == n and int(org[j, 1]) == s0:
                j += 1
            scatter_windows(self.layout, self.acc, self.wsum,
                            [self.lo] + [0] * (org.shape[1] - 2), ks[i:j], pred[i:j],
                            self.reduction)
            i = j
        self.added += len(ks)
        return out + self._cut_finished()

    def _cut_finished(self) -> list[tuple[int, dict]]:
        """The units of the current image whose last window has been added, where they lie
        wholly in the slab (the others are cut with their plane)."""
        positions, uids = self.finishing
        out = []
        units = self.layout.units
        while self.next_finishing < len(uids) and positions[self.next_finishing] < self.added:
            uid = int(uids[self.next_finishing])
            self.next_finishing += 1
            n, box = units.box(uid)
            # (lo is the start of the first unit plane not cut yet)
            if (n != self.n or uid in self.done or uid in self.cut_early
                    or box[0].start < self.lo or box[0].stop > self.lo + self.H):
                continue
            out.append(self._cut_unit(uid))
            self.cut_early.add(uid)
        return out

    def _cut_unit(self, uid: int) -> tuple[int, dict | Piece]:
        """Unit ``uid``, normalised: ``(uid, {output: (c, *unit)})``, or for a unit of
        ``raw`` its unfinished :class:`~.unit_sums.Piece`."""
        self.flushed += 1
        if uid in self.raw:
            return uid, piece_of(self.layout.units, uid, *self._unit_state(uid), self.raw[uid])
        # finished here, so the writer queue holds only the (small) outputs
        outputs = self.reduction.finish(*self._unit_state(uid))
        return uid, {name: t[0] for name, t in outputs.items()}

    def _unit_state(self, uid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The sums ``(1, K, *unit)`` and weight sums ``(1, *unit)`` of unit ``uid``: views of
        the slab, or, for a unit the slab holds only in part (windows with gaps wider than the
        slab between them along axis 0, ``allow_gaps``), the part it holds and zeros for the
        rest, which no window touched."""
        units = self.layout.units
        shape = units.shape(uid)
        lo = [self.lo] + [0] * (len(units.spatial) - 1)
        clipped = units.clip(uid, lo, self.wsum.shape[1:])
        if clipped is not None and all(s.stop - s.start == n for s, n in zip(clipped[1], shape)):
            src = clipped[0]
            return self.acc[(slice(0, 1), slice(None), *src)], self.wsum[(slice(0, 1), *src)]
        acc = self.acc.new_zeros((1, self.acc.shape[1], *shape))
        wsum = self.wsum.new_zeros((1, *shape))
        if clipped is not None:
            src, dst = clipped
            acc[(slice(None), slice(None), *dst)] = self.acc[(slice(0, 1), slice(None), *src)]
            wsum[(slice(None), *dst)] = self.wsum[(slice(0, 1), *src)]
        return acc, wsum

    def _cut(self, plane: int) -> list[tuple[int, dict]]:
        """The finished units of unit plane ``plane`` (along axis 0) of the current image."""
        units = self.layout.units
        out = []
        for rest in itertools.product(*[range(c) for c in units.counts[1:]]):
            uid = units.id(self.n, (plane, *rest))
            if uid in self.cut_early:
                self.cut_early.discard(uid)
            elif uid not in self.done:
                out.append(self._cut_unit(uid))
        return out

    def _flush_below(self, limit: int) -> list[tuple[int, dict]]:
        out = []
        while (self.next_unit_plane + 1) * self.U <= limit:
            out += self._cut(self.next_unit_plane)
            self.next_unit_plane += 1
        new_lo = self.next_unit_plane * self.U
        if new_lo > self.lo:  # slide: keep the planes still open, zero the rest
            shift = new_lo - self.lo
            keep = self.H - shift
            # in blocks of `shift` planes, front to back: source and destination of a block
            # never overlap, so no temporary copy of the open planes is needed (it was as
            # large as the slab's kept part)
            for i in range(0, max(keep, 0), shift):
                n = min(shift, keep - i)
                self.acc[:, :, i:i + n] = self.acc[:, :, i + shift:i + shift + n]
                self.wsum[:, i:i + n] = self.wsum[:, i + shift:i + shift + n]
            self.acc[:, :, max(keep, 0):] = 0
            self.wsum[:, max(keep, 0):] = 0
            self.lo = new_lo
        return out

    def flush_image(self) -> list[tuple[int, dict]]:
        """Cut every unit of the current image not cut yet (the image is done)."""
        if self.n is None:
            return []
        out = []
        while self.next_unit_plane < self.layout.units.counts[0]:
            out += self._cut(self.next_unit_plane)
            self.next_unit_plane += 1
        self.acc.zero_()
        self.wsum.zero_()
        return out
