"""A cluster run's bands: how the windows are cut into bands of unit planes and who sums which
unit (every window in one band, a unit shared only where windows of two bands touch it), and
runs cut into 1-5 bands on a cluster of threads in this process: every unit written once,
the units no other band touches equal to the run in one process bit for bit."""

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastquilt as fq
from fastquilt.outofcore import bands as band_tasks
from fastquilt.outofcore import progress_of
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
    bands = band_tasks.cut_bands(layout, todo, done, count)
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
    # every shared unit has one owner, whose bands are exactly the ones sharing it
    owners = band_tasks.owner_groups(bands)
    assert sorted(u for uids, _, _ in owners for u in uids) == sorted(bands.shared)
    for uids, sharing, home in owners:
        assert home in sharing and len(uids) > 0
        for u in uids:
            assert sharing == [b for b, raw in enumerate(bands.raw) if u in raw]
    homes = {}
    for _, sharing, home in owners:  # a group's runs go to each of its bands once
        homes.setdefault(tuple(sharing), []).append(home)
    assert all(len(h) == len(set(h)) for h in homes.values())


class _Threads:
    def __init__(self, nthreads):
        self._n = nthreads

    def nthreads(self):
        return self._n


@pytest.mark.parametrize("nthreads,bands,want", [
    ({"b": 1, "a": 1}, 2, ["a", "b"]),
    ({"a": 2, "b": 2}, 4, ["a", "a", "b", "b"]),
    ({"a": 2, "b": 2}, 2, ["a", "b"]),  # fewer bands than threads: still both workers
    ({"a": 2, "b": 2}, 3, ["a", "b", "b"]),
    ({"a": 3, "b": 1}, 2, ["a", "b"]),  # uneven workers: still both
    ({"a": 4, "b": 2}, 2, ["a", "b"]),
    ({"a": 1, "b": 1, "c": 1}, 3, ["a", "b", "c"]),
    ({"a": 4}, 2, ["a", "a"]),
    ({}, 2, [None, None]),  # no worker now: no hint
])
def test_bands_are_hinted_to_the_workers_threads_spread_evenly(nthreads, bands, want):
    assert band_tasks.band_workers(_Threads(nthreads), bands) == want


@pytest.fixture(scope="module")
def thread_client():
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1,
                            dashboard_address=None) as c:
        yield c


def ramp(p):
    """A model whose windows disagree where they overlap (a ramp along every axis of the
    window, and its square as a second channel): the mean depends on every piece's weights,
    and the std is not zero."""
    r = sum(torch.linspace(0.0, 1.0, w).view([-1 if a == d else 1 for a in range(p.dim() - 2)])
            for d, w in enumerate(p.shape[2:]))
    y = p * 2.0 + 1.0 + r
    return torch.cat([y, y.square() - r], dim=1)


def _in_bands(client, monkeypatch, count, x, out, **kw):
    """``sliding_window`` of :func:`ramp` on ``client`` cut into ``count`` bands: ``(result,
    the bands, the units written in order)``."""
    writes = []
    write_unit, cut = OutputStore.write_unit, band_tasks.cut_bands

    def recorded(self, uid, unit_outputs):
        writes.append(uid)
        write_unit(self, uid, unit_outputs)

    seen = []
    with monkeypatch.context() as m:
        m.setattr(OutputStore, "write_unit", recorded)
        m.setattr(band_tasks, "band_count", lambda *a: count)
        m.setattr(band_tasks, "cut_bands", lambda *a: seen.append(cut(*a)) or seen[-1])
        got = fq.sliding_window(ramp, x, out=out, client=client, **kw)
    return got, (seen[0] if seen else None), writes


def _check(got, want, outputs, units, exact: set[int]):
    """``got`` equals ``want`` to rounding, and bit for bit on the units ``exact``."""
    for name in (outputs if isinstance(outputs, tuple) else [None]):
        a = np.asarray((got[name] if name else got)[...])
        b = np.asarray((want[name] if name else want)[...])
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        for uid in sorted(exact):
            n, box = units.box(uid)
            np.testing.assert_array_equal(a[(n, slice(None), *box)], b[(n, slice(None), *box)])


GEOMETRIES = {  # shape, window, step, chunks, unit
    # 2 images of 5 unit planes: bands of 1-3 planes, some running on into the next image
    "3d": ((2, 1, 40, 22, 26), (10, 8, 9), (7, 6, 6), 4, 8),
    # windows of 3 unit planes: thin bands, units shared by 3 and more bands
    "2d_thin_bands": ((1, 1, 60, 30), (12, 7), (5, 4), 4, (4, 8)),
}


