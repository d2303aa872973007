"""The cluster's input read once per block: every producer's region, put together from the
parts its blocks' readers cut, equals the region read directly; each block is read once."""

import numpy as np
import pytest
import torch

from fastquilt.outofcore import input_parts
from fastquilt.outofcore.job import Job, Layout
from fastquilt.outofcore.reading import read_region

from ..random_geometry import random_grid, random_units


class CountingArray:
    """An in-memory input that counts the voxels read from it."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.shape, self.dtype, self.read = x, x.shape, x.dtype, 0

    def __getitem__(self, key):
        block = self.x[key]
        self.read += block[0].size
        return block


@pytest.mark.parametrize("seed", range(12))
def test_regions_from_parts_equal_the_regions_read(seed):
    rng = np.random.default_rng(seed)
    S, W, step, _ = random_grid(rng, 40, 16)
    N, C = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    chunk, unit = random_units(rng, S)
    x = rng.standard_normal((N, C, *S)).astype(np.float32)
    layout = Layout(x.shape, W, step, "gaussian", None, 0.1, chunks=chunk, unit=unit,
                    shards=None)
    arr = CountingArray(x)
    job = Job(arr, layout, store=None)
    groups: dict[int, list[int]] = {}
    for k in range(layout.origins.shape[0]):
        groups.setdefault(layout.units.start_unit(layout.origins[k].tolist()), []).append(k)
    regions = {p: input_parts.window_region(layout, ks) for p, ks in groups.items()}
    meeting: dict[int, dict] = {}
    for p, r in regions.items():
        for b in input_parts.blocks_meeting(layout, r):
            meeting.setdefault(b, {})[p] = r
    read = {b: input_parts.read_parts(job, b, rs) for b, rs in meeting.items()}
    assert arr.read <= N * int(np.prod(S))  # no voxel read twice
    for p, r in regions.items():
        parts = [read[b][p] for b in input_parts.blocks_meeting(layout, r)]
        n, lo, hi = r
        want = read_region(x, n, lo, hi)
        torch.testing.assert_close(input_parts.assemble(r, parts), want, rtol=0, atol=0)
        # the region holds every window of its group
        for k in groups[p]:
            o = layout.origins[k].tolist()
            assert o[0] == n and all(a <= s and s + w <= h
                                     for a, s, w, h in zip(lo, o[1:], layout.window, hi))


def test_missing_part_is_an_error():
    x = np.zeros((1, 1, 8, 8), np.float32)
    layout = Layout(x.shape, 4, 2, None, None, 0.1, chunks=4, unit=4, shards=None)
    r = input_parts.window_region(layout, list(range(layout.origins.shape[0])))
    parts = [input_parts.read_parts(Job(x, layout, None), b, {0: r})[0]
             for b in input_parts.blocks_meeting(layout, r)]
    with pytest.raises(RuntimeError, match="cover"):
        input_parts.assemble(r, parts[:-1])
    with pytest.raises(ValueError, match="does not meet"):
        input_parts.read_parts(Job(x, layout, None), 0, {0: (0, [5, 5], [8, 8])})
