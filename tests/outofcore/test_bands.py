"""A cluster run's bands: how the windows are cut into bands of unit planes and who sums which
unit (every window in one band, a unit shared only where windows of two bands touch it), and
runs cut into 1-5 bands on a cluster of threads in this process: every unit written once,
the units no other band touches equal to the run in one process bit for bit."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastquilt as fq
from fastquilt.outofcore import distributed as dist
from fastquilt.outofcore.job import Layout
from fastquilt.outofcore.slab import touch_pairs
from fastquilt.outofcore.store import OutputStore

from ..random_geometry import random_grid, random_units

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), count=st.integers(1, 6), images=st.integers(1, 3))
def test_bands_hold_every_window_once_and_share_only_units_two_bands_touch(seed, count,
                                                                           images):
    rng = np.random.default_rng(seed)
    S, W, step, _ = random_grid(rng, 40, 20, min_size=3)
    chunk, unit = random_units(rng, S)
    layout = Layout((images, 1, *S), W, step, "gaussian", None, 0.1, chunks=chunk, unit=unit,
                    shards=None)
    done = {u for u in range(layout.units.total()) if rng.random() < 0.2}
    todo, remaining = layout.plan(done)
    if not todo:
        return
    bands = dist.cut_bands(layout, todo, done, count)
    assert 1 <= len(bands.windows) <= count
    assert [k for ks in bands.windows for k in ks] == todo  # in order, each once
    planes = [{(int(o[0]), int(o[1]) // layout.unit[0]) for o in layout.origins[ks].tolist()}
              for ks in bands.windows]
    for a, b in zip(planes, planes[1:]):
        assert max(a) < min(b)  # bands of whole unit planes
    touched = []
    for ks in bands.windows:
        uids, _ = touch_pairs(layout, ks)
        touched.append(set(uids.tolist()) - done)
    assert [set(m) for m in bands.mine] == touched
    assert set().union(*bands.mine) == set(remaining)
    shared = {u for u in remaining if sum(u in t for t in touched) > 1}
    assert set(bands.shared) == shared
    for ks, mine, raw in zip(*bands[:3]):
        assert set(raw) == set(mine) & shared
        org = layout.origins[ks]
        for uid, (lo, hi) in raw.items():  # the planes this band's windows reach
            n = layout.units.box(uid)[0]
            mine_n = org[org[:, 0] == n, 1]
            assert (lo, hi) == (int(mine_n.min()), int(mine_n.max()) + layout.window[0])


@pytest.fixture(scope="module")
def thread_client():
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1,
                            dashboard_address=None) as c:
        yield c


@pytest.mark.parametrize("count,spill", [(1, False), (2, False), (3, False), (5, False),
                                         (3, True)])
@pytest.mark.parametrize("outputs", ["mean", ("mean", "std")])
def test_a_run_in_bands_writes_each_unit_once_and_its_own_units_as_one_process(
        thread_client, count, spill, outputs, tmp_path, monkeypatch):
    # (spill: the bands keep their sums in the spilling slab, every unit not finished by a
    # batch in the scratch file)
    x = np.random.default_rng(0).standard_normal((2, 1, 40, 22, 26)).astype(np.float32)
    kw = dict(window=(10, 8, 9), step=(7, 6, 6), batch_size=3, weight="gaussian", chunks=4,
              unit=8, outputs=outputs)

    def model(p):
        return torch.cat([p * 2.0 + 1.0, p.square()], dim=1)

    one = fq.sliding_window(model, x, out=tmp_path / "one.zarr", **kw)
    writes = []
    write_unit, run_windows = OutputStore.write_unit, dist.run_windows

    def recorded(self, uid, unit_outputs):
        writes.append(uid)
        write_unit(self, uid, unit_outputs)

    monkeypatch.setattr(OutputStore, "write_unit", recorded)
    monkeypatch.setattr(dist, "_band_count", lambda client: count)
    if spill:
        plan = dist.plan_run
        monkeypatch.setattr(dist, "plan_run", lambda *a, **k: plan(*a, **k)._replace(
            spill_cap=0, queue_depth=0))
        spilling = []
        monkeypatch.setattr(dist, "run_windows", lambda *a, **k: spilling.append(
            k["memory"](2).spill_cap) or run_windows(*a, **k))
    cut = dist.cut_bands
    seen = []
    monkeypatch.setattr(dist, "cut_bands", lambda *a: seen.append(cut(*a)) or seen[-1])
    got = fq.sliding_window(model, x, out=tmp_path / "bands.zarr", client=thread_client, **kw)
    bands = seen[0]
    assert len(bands.windows) == count
    assert not spill or spilling == [0] * count
    # (2 bands are cut between the images: nothing shared; 3 and 5 cut inside an image, and a
    # band holds the end of one image and the start of the other)
    assert bool(bands.shared) == (count > 2)
    total = 2 * 5 * 3 * 4  # units: 2 images of 5 x 3 x 4
    assert sorted(writes) == list(range(total))  # each once
    names = ["mean", "std"] if isinstance(outputs, tuple) else [None]
    for name in names:
        a = np.asarray((got[name] if name else got)[...])
        b = np.asarray((one[name] if name else one)[...])
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        units = Layout(x.shape, kw["window"], kw["step"], "gaussian", None, 0.1, chunks=4,
                       unit=8, shards=None).units
        for uid in sorted(set(range(total)) - set(bands.shared)):
            n, box = units.box(uid)
            np.testing.assert_array_equal(a[(n, slice(None), *box)], b[(n, slice(None), *box)])


def test_a_band_counts_the_pieces_it_holds_in_its_memory_bound(thread_client, tmp_path,
                                                                monkeypatch):
    # A band holds the pieces of the units it shares until it ends: they come off the bound
    # its pipeline is planned in, and a bound they fill is refused, naming them.
    x = np.random.default_rng(0).standard_normal((1, 1, 40, 22, 26)).astype(np.float32)
    kw = dict(window=8, step=6, chunks=4, unit=8)
    monkeypatch.setattr(dist, "_band_count", lambda client: 3)
    plans = []
    plan = dist.plan_run
    monkeypatch.setattr(dist, "plan_run", lambda bound, *a, **k: plans.append(bound) or plan(
        bound, *a, **k))
    y = fq.sliding_window(lambda p: p, x, out=tmp_path / "a.zarr", client=thread_client,
                          max_memory="64M", **kw)
    np.testing.assert_allclose(y[...], x, rtol=1e-5, atol=1e-6)
    # Window starts 0, 6, 12, 18, 24, 30, 32 along axis 0, units of 8 planes: bands of unit
    # rows 0 | 1-2 | 3-4. Band 0 reaches planes 8-14 of row 1; band 1 planes 12-16 of row 1
    # (its first window starts at 12) and 24-26 of row 3; band 2 all 8 planes of row 3.
    plane = 2 * 22 * 26 * 4  # (K + 1) x 22 x 26 float32
    assert sorted(2**26 - b for b in plans) == [6 * plane, 6 * plane, 8 * plane]
    unit_plane = 8 * plane
    with pytest.raises(ValueError, match="a band's pieces for the units it shares take"):
        fq.sliding_window(lambda p: p, x, out=tmp_path / "b.zarr", client=thread_client,
                          max_memory=unit_plane, **kw)
