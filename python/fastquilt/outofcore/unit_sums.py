"""Weighted sums of whole output units filled piece by piece, in any order: the owners of a
cluster run add the bands' pieces here, and qlty's Large classes their windows."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..normalize import divide_by_weight_sum_
from ..reductions import Reduction
from .units import Units


class Piece(NamedTuple):
    """The unfinished weighted sums of part of a unit, for another task to merge: ``dst``
    (slices into the unit), ``acc`` ``(K, *piece)`` and ``wsum`` ``(*piece)`` on the CPU."""

    dst: tuple[slice, ...]
    acc: torch.Tensor
    wsum: torch.Tensor


def piece_slices(units: Units, uid: int, span: tuple[int, int]) -> tuple[slice, ...]:
    """The slices into unit ``uid`` of its planes ``span`` ``[a, b)`` along axis 0 (of the
    unit's image; the span meets the unit), every voxel on the other axes."""
    lo = (span[0], *[0] * (len(units.spatial) - 1))
    return units.clip(uid, lo, (span[1] - span[0], *units.spatial[1:]))[1]


def piece_of(units: Units, uid: int, acc: torch.Tensor, wsum: torch.Tensor,
             span: tuple[int, int]) -> Piece:
    """The part of unit ``uid``'s sums ``acc`` ``(1, K, *unit)`` / ``wsum`` ``(1, *unit)``
    between planes ``span`` (:func:`piece_slices`: where the windows that summed them lie),
    copied to the CPU."""
    dst = piece_slices(units, uid, span)
    return Piece(dst, acc[(0, slice(None), *dst)].to("cpu", copy=True),
                 wsum[(0, *dst)].to("cpu", copy=True))


class UnitSums:
    """Weighted-sum ``(C, *unit)`` and weight-sum ``(*unit)`` buffers (float32) of the units
    that have received something, by unit id."""

    def __init__(self, units: Units, channels: int, reduction: Reduction | None = None) -> None:
        # with a reduction, pieces are merged by it (sums, or moments) and finished into its
        # outputs; channels is then its state's channel count
        self.units, self.channels, self.reduction = units, channels, reduction
        self.buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def add(self, uid: int, dst: tuple[slice, ...], acc: torch.Tensor,
            wsum: torch.Tensor) -> None:
        """Add a piece ``acc`` ``(C, *piece)`` / ``wsum`` ``(*piece)`` at ``dst`` (slices
        into unit ``uid``, see :meth:`Units.clip`)."""
        if uid not in self.buffers:
            shape = self.units.shape(uid)
            plain_sum = self.reduction is None or not self.reduction.moments
            if plain_sum and tuple(wsum.shape) == shape:  # a whole unit: a copy, no zeros
                self.buffers[uid] = (acc.clone(), wsum.clone())
                return
            self.buffers[uid] = (torch.zeros((self.channels, *shape)), torch.zeros(shape))
        a, w = self.buffers[uid]
        if self.reduction is not None:
            self.reduction.merge_piece(a, w, dst, acc, wsum)
            return
        a[(slice(None), *dst)] += acc
        w[dst] += wsum  # weight sums come from the geometry, never from storage

    def pop_outputs(self, uid: int) -> dict[str, torch.Tensor]:
        """The reduction's outputs ``{name: (c, *unit)}`` of unit ``uid``; its buffers are
        released (a unit that received nothing holds the fill value)."""
        if uid not in self.buffers:
            shape = self.units.shape(uid)
            self.buffers[uid] = (torch.zeros((self.channels, *shape)), torch.zeros(shape))
        acc, wsum = self.buffers.pop(uid)
        return {n: t[0] for n, t in self.reduction.finish(acc[None], wsum[None]).items()}

    def pop_mean(self, uid: int, fill_value: float = 0.0) -> torch.Tensor:
        """The weighted mean ``(C, *unit)`` of unit ``uid`` (:mod:`fastquilt.normalize`);
        its buffers are released. A unit that received nothing is all ``fill_value``."""
        if uid not in self.buffers:
            shape = self.units.shape(uid)
            return torch.full((self.channels, *shape), float(fill_value))
        acc, wsum = self.buffers.pop(uid)
        return divide_by_weight_sum_(acc[None], wsum[None], fill_value)[0]
