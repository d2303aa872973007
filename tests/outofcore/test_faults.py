"""Faults that must never give wrong output: kill -9 at several moments (during writes too),
two runs on one output at once, a one-worker cluster whose worker dies, a worker started in
another folder with relative paths, a full disk, output chunks deleted under their markers,
and a cluster run whose writes this machine cannot see."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import fastquilt as fq
from fastquilt.outofcore import local_cluster, progress_of
from fastquilt.outofcore.store import OutputStore, Progress

zarr = pytest.importorskip("zarr")
distributed = pytest.importorskip("distributed")

HERE = Path(__file__).parent
GEOMETRY = dict(window=16, step=12, batch_size=4, weight="gaussian", chunks=16, unit=16)


def _input(tmp_path, shape=(1, 1, 48, 48, 48)):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    z = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=x.shape, dtype="float32",
                          chunks=(1, 1, 16, 16, 16))
    z[...] = x
    return x, z


def _want(x, scale=2.0):
    return fq.sliding_window(lambda p: p * scale + 1.0, torch.from_numpy(x), 16, 12,
                             weight="gaussian").numpy()


def _start_job(src, dst, *, scale=2.0, slow_write_flag=None, slow_levels_flag=None,
               spill=False):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in [str(HERE), os.environ.get("PYTHONPATH", "")] if p))
    if spill:
        env["FQ_TEST_SPILL"] = "1"
    if slow_write_flag:
        env["FQ_TEST_SLOW_WRITE"] = str(slow_write_flag)
    if slow_levels_flag:
        env["FQ_TEST_SLOW_LEVELS"] = str(slow_levels_flag)
    return subprocess.Popen([sys.executable, str(HERE / "ooc_job.py"), str(src), str(dst),
                             str(scale)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _ooc_job():
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import ooc_job

    return ooc_job


def _wait_for(cond, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not cond():
        time.sleep(0.01)
    assert proc.poll() is None, "the job finished before it could be killed"


@pytest.mark.parametrize("moment", ["first_marker", "a_third", "two_thirds", "mid_write",
                                    "a_third_spilling"])
def test_kill_9_at_any_moment_then_resume_gives_the_exact_result(moment, tmp_path):
    # (a_third_spilling: the run keeps its sums in the spilling slab, every unit not finished
    # by a batch in the scratch file; the resume uses the slab)
    x, _ = _input(tmp_path)
    src, dst = tmp_path / "in.zarr", tmp_path / "out.zarr"
    markers = tmp_path / "out.zarr.fastquilt-progress"
    flag = tmp_path / "writing"
    proc = _start_job(src, dst, slow_write_flag=flag if moment == "mid_write" else None,
                      spill=moment.endswith("spilling"))
    if moment == "mid_write":  # a unit's chunks are written, its marker is not yet
        _wait_for(flag.exists, proc)
    else:
        need = {"first_marker": 1, "a_third": 9, "two_thirds": 18, "a_third_spilling": 9}[moment]
        _wait_for(lambda: markers.exists() and len(list(markers.glob("u*"))) >= need, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = progress_of(dst)["done"] if (dst / "zarr.json").exists() else 0
    assert done < 27
    assert not list(tmp_path.glob(".fastquilt-spill*"))  # (the scratch file has no name)
    y = fq.sliding_window(_ooc_job().Slow(2.0), zarr.open_array(str(src)), out=dst,
                          **GEOMETRY)  # the same model, resumed
    np.testing.assert_allclose(y[...], _want(x), rtol=1e-5, atol=1e-5)
    assert progress_of(dst)["done"] == 27


@pytest.mark.parametrize("moment", ["a_third", "between_levels"])
def test_kill_9_of_an_ome_zarr_run_then_resume_gives_every_level_exactly(moment, tmp_path):
    from .ome_check import reference_levels

    x, _ = _input(tmp_path)
    src, dst = tmp_path / "in.zarr", tmp_path / "out.ome.zarr"
    markers = tmp_path / "out.ome.zarr.fastquilt-progress"
    flag = tmp_path / "levels"
    proc = _start_job(src, dst, slow_levels_flag=flag if moment == "between_levels" else None)
    if moment == "between_levels":  # a unit's level 0 is written, its levels are not
        _wait_for(flag.exists, proc)
    else:
        _wait_for(lambda: markers.exists() and len(list(markers.glob("u*"))) >= 9, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list(markers.glob("u*"))) < 27 if markers.exists() else True
    y = fq.sliding_window(_ooc_job().Slow(2.0), zarr.open_array(str(src)), out=dst,
                          levels=2, **GEOMETRY)  # the same model, resumed
    np.testing.assert_allclose(y[...], _want(x), rtol=1e-5, atol=1e-5)
    levels = [zarr.open_array(str(dst / str(lv)))[...] for lv in (0, 1, 2)]
    for got, ref in zip(levels[1:], reference_levels(levels[0], 2)):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert progress_of(dst)["done"] == 27


def test_two_runs_on_one_output_never_mix(tmp_path):
    x, _ = _input(tmp_path)
    src = tmp_path / "in.zarr"
    for trial in range(3):
        dst = tmp_path / f"out{trial}.zarr"
        a, b = _start_job(src, dst, scale=2.0), _start_job(src, dst, scale=3.0)
        results = [(p.wait(), p.communicate()[1]) for p in (a, b)]
        ok = [scale for (rc, _), scale in zip(results, (2.0, 3.0)) if rc == 0]
        assert len(ok) == 1, results  # one wins; the other is refused, never both
        refused = next(err for rc, err in results if rc != 0)
        assert "being written by another run" in refused or "another model" in refused
        np.testing.assert_allclose(zarr.open_array(str(dst))[...], _want(x, ok[0]),
                                   rtol=1e-5, atol=1e-5)


def test_a_second_run_in_the_same_process_is_refused_while_the_first_writes(tmp_path):
    _, z = _input(tmp_path, shape=(1, 1, 32, 32, 32))
    dst = tmp_path / "o.zarr"
    seen = []

    def model(p):
        if not seen:
            seen.append(1)
            with pytest.raises(ValueError, match="being written by another run"):
                fq.sliding_window(lambda q: q, z, out=dst, **GEOMETRY)
        return p

    fq.sliding_window(model, z, out=dst, **GEOMETRY)
    assert seen and progress_of(dst)["done"] == progress_of(dst)["total"]
    fq.sliding_window(model, z, out=dst, **GEOMETRY)  # the lease is given back at the end


def test_disk_full_while_writing_a_marker(tmp_path, monkeypatch):
    x, z = _input(tmp_path, shape=(1, 1, 32, 32, 32))
    dst = tmp_path / "o.zarr"
    real_mark = Progress.mark
    calls = []

    def full(self, uid):
        calls.append(uid)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_mark(self, uid)

    monkeypatch.setattr(Progress, "mark", full)
    with pytest.raises(RuntimeError, match="No space left on device.*re-run the same call"):
        fq.sliding_window(lambda p: p * 2.0 + 1.0, z, out=dst, **GEOMETRY)
    monkeypatch.setattr(Progress, "mark", real_mark)
    assert progress_of(dst)["done"] < progress_of(dst)["total"]
    y = fq.sliding_window(lambda p: p * 2.0 + 1.0, z, out=dst, **GEOMETRY)
    np.testing.assert_allclose(y[...], _want(x), rtol=1e-5, atol=1e-5)


def test_chunks_deleted_under_their_markers_are_computed_again(tmp_path):
    x, z = _input(tmp_path, shape=(1, 1, 32, 32, 32))
    dst = tmp_path / "o.zarr"
    fq.sliding_window(lambda p: p * 2.0 + 1.0, z, out=dst, **GEOMETRY)
    chunk = dst / "c" / "0" / "0" / "1" / "0" / "1"
    assert chunk.exists()
    chunk.unlink()
    assert progress_of(dst)["done"] == progress_of(dst)["total"]  # the marker still says done
    y = fq.sliding_window(lambda p: p * 2.0 + 1.0, z, out=dst, **GEOMETRY)
    assert chunk.exists()
    np.testing.assert_allclose(y[...], _want(x), rtol=1e-5, atol=1e-5)


def test_units_equal_to_the_fill_value_are_stored_and_count_as_done(tmp_path):
    _, z = _input(tmp_path, shape=(1, 1, 32, 32, 32))
    dst = tmp_path / "o.zarr"
    fq.sliding_window(lambda p: p * 0.0, z, out=dst, **GEOMETRY)
    assert len(list((dst / "c").rglob("*"))) > 0
    calls = []
    fq.sliding_window(lambda p: calls.append(1) or p * 0.0, z, out=dst, **GEOMETRY)
    assert calls == []


@pytest.fixture
def one_worker(tmp_path_factory, monkeypatch):
    # its folder is not the test's: relative paths must not be read against it
    monkeypatch.chdir(tmp_path_factory.mktemp("worker_home"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in [str(HERE), os.environ.get("PYTHONPATH", "")] if p))
    cluster = local_cluster(n_workers=1, threads_per_worker=1, dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_relative_paths_with_a_worker_in_another_folder(one_worker, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, _ = _input(tmp_path, shape=(1, 1, 32, 32, 32))
    y = fq.sliding_window(lambda p: p * 2.0 + 1.0, zarr.open_array("in.zarr", mode="r"),
                          out="out.zarr", client=one_worker, **GEOMETRY)
    np.testing.assert_allclose(y[...], _want(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "out.zarr"))[...], _want(x),
                               rtol=1e-5, atol=1e-5)


def test_the_only_worker_killed_mid_run_is_survived(one_worker, tmp_path):
    ooc_job = _ooc_job()
    x, z = _input(tmp_path, shape=(1, 1, 32, 32, 32))
    y = fq.sliding_window(ooc_job.KillOnce(str(tmp_path / "flag"), after=2), z,
                          out=tmp_path / "o.zarr", client=one_worker, **GEOMETRY)
    assert (tmp_path / "flag").exists()  # it did kill its worker
    np.testing.assert_allclose(y[...], _want(x), rtol=1e-5, atol=1e-5)


def test_a_cluster_run_checks_that_its_writes_are_where_the_client_looks(tmp_path,
                                                                         monkeypatch):
    _, z = _input(tmp_path, shape=(1, 1, 32, 32, 32))

    def write_elsewhere(self, uid, mean):  # a worker writing to a disk of its own
        self.progress.mark(uid)

    monkeypatch.setattr(OutputStore, "write_unit", write_elsewhere)
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as c, \
            distributed.Client(c) as client:
        with pytest.raises(RuntimeError, match="not in storage after the run"):
            fq.sliding_window(lambda p: p, z, out=tmp_path / "o.zarr", client=client,
                              **GEOMETRY)


@pytest.mark.parametrize("spill", [False, True])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_run_stopped_by_an_error_marks_no_unfinished_unit_done(spill, error, tmp_path,
                                                                 monkeypatch):
    # the model fails (or the user presses Ctrl-C) a third of the way: the units whose
    # windows were all added are written, the others are not (they once were, half-summed,
    # and marked done: the resume then kept them); the resume gives the exact result
    from fastquilt.outofcore import run as run_module

    if spill:
        plan = run_module.plan_run
        monkeypatch.setattr(run_module, "plan_run", lambda *a, **k: plan(*a, **k)._replace(
            spill_cap=0, queue_depth=0))
    x = np.random.default_rng(0).standard_normal((1, 1, 32, 32, 32)).astype(np.float32)
    kw = dict(chunks=8, unit=8, batch_size=2, weight="gaussian")
    calls = [0]

    def failing(p):
        calls[0] += 1
        if calls[0] > 40:
            raise error("stop")
        return p * 2

    out = tmp_path / "o.zarr"
    with pytest.raises(error):
        fq.sliding_window(failing, x, 8, 4, out=out, **kw)
    done = progress_of(out)["done"]
    assert 0 < done < 64
    y = fq.sliding_window(lambda p: p * 2, x, 8, 4, out=out, **kw)  # resumed
    want = fq.sliding_window(lambda p: p * 2, torch.from_numpy(x), 8, 4, weight="gaussian")
    np.testing.assert_allclose(y[...], want.numpy(), rtol=1e-5, atol=1e-5)


def _finished_gaps_run(tmp_path, images: int):
    """A finished allow_gaps run over ``images`` images of 6 x 7 whose grid leaves units no
    window touches: ``(x, kw, layout, the touched units)``."""
    from fastquilt.outofcore.job import Layout

    x = np.random.default_rng(0).random((images, 1, 6, 7)).astype(np.float32)
    kw = dict(allow_gaps=True, fill_value=-7.0, out=tmp_path / "gaps.zarr", chunks=(1, 2),
              unit=(1, 2))
    fq.sliding_window(lambda p: p, x, (2, 6), (5, 6), 1, "flat", **kw)
    layout = Layout(x.shape, (2, 6), (5, 6), "flat", None, 0.1, chunks=(1, 2), unit=(1, 2),
                    shards=None, allow_gaps=True)
    touched = set()
    for k in range(layout.origins.shape[0]):
        touched |= set(layout.units.touched(layout.origins[k].tolist(), layout.window))
    return x, kw, layout, touched


def _resume_gaps_run(x, kw, layout) -> None:
    """Resume the run of :func:`_finished_gaps_run`: every unit marked, the in-memory result."""
    y = fq.sliding_window(lambda p: p, x, (2, 6), (5, 6), 1, "flat", **kw)
    assert progress_of(kw["out"])["done"] == layout.units.total()
    want = fq.sliding_window(lambda p: p, torch.from_numpy(x), (2, 6), (5, 6), 1, "flat",
                             allow_gaps=True, fill_value=-7.0)
    np.testing.assert_array_equal(y[...], want.numpy())


def test_units_no_window_touches_are_written_on_a_resume_with_nothing_left_to_run(tmp_path):
    # allow_gaps: the units outside every window are written (at the fill value) after the
    # last window; a run killed just before that resumes with no window to run, and must still
    # write and mark them
    x, kw, layout, touched = _finished_gaps_run(tmp_path, 1)
    gaps = [u for u in range(layout.units.total()) if u not in touched]
    assert gaps
    markers = tmp_path / "gaps.zarr.fastquilt-progress"
    for u in gaps:  # as if killed before the last writes
        (markers / f"u{u}").unlink()
    assert progress_of(kw["out"])["done"] == layout.units.total() - len(gaps)
    _resume_gaps_run(x, kw, layout)


def test_untouched_units_of_an_image_no_resumed_window_reaches_are_written(tmp_path):
    # two images, allow_gaps: image 0's units outside every window unmarked (a kill before
    # the slab reached image 1) and three of image 1's units too: the resume runs image 1's
    # windows only, and must still write image 0's untouched units
    x, kw, layout, touched = _finished_gaps_run(tmp_path, 2)
    per = layout.units.per_image
    markers = tmp_path / "gaps.zarr.fastquilt-progress"
    for u in [u for u in range(per) if u not in touched]:
        (markers / f"u{u}").unlink()
    for u in [u for u in range(per, 2 * per) if u in touched][:3]:
        (markers / f"u{u}").unlink()
    _resume_gaps_run(x, kw, layout)


def test_a_resume_takes_the_outputs_chunks_and_refuses_others(tmp_path):
    # chunks are not in the stored geometry: a resume with other chunks would check the
    # wrong chunk grid under the markers (a lost chunk then stays lost); it is refused, and a
    # resume without chunks= takes the output's own
    x = np.random.default_rng(0).random((1, 1, 32, 32)).astype(np.float32)
    out = tmp_path / "s.zarr"
    fq.sliding_window(lambda p: p, x, 8, 4, out=out, chunks=4, unit=8)
    (out / "c" / "0" / "0" / "1" / "1").unlink()  # storage lost a chunk under its marker
    for kw in (dict(chunks=8), dict(chunks=8, max_memory="1G"), dict(shards=8)):
        with pytest.raises(ValueError, match="was made with|without shards"):
            fq.sliding_window(lambda p: p, x, 8, 4, out=out, **kw)
    y = fq.sliding_window(lambda p: p, x, 8, 4, out=out, max_memory="1G")
    assert (out / "c" / "0" / "0" / "1" / "1").exists()
    want = fq.sliding_window(lambda p: p, torch.from_numpy(x), 8, 4)
    np.testing.assert_allclose(y[...], want.numpy(), rtol=1e-6, atol=1e-6)