@pytest.mark.parametrize("geometry,count,spill", [
    ("3d", 1, False), ("3d", 2, False), ("3d", 3, False), ("3d", 5, False), ("3d", 3, True),
    ("2d_thin_bands", 8, False)])
@pytest.mark.parametrize("outputs", ["mean", ("mean", "std")])
def test_a_run_in_bands_writes_each_unit_once_and_its_own_units_as_one_process(
        thread_client, geometry, count, spill, outputs, tmp_path, monkeypatch):
    # (spill: the bands keep their sums in the spilling slab, every unit not finished by a
    # batch in the scratch file)
    shape, window, step, chunks, unit = GEOMETRIES[geometry]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    kw = dict(window=window, step=step, batch_size=3, weight="gaussian", chunks=chunks,
              unit=unit, outputs=outputs)
    one = fq.sliding_window(ramp, x, out=tmp_path / "one.zarr", **kw)
    if spill:
        plan, run_windows = band_tasks.plan_run, band_tasks.run_windows
        monkeypatch.setattr(band_tasks, "plan_run", lambda *a, **k: plan(*a, **k)._replace(
            spill_cap=0, queue_depth=0))
        spilling = []
        monkeypatch.setattr(band_tasks, "run_windows", lambda *a, **k: spilling.append(
            k["memory"](2).spill_cap) or run_windows(*a, **k))
    got, bands, writes = _in_bands(thread_client, monkeypatch, count, x,
                                   tmp_path / "bands.zarr", **kw)
    assert len(bands.windows) == count
    assert not spill or spilling == [0] * count
    units = Layout(shape, window, step, "gaussian", None, 0.1, chunks=chunks, unit=unit,
                   shards=None).units
    if geometry == "3d":
        # (2 bands are cut between the images: nothing shared; 3 and 5 cut inside an image,
        # and a band holds the end of one image and the start of the other)
        assert bool(bands.shared) == (count > 2)
    else:
        assert max(sum(u in raw for raw in bands.raw) for u in bands.shared) >= 3
    assert sorted(writes) == list(range(units.total()))  # each once
    _check(got, one, outputs, units, set(range(units.total())) - set(bands.shared))
    # the run's stop event is not left on the scheduler
    events = thread_client.run_on_scheduler(
        lambda dask_scheduler: list(dask_scheduler.extensions["events"]._events))
    assert not [e for e in events if "fastquilt-stop" in str(e)]


def test_a_resume_in_bands_rewrites_exactly_the_units_not_done(thread_client, tmp_path,
                                                               monkeypatch):
    shape, window, step, chunks, unit = GEOMETRIES["3d"]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    kw = dict(window=window, step=step, weight="gaussian", chunks=chunks, unit=unit)
    one = fq.sliding_window(ramp, x, out=tmp_path / "one.zarr", **kw)
    out = tmp_path / "bands.zarr"
    _in_bands(thread_client, monkeypatch, 3, x, out, **kw)
    units = Layout(shape, window, step, "gaussian", None, 0.1, chunks=chunks, unit=unit,
                   shards=None).units
    arr = zarr.open_array(str(out), mode="r+")
    undone = set(range(0, units.total(), 3))
    for uid in undone:  # as if the run had died before these: junk in them, no marker
        (tmp_path / "bands.zarr.fastquilt-progress" / f"u{uid}").unlink()
        n, box = units.box(uid)
        arr[(n, slice(None), *box)] = 1e6
    got, bands, writes = _in_bands(thread_client, monkeypatch, 3, x, out, **kw)
    assert sorted(writes) == sorted(undone)
    _check(got, one, "mean", units, set())


