"""The out-of-core run's RAM slab: weighted sums over about one plane of output units, which
hands each unit over, normalised, as soon as no later window can touch it."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .outofcore import _Job


class Slab:
    """Weighted sums over the full-image planes ``[lo, lo + H)`` (axis 0) of one image, filled
    by the C++ scatter-add with whole windows (no clipping, all cores). Windows come in raster
    order, so once windows start at ``s`` every unit ending at or before ``s`` is complete: it
    is cut out, handed to the writer, and the slab slides on. ``H = unit + window`` planes
    suffice, so memory is about one plane of units."""

    def __init__(self, job: _Job, c_out: int, done: set[int]) -> None:
        self.job, self.done = job, done
        self.U, self.w = job.unit[0], job.q.window[0]
        self.H = min(job.spatial[0], self.U + self.w)
        self.acc = np.zeros((1, c_out, self.H, *job.spatial[1:]), np.float32)
        # weight sums come from the same scatter (geometry only; never stored on disk)
        self.wsum = np.zeros((1, self.H, *job.spatial[1:]), np.float32)
        self.n, self.lo, self.start, self.flushed = None, 0, -1, 0
        self.next_unit_plane = 0  # index (along axis 0) of the first unit plane not yet written

    def add(self, ks: list[int], pred: torch.Tensor) -> list:
        out = []
        org = self.job.origins[ks]
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
            self.job.scatter(self.acc, self.wsum, [self.lo] + [0] * (org.shape[1] - 2),
                             ks[i:j], pred[i:j])
            i = j
        return out

    def _cut(self, plane: int) -> list:
        """Copies of the units of plane ``plane`` (along axis 0) of the current image."""
        units = self.job.units
        out = []
        for rest in itertools.product(*[range(c) for c in units.counts[1:]]):
            uid = units.id(self.n, (plane, *rest))
            if uid in self.done:
                continue
            _, box = units.box(uid)
            z = slice(box[0].start - self.lo, box[0].stop - self.lo)
            # normalise here, so the writer queue holds only finished data
            out.append((uid, self.job.normalise(self.acc[(0, slice(None), z, *box[1:])].copy(),
                                                self.wsum[(0, z, *box[1:])])))
        self.flushed += len(out)
        return out

    def _flush_below(self, limit: int) -> list:
        out = []
        while (self.next_unit_plane + 1) * self.U <= limit:
            out += self._cut(self.next_unit_plane)
            self.next_unit_plane += 1
        new_lo = self.next_unit_plane * self.U
        if new_lo > self.lo:  # slide: keep the planes still open, zero the rest
            shift = new_lo - self.lo
            keep = self.H - shift
            if keep > 0:
                self.acc[:, :, :keep] = self.acc[:, :, shift:]
                self.wsum[:, :keep] = self.wsum[:, shift:]
            self.acc[:, :, max(keep, 0):] = 0
            self.wsum[:, max(keep, 0):] = 0
            self.lo = new_lo
        return out

    def flush_image(self) -> list:
        if self.n is None:
            return []
        out = []
        while self.next_unit_plane < self.job.units.counts[0]:
            out += self._cut(self.next_unit_plane)
            self.next_unit_plane += 1
        self.acc[...] = 0
        self.wsum[...] = 0
        return out
