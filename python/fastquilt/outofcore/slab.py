"""The local loop's RAM slab: weighted sums over about one plane of output units, which hands
each unit over, normalised, as soon as no later window can touch it."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from ..reductions import Reduction
from .job import Layout


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


class Slab:
    """Weighted sums over the full-image planes ``[lo, lo + H)`` (axis 0) of one image.
    Windows come in raster order, so once windows start at ``s`` every unit ending at or
    before ``s`` is complete: it is cut out, normalised and handed over, and the slab slides
    on. ``H = unit + window`` planes suffice, so memory is about one plane of units."""

    def __init__(self, layout: Layout, reduction: Reduction, done: set[int],
                 device: torch.device | str = "cpu") -> None:
        self.layout, self.done, self.reduction = layout, done, reduction
        c_out = reduction.state_channels
        self.U, self.w = layout.unit[0], layout.window[0]
        self.H = min(layout.spatial[0], self.U + self.w)
        # on the model's device: predictions are summed (and units normalised) where they are
        self.acc = torch.zeros((1, c_out, self.H, *layout.spatial[1:]), device=device)
        # weight sums come from the same scatter (geometry only; never stored on disk)
        self.wsum = torch.zeros((1, self.H, *layout.spatial[1:]), device=device)
        self.n, self.lo, self.start, self.flushed = None, 0, -1, 0
        self.next_unit_plane = 0  # index (along axis 0) of the first unit plane not yet cut

    def add(self, ks: list[int], pred: torch.Tensor) -> list[tuple[int, dict]]:
        """Add the windows ``ks`` (raster order) and their per-window state; returns the
        units they complete, ``(uid, {output: (c, *unit)})``."""
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
        return out

    def _cut(self, plane: int) -> list[tuple[int, dict]]:
        """The finished units of unit plane ``plane`` (along axis 0) of the current image."""
        units = self.layout.units
        lo = [self.lo] + [0] * (len(units.spatial) - 1)
        out = []
        for rest in itertools.product(*[range(c) for c in units.counts[1:]]):
            uid = units.id(self.n, (plane, *rest))
            if uid in self.done:
                continue
            src, _ = units.clip(uid, lo, self.wsum.shape[1:])  # the unit lies in the slab
            # finished here, so the writer queue holds only the (small) outputs
            outputs = self.reduction.finish(self.acc[(slice(0, 1), slice(None), *src)],
                                            self.wsum[(slice(0, 1), *src)])
            out.append((uid, {name: t[0] for name, t in outputs.items()}))
        self.flushed += len(out)
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
