"""The cluster's input, each block read once. A producer's windows cover a region larger than
their unit (the windows starting near its far faces reach into the next units), so producers
that read their own regions would read most input chunks several times (2.6 times for the
default 128^3 units, window 64, step 48). Instead, one task reads each unit's box of the input
and cuts it into the parts that the regions meeting it need; a producer puts its region
together from those parts: its own unit's part, and thin halo parts from the units after it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..arrays import read_box
from .job import Job, Layout

Region = tuple[int, list[int], list[int]]  # (image, lo, hi), spatial, hi exclusive


def window_region(layout: Layout, windows: Sequence[int]) -> Region:
    """The box that the windows ``windows`` (all in one image) cover together."""
    starts = layout.origins[list(windows), 1:]
    lo = starts.min(0).values.tolist()
    hi = (starts.max(0).values + torch.tensor(layout.window)).tolist()
    return int(layout.origins[windows[0], 0]), lo, hi


def blocks_meeting(layout: Layout, region: Region) -> list[int]:
    """The units whose boxes the region meets (the input blocks it is put together from)."""
    n, lo, hi = region
    return layout.units.touched([n, *lo], [h - a for a, h in zip(lo, hi)])


def read_parts(job: Job, uid: int, regions: dict[int, Region]) -> dict[int, tuple]:
    """Read unit ``uid``'s box of the input once and return, for each key of ``regions``, the
    part of the box inside that region: ``{key: (slices into the region, part (C, *part))}``
    (every region in ``regions`` must meet the box)."""
    units = job.layout.units
    n, box = units.box(uid)
    block = read_box(job.x, (n, slice(None), *box))
    parts = {}
    for key, (rn, lo, hi) in regions.items():
        cut = units.clip(uid, lo, [h - a for a, h in zip(lo, hi)]) if rn == n else None
        if cut is None:
            raise ValueError(f"region {key} does not meet unit {uid}")
        src, dst = cut
        # a compact copy: a view would carry (and pickle) the whole block
        parts[key] = (src, block[(slice(None), *dst)].clone())
    return parts


def assemble(region: Region, parts: Sequence[tuple]) -> torch.Tensor:
    """The region ``(C, *box)`` put together from its parts (one per block it meets)."""
    _, lo, hi = region
    shape = [h - a for a, h in zip(lo, hi)]
    first = parts[0][1]
    out = first.new_empty((first.shape[0], *shape))
    filled = 0
    for src, part in parts:
        out[(slice(None), *src)] = part
        filled += part[0].numel()
    if filled != out[0].numel():  # the blocks' boxes tile the image: never expected
        raise RuntimeError(f"the parts of region {region} cover {filled} of "
                           f"{out[0].numel()} voxels")
    return out
