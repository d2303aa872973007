"""The output of an out-of-core run cut into units — blocks of whole chunks (or shards), each
written once by one owner — and the one clipping of a box (a window, or a region of windows)
to a unit."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np


class Units:
    """Units of ``unit`` voxels over ``N`` images of ``spatial`` size: ids (image-major, last
    axis fastest), boxes, the units a box touches, and a box's part inside a unit."""

    def __init__(self, N: int, spatial: tuple[int, ...], unit: tuple[int, ...]) -> None:
        self.N, self.spatial, self.unit = N, tuple(spatial), tuple(unit)
        self.counts = tuple(math.ceil(S / u) for S, u in zip(self.spatial, self.unit))
        self.per_image = int(np.prod(self.counts))

    def total(self) -> int:
        return self.N * self.per_image

    def id(self, n: int, idx: Sequence[int]) -> int:
        """The id of unit ``idx`` (per-axis unit indices) of image ``n``."""
        return n * self.per_image + int(np.ravel_multi_index(tuple(idx), self.counts))

    def box(self, uid: int) -> tuple[int, tuple[slice, ...]]:
        """``(image, spatial slices)`` of unit ``uid``."""
        n, rest = divmod(uid, self.per_image)
        idx = np.unravel_index(rest, self.counts)
        return n, tuple(slice(i * u, min((i + 1) * u, S))
                        for i, u, S in zip(idx, self.unit, self.spatial))

    def shape(self, uid: int) -> tuple[int, ...]:
        """Spatial shape of unit ``uid`` (units at the far edges may be smaller)."""
        return tuple(b.stop - b.start for b in self.box(uid)[1])

    def start_unit(self, origin: Sequence[int]) -> int:
        """The unit holding the first voxel of the window at ``origin`` ``[n, start...]``."""
        return self.id(origin[0], [s // u for s, u in zip(origin[1:], self.unit)])

    def touched(self, origin: Sequence[int], window: Sequence[int]) -> list[int]:
        """Units that the box at ``origin`` ``[n, start...]`` of size ``window`` overlaps."""
        n, starts = origin[0], origin[1:]
        ranges = [range(s // u, (s + w - 1) // u + 1) for s, w, u in zip(starts, window, self.unit)]
        return [self.id(n, idx) for idx in itertools.product(*ranges)]

    def clip(self, uid: int, lo: Sequence[int], shape: Sequence[int]):
        """The part of the box ``[lo, lo + shape)`` (spatial, in unit ``uid``'s image) inside
        unit ``uid``: ``(slices into the box, slices into the unit)``, or None where they do
        not meet."""
        src, dst = [], []
        for b, a0, size in zip(self.box(uid)[1], lo, shape):
            a, e = max(b.start, a0), min(b.stop, a0 + size)
            if a >= e:
                return None
            src.append(slice(a - a0, e - a0))
            dst.append(slice(a - b.start, e - b.start))
        return tuple(src), tuple(dst)
