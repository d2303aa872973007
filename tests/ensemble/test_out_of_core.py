"""Ensembles and their outputs out of core and on dask: every output equals the in-memory
one, 2D and 3D; kill -9 and resume with several outputs; a resume must ask for the same
outputs."""

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
from fastquilt.outofcore import progress_of

zarr = pytest.importorskip("zarr")
distributed = pytest.importorskip("distributed")

OOC = Path(__file__).parents[1] / "outofcore"
ALL = ("mean", "std", "variance", "labels", "probability", "entropy")


def _members(D, seed=0):
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d if D == 3 else torch.nn.Conv2d
    return [conv(1, 3, 3, padding=1).eval() for _ in range(2)]


def _assert_same(got, want):
    for name, t in want.items():
        a = np.asarray(got[name][...])
        assert a.dtype == t.numpy().dtype, name
        if name == "labels":  # ties could only differ with different sums: same sums here
            np.testing.assert_array_equal(a, t.numpy())
        else:
            np.testing.assert_allclose(a, t.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("D", [2, 3])
def test_every_output_in_memory_equals_out_of_core_and_cluster(D, tmp_path):
    shape = (2, 1, 40, 36) if D == 2 else (1, 1, 26, 24, 22)
    x = np.random.default_rng(D).standard_normal(shape).astype(np.float32)
    models = _members(D)
    kw = dict(outputs=ALL, tta="all", activation="softmax", batch_size=5)
    window, step, chunks = (12, 9, 8)
    want = fq.sliding_window(models, torch.from_numpy(x), window, step, **kw)
    local = fq.sliding_window(models, x, window, step, out=tmp_path / "local.zarr",
                              chunks=chunks, **kw)
    assert isinstance(local, zarr.Group) and sorted(local.array_keys()) == sorted(ALL)
    _assert_same(local, want)
    with distributed.LocalCluster(n_workers=1, processes=False, threads_per_worker=2,
                                  dashboard_address=None) as c, distributed.Client(c) as client:
        cluster = fq.sliding_window(models, x, window, step, out=tmp_path / "cluster.zarr",
                                    chunks=chunks, client=client, **kw)
    _assert_same(cluster, want)
    assert progress_of(tmp_path / "cluster.zarr")["done"] == progress_of(
        tmp_path / "local.zarr")["total"]


def test_a_lone_mean_of_an_ensemble_is_one_array_and_resume_needs_the_same_outputs(tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 1, 24, 20, 20)).astype(np.float32)
    models = _members(3)
    out = fq.sliding_window(models, x, 8, 6, out=tmp_path / "m.zarr", chunks=8)
    assert isinstance(out, zarr.Array) and out.shape == (1, 3, 24, 20, 20)
    want = fq.sliding_window(models, torch.from_numpy(x), 8, 6, outputs="mean")
    np.testing.assert_allclose(out[...], want.numpy(), rtol=1e-5, atol=1e-6)
    g = tmp_path / "g.zarr"
    fq.sliding_window(models, x, 8, 6, out=g, chunks=8, outputs=("labels",),
                      activation="softmax")
    with pytest.raises(ValueError, match="made for other outputs|different geometry"):
        fq.sliding_window(models, x, 8, 6, out=g, chunks=8, outputs=("labels", "std"),
                          activation="softmax")
    with pytest.raises(ValueError, match="different geometry"):
        fq.sliding_window(models, x, 8, 6, out=g, chunks=8, outputs=("labels",),
                          activation="softmax", tta="flips")


def _start(src, dst, slow_write_flag=None, slow_levels_flag=None):
    env = dict(os.environ, FQ_TEST_ENSEMBLE="1", PYTHONPATH=os.pathsep.join(
        p for p in [str(OOC), os.environ.get("PYTHONPATH", "")] if p))
    if slow_write_flag:
        env["FQ_TEST_SLOW_WRITE"] = str(slow_write_flag)
    if slow_levels_flag:  # (the first output's levels: the others are not written yet)
        env["FQ_TEST_SLOW_LEVELS"] = str(slow_levels_flag)
    return subprocess.Popen([sys.executable, str(OOC / "ooc_job.py"), str(src), str(dst)],
                            env=env)


@pytest.mark.parametrize("moment,name", [("a_third", "out.zarr"), ("mid_write", "out.zarr"),
                                         ("between_levels", "out.ome.zarr")])
def test_kill_9_then_resume_gives_every_output_exactly_once(moment, name, tmp_path):
    # out.ome.zarr: the four outputs as OME-Zarr with 2 levels each (ooc_job), killed
    # between a unit's level 0 and its first output's pyramid levels
    if str(OOC) not in sys.path:
        sys.path.insert(0, str(OOC))
    import ooc_job

    x = np.random.default_rng(0).standard_normal((1, 1, 48, 48, 48)).astype(np.float32)
    src, dst = tmp_path / "in.zarr", tmp_path / name
    z = zarr.create_array(store=str(src), shape=x.shape, dtype="float32",
                          chunks=(1, 1, 16, 16, 16))
    z[...] = x
    markers = tmp_path / f"{name}.fastquilt-progress"
    flag = tmp_path / "writing"
    proc = _start(src, dst, flag if moment == "mid_write" else None,
                  flag if moment == "between_levels" else None)
    deadline = time.time() + 120

    def ready():
        if moment in ("mid_write", "between_levels"):  # a unit written in part, not marked
            return flag.exists()
        return markers.exists() and len(list(markers.glob("u*"))) >= 9

    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    assert proc.poll() is None, "the job finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert progress_of(dst)["done"] < 27
    models = [ooc_job.SlowClasses(2.0), ooc_job.SlowClasses(3.0)]
    ome = {"levels": 2} if name.endswith(".ome.zarr") else {}
    got = fq.sliding_window(models, zarr.open_array(str(src)), 16, 12, batch_size=4,
                            weight="gaussian", out=dst, chunks=16, unit=16, **ooc_job.ENSEMBLE,
                            **ome)
    assert progress_of(dst)["done"] == 27
    fast = [lambda p, s=s: torch.cat([p * s + 1.0, 1.0 - p * s], 1) for s in (2.0, 3.0)]
    want = fq.sliding_window(fast, torch.from_numpy(x), 16, 12, weight="gaussian",
                             **ooc_job.ENSEMBLE)
    if ome:  # every level of every output too
        from tests.outofcore.ome_check import check_outputs

        check_outputs(dst, ooc_job.ENSEMBLE["outputs"], 2, {n: t.numpy() for n, t in
                                                              want.items()})
    else:
        _assert_same(got, want)
