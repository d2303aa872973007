"""The out-of-core run on a dask.distributed LocalCluster with 2 worker processes."""

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastquilt as fq
from fastquilt.distributed import ModelFactory, local_cluster
from fastquilt.outofcore import progress_of

from ..random_geometry import random_grid, random_units

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

TESTS = str(Path(__file__).parent)


@pytest.fixture(scope="module")
def test_models():
    # the workers (and this process) import the test models from tests/outofcore/ooc_job.py
    if TESTS not in sys.path:
        sys.path.insert(0, TESTS)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [TESTS] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


@pytest.fixture(scope="module")
def client(test_models):
    cluster = local_cluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def make_input(tmp_path, shape=(1, 1, 40, 44, 36)):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    z = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=shape,
                          chunks=(1, 1, 16, 16, 16), dtype="float32")
    z[...] = x
    return x, z


def reference(x, fn, window, step):
    return fq.sliding_window(fn, torch.from_numpy(x), window, step, weight="gaussian").numpy()


def test_workers_have_no_malloc_trim_threshold(client):
    envs = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert len(envs) == 2 and all(v is None for v in envs.values())


def test_distributed_equals_in_memory_and_builds_model_once_per_worker(client, tmp_path):
    x, z = make_input(tmp_path)
    log = tmp_path / "builds.log"
    import ooc_job

    y = fq.sliding_window(ModelFactory(ooc_job.counted_factory, str(log)), z, 12, 9,
                          batch_size=4, weight="gaussian", out=tmp_path / "o.zarr", chunks=8,
                          unit=16, client=client, progress=True)
    np.testing.assert_allclose(y[...], reference(x, lambda p: p * 2.0 + 1.0, 12, 9),
                               rtol=1e-5, atol=1e-5)
    builds = log.read_text().split()
    assert len(builds) == len(set(builds)) <= 2  # once per worker process
    info = progress_of(tmp_path / "o.zarr")
    assert info["done"] == info["total"]


def test_distributed_module_model_and_resume(client, tmp_path):
    x, z = make_input(tmp_path, shape=(2, 1, 32, 30, 28))
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 3, padding=1)
    out = tmp_path / "o.zarr"
    fq.sliding_window(net, z, 10, 8, weight="gaussian", out=out, chunks=8, unit=16,
                      client=client)
    marker_dir = tmp_path / "o.zarr.fastquilt-progress"
    for m in sorted(marker_dir.glob("u*"))[::3]:
        m.unlink()  # as if the run had died before these units
    y = fq.sliding_window(net, z, 10, 8, weight="gaussian", out=out, chunks=8, unit=16,
                          client=client)
    want = fq.sliding_window(net, torch.from_numpy(x), 10, 8, weight="gaussian")
    np.testing.assert_allclose(y[...], want.detach().numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="different geometry"):
        fq.sliding_window(net, z, 10, 6, out=out, chunks=8, unit=16, client=client)


def test_bands_in_worker_processes_equal_in_memory(client, tmp_path, monkeypatch):
    # 4 bands over 2 images (pieces pickled between processes, picked where their band ran)
    # with a model whose overlapping windows disagree
    x, z = make_input(tmp_path, shape=(2, 1, 40, 20, 18))
    import ooc_job

    from fastquilt.outofcore import bands as band_tasks

    monkeypatch.setattr(band_tasks, "band_count", lambda *a: 4)
    y = fq.sliding_window(ModelFactory(ooc_job.ramp_model), z, 10, 7, weight="gaussian",
                          out=tmp_path / "o.zarr", chunks=4, unit=8, client=client)
    want = fq.sliding_window(ooc_job.ramp, torch.from_numpy(x), 10, 7, weight="gaussian")
    np.testing.assert_allclose(y[...], want.numpy(), rtol=1e-5, atol=1e-5)


def test_worker_killed_mid_task_result_still_correct(client, tmp_path, monkeypatch):
    x, z = make_input(tmp_path, shape=(1, 1, 32, 32, 32))
    import ooc_job

    from fastquilt.outofcore import bands as band_tasks

    monkeypatch.setattr(band_tasks, "band_count", lambda *a: 2)  # (units of 8 planes: 2 bands)

    # (the fourth call of the model: the probe is the first, so a band's worker dies; the band
    # runs again on the other worker or the restarted one, rewriting what it had written)
    y = fq.sliding_window(ooc_job.KillOnce(str(tmp_path / "flag"), after=4), z, 12, 10,
                          weight="gaussian", out=tmp_path / "o.zarr", chunks=8, unit=8,
                          batch_size=2, client=client)
    assert (tmp_path / "flag").read_text() == "4"  # a worker did die, in a band
    np.testing.assert_allclose(y[...], reference(x, lambda p: p * 2.0 + 1.0, 12, 10),
                               rtol=1e-5, atol=1e-5)