def test_a_run_in_bands_with_gaps_writes_the_units_no_window_touches(thread_client, tmp_path,
                                                                    monkeypatch):
    x = np.random.default_rng(0).standard_normal((2, 1, 40, 24)).astype(np.float32)
    outputs = ("mean", "labels", "entropy")
    kw = dict(window=(6, 5), step=(9, 8), chunks=2, unit=2, allow_gaps=True, fill_value=7.0,
              outputs=outputs, activation="softmax")
    one = fq.sliding_window(ramp, x, out=tmp_path / "one.zarr", **kw)
    got, bands, writes = _in_bands(thread_client, monkeypatch, 3, x, tmp_path / "b.zarr", **kw)
    units = Layout(x.shape, (6, 5), (9, 8), "gaussian", None, 0.1, chunks=2, unit=2,
                   shards=None, allow_gaps=True).units
    assert sorted(writes) == list(range(units.total()))
    touched = set().union(*bands.mine)
    assert len(touched) < units.total()  # (so the untouched units are tested)
    _check(got, one, outputs, units, set(range(units.total())))
    assert progress_of(tmp_path / "b.zarr")["done"] == units.total()
    for uid in set(range(units.total())) - touched:  # every float output at the fill value
        n, box = units.box(uid)
        for name in ("mean", "entropy"):
            assert (np.asarray(got[name][(n, slice(None), *box)]) == 7.0).all(), name


def test_the_band_count_keeps_bands_twice_as_thick_as_a_windows_reach():
    class Client:
        def nthreads(self):
            return {"tcp://a:1": 8, "tcp://b:1": 8}

    def count(S0, w0, u0):
        layout = Layout((1, 1, S0, 16), (w0, 8), (w0 // 2, 8), "gaussian", None, 0.1,
                        chunks=4, unit=(u0, 16), shards=None)
        return band_tasks.band_count(Client(), layout, list(range(layout.origins.shape[0])))

    assert count(512, 64, 128) == 2  # 4 unit planes; windows reach 1 plane on
    assert count(512, 64, 32) == 3  # 15 planes hold window starts; windows reach 2 on
    assert count(4096, 64, 32) == 16  # as many as worker threads
    assert count(64, 64, 128) == 1


def test_a_band_counts_the_pieces_it_holds_in_its_memory_bound(thread_client, tmp_path,
                                                                monkeypatch):
    # A band holds the pieces of the units it shares until it ends: they come off the bound
    # its pipeline is planned in, and a bound they fill is refused, naming them.
    x = np.random.default_rng(0).standard_normal((1, 1, 40, 22, 26)).astype(np.float32)
    kw = dict(window=8, step=6, chunks=4, unit=8)
    monkeypatch.setattr(band_tasks, "band_count", lambda *a: 3)
    plans = []
    plan = band_tasks.plan_run
    monkeypatch.setattr(band_tasks, "plan_run", lambda bound, *a, **k: plans.append(bound) or plan(
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
    # (the bands whose pieces fill it refuse it, and those whose pieces leave too little for
    # their pipeline; whichever error comes back first names the pieces)
    with pytest.raises(ValueError, match="a band's pieces for the units it shares take"):
        fq.sliding_window(lambda p: p, x, out=tmp_path / "b.zarr", client=thread_client,
                          max_memory=unit_plane, **kw)


def _stops_on_large_input(p):
    """Raises on a batch holding a value over 1e6, and takes 50 ms a batch otherwise."""
    if (p > 1e6).any():
        raise RuntimeError("bad input in this band")
    time.sleep(0.05)
    return p * 2.0


def test_the_bands_of_a_failed_run_stop_instead_of_writing_on(thread_client, tmp_path,
                                                              monkeypatch):
    # dask cannot stop a running task: without the run's stop event, the other band would go
    # on writing all its units after the call has raised (and released the output).
    x = np.zeros((2, 1, 64, 16, 16), np.float32)
    x[0, 0, 30] = 1e7  # band 0 (image 0) fails half-way; band 1 (image 1) runs ~3.5 s
    writes = []
    write_unit = OutputStore.write_unit
    monkeypatch.setattr(OutputStore, "write_unit",
                        lambda self, uid, o: writes.append(uid) or write_unit(self, uid, o))
    monkeypatch.setattr(band_tasks, "band_count", lambda *a: 2)
    with pytest.raises(RuntimeError, match="bad input in this band"):
        fq.sliding_window(_stops_on_large_input, x, out=tmp_path / "o.zarr", window=8, step=4,
                          batch_size=2, chunks=8, unit=8, client=thread_client)
    deadline = time.monotonic() + 60
    while any(thread_client.run(lambda dask_worker: len(dask_worker.state.executing)).values()):
        assert time.monotonic() < deadline, "a band is still running a minute later"
        time.sleep(0.1)
    per_image = 8 * 2 * 2
    written = len([u for u in writes if u >= per_image])
    assert 0 < written < per_image  # band 1 ran, and stopped before its end
    assert not [u for u in writes if u < per_image and u >= 12]  # (band 0: units before plane 30)