def test_bands_and_owners_run_where_they_are_hinted(client, tmp_path, monkeypatch):
    # dask alone runs a task where most of its inputs' bytes are: every band where the job
    # and the model are, every owner where the larger pieces are. The loose hints put band b
    # on band_workers' worker b, and of the two owners of the units bands 0 and 1 share,
    # owner g with band g (owner_groups)
    x, z = make_input(tmp_path, shape=(1, 1, 32, 32, 32))
    import ooc_job

    from fastquilt.outofcore import bands as band_tasks

    monkeypatch.setattr(band_tasks, "band_count", lambda *a: 2)
    client.wait_for_workers(2, timeout=60)  # (an earlier test killed one: it restarts)
    slots = band_tasks.band_workers(client, 2)
    assert len(set(slots)) == 2
    with distributed.get_task_stream(client) as ts:
        y = fq.sliding_window(ModelFactory(ooc_job.double_plus_one), z, 12, 10,
                              weight="gaussian", out=tmp_path / "o.zarr", chunks=8, unit=8,
                              batch_size=2, client=client)
    ran = {}
    for t in ts.data:  # (keys: fastquilt-<kind>-<output>-<run id>-<index>)
        parts = str(t["key"]).split("-")
        if parts[1] in ("band", "own"):
            ran[(parts[1], int(parts[-1]))] = t["worker"]
    assert ran == {("band", 0): slots[0], ("band", 1): slots[1],
                   ("own", 0): slots[0], ("own", 1): slots[1]}, (ran, slots)
    np.testing.assert_allclose(y[...], reference(x, lambda p: p * 2.0 + 1.0, 12, 10),
                               rtol=1e-5, atol=1e-5)


def test_a_band_whose_only_worker_died_runs_on_its_restarted_self(test_models, tmp_path,
                                                                  monkeypatch):
    # The bands' placement hints are loose: the restarted worker has another address, and a
    # strict hint would leave the band waiting for ever
    from concurrent.futures import ThreadPoolExecutor

    import ooc_job

    from fastquilt.outofcore import bands as band_tasks

    x, z = make_input(tmp_path, shape=(1, 1, 32, 32, 32))
    monkeypatch.setattr(band_tasks, "band_count", lambda *a: 2)
    # (the pool outermost: on a timeout the client and the cluster close first, which ends
    # the waiting call)
    with ThreadPoolExecutor(1) as pool, \
            local_cluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as one:
        run = pool.submit(fq.sliding_window, ooc_job.KillOnce(str(tmp_path / "flag"), after=4),
                          z, 12, 10, weight="gaussian", out=tmp_path / "o.zarr", chunks=8,
                          unit=8, batch_size=2, client=one)
        y = run.result(timeout=180)  # (a strict hint: no result, the cluster closes)
    assert (tmp_path / "flag").read_text() == "4"
    np.testing.assert_allclose(y[...], reference(x, lambda p: p * 2.0 + 1.0, 12, 10),
                               rtol=1e-5, atol=1e-5)


def test_a_failed_task_cancels_the_rest_of_the_graph(client, tmp_path):
    # The error comes back to the caller and the graph's other tasks stop, instead of running
    # (and writing) on the cluster after the call has failed.
    x, z = make_input(tmp_path, shape=(1, 1, 32, 32, 32))
    import ooc_job

    with pytest.raises(RuntimeError, match="model failed on this batch"):
        fq.sliding_window(ooc_job.FailOnWindowsFrom(str(tmp_path / "flag")), z, 12, 10,
                          out=tmp_path / "o.zarr", chunks=8, unit=16, client=client)
    # (the cancellation reaches the scheduler a moment after the call has raised)
    deadline = time.monotonic() + 30
    while left := client.run_on_scheduler(
            lambda dask_scheduler: [k for k in dask_scheduler.tasks if "fastquilt-" in str(k)]):
        assert time.monotonic() < deadline, f"tasks of the failed run still there: {left}"
        time.sleep(0.05)


def test_cli_infer_with_scheduler(client, tmp_path):
    from fastquilt.cli import main

    x, _ = make_input(tmp_path, shape=(1, 1, 24, 24, 24))
    rc = main(["infer", "--model", "ooc_job:double_plus_one", "--input",
               str(tmp_path / "in.zarr"), "--output", str(tmp_path / "o.zarr"), "--window",
               "10", "--step", "8", "--chunks", "8", "--unit", "16", "--scheduler",
               client.scheduler.address])
    assert rc == 0
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "o.zarr"))[...],
                               reference(x, lambda p: p * 2.0 + 1.0, 10, 8),
                               rtol=1e-5, atol=1e-5)


def test_runs_with_the_same_output_name_do_not_share_tasks(client, tmp_path):
    # A live task of another run whose output has the same name (another folder's o.zarr):
    # dask hands a new task with the same key that task's result, so keys must be unique
    # per call (they were named after the output: zeros or errors, flaky in CI).
    other = client.submit(lambda: {"not": "this run's pieces"}, key="fastquilt-band-o.zarr-0",
                          pure=False)
    other.result()
    x, z = make_input(tmp_path, shape=(1, 1, 24, 24, 24))
    import ooc_job

    y = fq.sliding_window(ModelFactory(ooc_job.double_plus_one), z, 10, 8, out=tmp_path / "o.zarr",
                          chunks=8, unit=8, client=client)
    np.testing.assert_allclose(y[...], reference(x, lambda p: p * 2.0 + 1.0, 10, 8),
                               rtol=1e-5, atol=1e-5)
    del other


@settings(max_examples=min(settings().max_examples, 6))
@given(seed=st.integers(0, 2**31 - 1))
def test_distributed_equals_in_memory_for_random_geometries(client, seed, tmp_path_factory):
    # The band/owner graph (bands of unit planes, owners adding their pieces) over random shapes,
    # windows, steps, chunks and units, against the in-memory result. One draw (a seed):
    # the client's threads use `random` meanwhile, which hypothesis flags during draws.
    rng = np.random.default_rng(seed)
    S, W, step, _ = random_grid(rng, 30, 14, min_size=3)
    chunk, unit = random_units(rng, S)
    x = np.random.default_rng(1).standard_normal((2, 1, *S)).astype(np.float32)
    out = tmp_path_factory.mktemp("dist") / "o.zarr"
    import ooc_job

    y = fq.sliding_window(ModelFactory(ooc_job.double_plus_one), x, W, step, 4, "gaussian",
                          out=out, chunks=chunk, unit=unit, client=client)
    want = fq.sliding_window(lambda p: p * 2.0 + 1.0, torch.from_numpy(x), W, step, 4,
                             "gaussian")
    np.testing.assert_allclose(y[...], want.numpy(), rtol=1e-5, atol=1e-5)


def test_resume_switches_between_local_and_cluster_with_the_same_model(client, tmp_path):
    import ooc_job

    x, z = make_input(tmp_path)
    want = fq.sliding_window(lambda p: p * 2.0 + 1.0, torch.from_numpy(x), 12, 9)
    chunk = ("c", "0", "0", "1", "1", "1")
    for first, second in (("local", "cluster"), ("cluster", "local")):
        out = tmp_path / f"{first}-first.zarr"
        for i, mode in enumerate((first, second)):  # the second run resumes the first
            if i:
                out.joinpath(*chunk).unlink()  # one unit to compute again
            model = ooc_job.double_plus_one() if mode == "local" else \
                ModelFactory(ooc_job.double_plus_one)
            y = fq.sliding_window(model, z, 12, 9, out=out, chunks=12,
                                  client=client if mode == "cluster" else None)
        np.testing.assert_allclose(y[...], want.numpy(), rtol=1e-5, atol=1e-5)
    # a model file through the command line, with and without --scheduler
    from fastquilt.cli import main

    ooc_job.export_model(torch.nn.Conv3d(1, 1, 3, padding=1), tmp_path / "m.pt2",
                         (2, 1, 12, 12, 12))
    args = ["infer", "--model", str(tmp_path / "m.pt2"), "--input", str(tmp_path / "in.zarr"),
            "--output", str(tmp_path / "cli.zarr"), "--window", "12", "--step", "9",
            "--chunks", "12"]
    assert main(args) == 0
    (tmp_path / "cli.zarr").joinpath(*chunk).unlink()
    assert main(args + ["--scheduler", client.scheduler.address]) == 0


def test_ome_zarr_pyramid_is_written_by_the_owners_and_resumes(client, tmp_path):
    import ooc_job

    from .ome_check import reference_levels, validate

    x, z = make_input(tmp_path)
    out = tmp_path / "pred.ome.zarr"
    want = reference(x, lambda p: p * 2.0 + 1.0, 12, 9)
    args = dict(out=str(out), chunks=8, unit=16, levels=2, voxel_size=(1.0, 0.5, 0.5),
                voxel_unit="micrometer")
    fq.sliding_window(ModelFactory(ooc_job.double_plus_one), z, 12, 9, client=client, **args)
    (out / "1" / "c" / "0" / "0" / "1" / "1" / "0").unlink()  # one unit's level 1: again
    y = fq.sliding_window(ModelFactory(ooc_job.double_plus_one), z, 12, 9, client=client,
                          **args)
    np.testing.assert_allclose(y[...], want, rtol=1e-5, atol=1e-5)
    levels = [zarr.open_array(str(out / str(lv)))[...] for lv in (0, 1, 2)]
    for got, ref in zip(levels[1:], reference_levels(levels[0], 2)):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    validate(out)


def test_local_gpu_cluster_gives_each_worker_its_own_gpu(tmp_path):
    # On this CPU machine the devices are names only: each worker process must see its own
    # CUDA_VISIBLE_DEVICES (its GPU as cuda:0), run single-threaded, without
    # MALLOC_TRIM_THRESHOLD_, and run the job like any cluster.
    from fastquilt.distributed import local_gpu_cluster

    with local_gpu_cluster(["3", "GPU-5"], dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        env = c.run(lambda: (os.environ.get("CUDA_VISIBLE_DEVICES"),
                             os.environ.get("MALLOC_TRIM_THRESHOLD_")))
        assert sorted(env.values()) == [("3", None), ("GPU-5", None)]
        assert sorted(c.nthreads().values()) == [1, 1]
        x, src = make_input(tmp_path, (1, 1, 20, 24, 18))
        got = fq.sliding_window(lambda p: 2 * p, src, 8, 6, out=str(tmp_path / "o.zarr"),
                                client=c, device="cpu")
        want = fq.sliding_window(lambda p: 2 * p, torch.from_numpy(x), 8, 6)
        np.testing.assert_allclose(np.asarray(got[...]), want.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("devices", [[], ["0", "0"], ["1", ""]])
def test_local_gpu_cluster_refuses_bad_devices(devices):
    from fastquilt.distributed import local_gpu_cluster

    with pytest.raises(ValueError, match="devices"):
        local_gpu_cluster(devices)


def test_ome_zarr_with_several_outputs_is_written_by_the_owners(client, tmp_path):
    # an ensemble of two factories with flips and softmax: mean, std and labels into
    # x.ome.zarr on the cluster; level 0 equals a run into a plain zarr group in one
    # process, every level of every output the numpy reference downsample of its level 0
    import ooc_job

    from .ome_check import check_outputs

    x, z = make_input(tmp_path, (1, 1, 36, 32, 40))
    models = [ModelFactory(ooc_job.two_classes), ModelFactory(ooc_job.two_classes_b)]
    kw = dict(outputs=("mean", "std", "labels"), tta="flips", activation="softmax",
              chunks=8, unit=16)
    plain = fq.sliding_window(models, z, 12, 9, out=str(tmp_path / "plain.zarr"), **kw)
    out = tmp_path / "x.ome.zarr"
    got = fq.sliding_window(models, z, 12, 9, out=str(out), client=client, levels=2, **kw)
    assert sorted(got.group_keys()) == ["labels", "std"]
    want = {n: plain[n][...] for n in kw["outputs"]}
    # (the owners merge the bands' moments of the units they share: the mean may differ
    # from the plain run's in its last bits, so the labels are the argmax of this mean, and
    # equal to the plain run's wherever the two classes are not within 1e-4)
    mean = zarr.open_array(str(out / "0"))[...]
    clear = np.abs(mean[:, 0] - mean[:, 1]) > 1e-4
    np.testing.assert_array_equal(mean.argmax(1)[clear], want["labels"][:, 0][clear])
    want["labels"] = mean.argmax(1)[:, None]
    check_outputs(out, kw["outputs"], 2, want)
    assert progress_of(out)["done"] == progress_of(out)["total"]
