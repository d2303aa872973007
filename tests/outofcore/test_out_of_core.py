"""Out-of-core sliding window into zarr: equality with the in-memory path, each window once,
kill and resume, refusals, write errors."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastquilt as fq
from fastquilt.outofcore import progress_of
from fastquilt.outofcore.job import Layout
from fastquilt.outofcore.slab import Slab, completion_order
from fastquilt.outofcore.units import Units
from fastquilt.reductions import Reduction

from ..random_geometry import random_grid, random_units

zarr = pytest.importorskip("zarr")


def make_input(tmp_path, shape=(2, 1, 40, 38, 36), chunks=(1, 1, 16, 16, 16)):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    z = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=shape, chunks=chunks,
                          dtype="float32")
    z[...] = x
    return x, z


class Counting:
    def __init__(self, fn):
        self.fn, self.windows = fn, 0

    def __call__(self, p):
        self.windows += p.shape[0]
        return self.fn(p)


def test_zarr_to_zarr_equals_in_memory_and_runs_each_window_once(tmp_path):
    x, z = make_input(tmp_path)
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 3, 3, padding=1)
    model = Counting(net)
    y = fq.sliding_window(model, z, 12, 9, batch_size=5, weight="gaussian",
                          out=tmp_path / "out.zarr", chunks=8, unit=16, progress=True)
    q = fq.Quilt(x.shape[2:], 12, 9)
    assert model.windows == 2 * q.num_windows
    ref = fq.sliding_window(net, torch.from_numpy(x), 12, 9, batch_size=5, weight="gaussian")
    assert y.shape == (2, 3, 40, 38, 36) and y.dtype == np.float32
    np.testing.assert_allclose(y[...], ref.numpy(), rtol=1e-5, atol=1e-5)
    info = progress_of(tmp_path / "out.zarr")
    assert info["done"] == info["total"] == 2 * 3 * 3 * 3
    again = Counting(net)  # a finished output: resuming runs nothing
    fq.sliding_window(again, z, 12, 9, batch_size=5, weight="gaussian",
                      out=tmp_path / "out.zarr", chunks=8, unit=16)
    assert again.windows == 0


def test_memmap_and_2d_inputs(tmp_path):
    x = np.random.default_rng(1).standard_normal((1, 2, 70, 90)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    y = fq.sliding_window(lambda p: p[:, :1] * 3, mm, (20, 24), (15, 20), batch_size=7,
                          weight="hann", out=str(tmp_path / "o.zarr"), chunks=(16, 32), unit=32,
                          out_dtype="float64")
    ref = fq.sliding_window(lambda p: p[:, :1] * 3, torch.from_numpy(x), (20, 24), (15, 20),
                            batch_size=7, weight="hann")
    assert y.dtype == np.float64
    np.testing.assert_allclose(y[...], ref.double().numpy(), rtol=1e-5, atol=1e-5)


def test_subnormal_weight_sum_gives_the_in_memory_result_not_inf(tmp_path):
    # The image corner is covered only by the first window's corner weight, a subnormal: the
    # out-of-core division must clamp like the C++ one (was 1 / wsum -> inf).
    x = np.random.default_rng(3).standard_normal((1, 1, 24, 24)).astype(np.float32)
    w = torch.ones(8, 8)
    w[0, 0] = 1e-40
    y = fq.sliding_window(lambda p: p, zarr.array(x), 8, 6, weight=w,
                          out=tmp_path / "o.zarr", chunks=8, unit=8)
    ref = fq.sliding_window(lambda p: p, torch.from_numpy(x), 8, 6, weight=w)
    assert np.isfinite(y[...]).all()
    np.testing.assert_array_equal(y[...], ref.numpy())


def test_tensor_input_that_requires_grad(tmp_path):
    # a tensor is read window by window like any array (was: "Can't call numpy() on Tensor
    # that requires grad"; a CUDA tensor failed the same way)
    x = torch.randn(1, 1, 24, 24, 24, requires_grad=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    y = fq.sliding_window(lambda p: p, x.to(dev), 8, 6, out=tmp_path / "o.zarr", chunks=8,
                          unit=8, weight="flat")
    np.testing.assert_allclose(y[...], x.detach().numpy(), rtol=1e-6, atol=1e-6)
    w = (torch.rand(8, 8, 8) + 0.5).to(dev).requires_grad_()  # a trainable weight tensor
    y = fq.sliding_window(lambda p: p, x.to(dev), 8, 6, weight=w, out=tmp_path / "w.zarr",
                          chunks=8, unit=8)
    np.testing.assert_allclose(y[...], x.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_dask_input(tmp_path):
    da = pytest.importorskip("dask.array")
    x = np.random.default_rng(2).standard_normal((1, 1, 30, 30, 30)).astype(np.float32)
    y = fq.sliding_window(lambda p: p, da.from_array(x, chunks=(1, 1, 15, 15, 15)), 10, 8,
                          out=tmp_path / "o.zarr", chunks=10, unit=10, weight="flat")
    np.testing.assert_allclose(y[...], x, rtol=1e-6, atol=1e-6)


def test_kill_and_resume_recomputes_only_unfinished_units(tmp_path):
    x, _ = make_input(tmp_path, shape=(1, 1, 48, 48, 48))
    src, dst = tmp_path / "in.zarr", tmp_path / "out.zarr"
    # keep the caller's PYTHONPATH (where zarr and fastquilt may be installed)
    paths = [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "ooc_job.py"),
                             str(src), str(dst)], env=env)
    marker_dir = tmp_path / "out.zarr.fastquilt-progress"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if marker_dir.exists() and len(list(marker_dir.glob("u*"))) >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the job finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = progress_of(dst)["done"]
    assert 4 <= done_before < 27  # 3x3x3 units of 16^3

    model = Counting(lambda p: p * 2.0 + 1.0)
    y = fq.sliding_window(model, zarr.open_array(str(src)), 16, 12, batch_size=4,
                          weight="gaussian", out=dst, chunks=16, unit=16)
    q = fq.Quilt((48, 48, 48), 16, 12)
    assert 0 < model.windows < q.num_windows  # only windows touching unfinished units
    ref = fq.sliding_window(lambda p: p * 2.0 + 1.0, torch.from_numpy(x), 16, 12,
                            weight="gaussian")
    np.testing.assert_allclose(y[...], ref.numpy(), rtol=1e-5, atol=1e-5)  # nothing doubled
    assert progress_of(dst)["done"] == 27


def test_removing_the_output_redoes_the_run(tmp_path):
    # Users delete the output to redo a run and leave the progress folder beside it; its
    # markers must not skip units that are gone (was: FileNotFoundError when every unit was
    # marked; zeros in the marked units after a partial run).
    import shutil

    x, z = make_input(tmp_path, shape=(1, 1, 24, 24, 24))
    out = tmp_path / "o.zarr"
    fq.sliding_window(lambda p: p, z, 8, 6, out=out, chunks=8, unit=8, weight="flat")
    shutil.rmtree(out)
    y = fq.sliding_window(lambda p: p, z, 8, 6, out=out, chunks=8, unit=8, weight="flat")
    np.testing.assert_allclose(y[...], x, rtol=1e-6, atol=1e-6)
    (tmp_path / "o.zarr.fastquilt-progress" / "u5").unlink()  # a partial run, then removed
    shutil.rmtree(out)
    y = fq.sliding_window(lambda p: p, z, 8, 6, out=out, chunks=8, unit=8, weight="flat")
    np.testing.assert_allclose(y[...], x, rtol=1e-6, atol=1e-6)
    assert progress_of(out)["done"] == 27


def test_refusals_and_bad_input(tmp_path):
    x, z = make_input(tmp_path, shape=(1, 1, 24, 24, 24))
    out = tmp_path / "o.zarr"
    fq.sliding_window(lambda p: p, z, 8, 6, out=out, chunks=8, unit=8)
    with pytest.raises(ValueError, match="different geometry"):
        fq.sliding_window(lambda p: p, z, 8, 4, out=out, chunks=8, unit=8)
    with pytest.raises(ValueError, match="different geometry"):
        fq.sliding_window(lambda p: p, z, 8, 6, out=out, chunks=8, unit=8, out_dtype="float16")
    (tmp_path / "o.zarr.fastquilt-progress" / "u0").unlink()  # one unit left to redo
    # another model: resuming would mix two models' results in one array
    with pytest.raises(ValueError, match="made with another model .*remove this one"):
        fq.sliding_window(lambda p: p * 2, z, 8, 6, out=out, chunks=8, unit=8)
    # a callable whose identity cannot be told is allowed to resume; its channels are checked
    with pytest.raises(ValueError, match="channels but .* was made for 1"):
        fq.sliding_window(Counting(lambda p: p.repeat(1, 2, 1, 1, 1)), z, 8, 6, out=out,
                          chunks=8, unit=8)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="not a zarr array"):
        fq.sliding_window(lambda p: p, z, 8, 6, out=other)
    with pytest.raises(ValueError, match="model output must have shape"):
        fq.sliding_window(lambda p: p[..., :4], z, 8, 6, out=tmp_path / "o2.zarr")
    with pytest.raises(TypeError, match="out_dtype must be one of"):  # a mean truncated to 0
        fq.sliding_window(lambda p: p, z, 8, 6, out=tmp_path / "o3.zarr", out_dtype="int32")
    with pytest.raises(TypeError, match="bfloat16 cannot be stored in zarr"):
        fq.sliding_window(lambda p: p, z, 8, 6, out=tmp_path / "o3.zarr",
                          out_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="device='tpu' is not a device"):
        fq.sliding_window(lambda p: p, z, 8, 6, out=tmp_path / "o3.zarr", device="tpu")
    with pytest.raises(ValueError, match=r"x has no images \(N = 0\)"):  # was FileNotFound
        fq.sliding_window(lambda p: p, x[:0], 8, 6, out=tmp_path / "o3.zarr")
    assert not (tmp_path / "o3.zarr").exists()  # refused before anything is written
    with pytest.raises(ValueError, match="multiple of chunks"):
        fq.sliding_window(lambda p: p, z, 8, 6, out=tmp_path / "o3.zarr", chunks=8, unit=12)
    with pytest.raises(ValueError, match="give out="):
        fq.sliding_window(lambda p: p, z, 8, 6)
    with pytest.raises((FileNotFoundError, ValueError, KeyError)):
        zarr.open_array(str(tmp_path / "missing.zarr"), mode="r")


def test_write_error_is_raised_and_unit_not_marked(tmp_path, monkeypatch):
    x, z = make_input(tmp_path, shape=(1, 1, 24, 24, 24))
    out = tmp_path / "o.zarr"
    real = zarr.Array.__setitem__
    calls = {"n": 0}

    def flaky(self, key, value):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(self, key, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", flaky)
    with pytest.raises(RuntimeError, match="No space left on device.*not marked done"):
        fq.sliding_window(lambda p: p, z, 8, 6, out=out, chunks=8, unit=8, weight="flat")
    done = progress_of(out)["done"]
    assert done < 27
    monkeypatch.setattr(zarr.Array, "__setitem__", real)
    y = fq.sliding_window(lambda p: p, z, 8, 6, out=out, chunks=8, unit=8, weight="flat")
    np.testing.assert_allclose(y[...], x, rtol=1e-6, atol=1e-6)


def test_cli_infer_exported_program_and_factory(tmp_path, monkeypatch, capsys):
    from fastquilt.cli import main

    from .ooc_job import export_model

    x, _ = make_input(tmp_path, shape=(1, 1, 24, 26, 22))
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    export_model(net, tmp_path / "model.pt2", (2, 1, 10, 10, 10))
    rc = main(["infer", "--model", str(tmp_path / "model.pt2"), "--input",
               str(tmp_path / "in.zarr"), "--output", str(tmp_path / "o.zarr"), "--window",
               "10", "--step", "8", "--chunks", "8", "--unit", "16"])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    want = fq.sliding_window(net, torch.from_numpy(x), 10, 8, weight="gaussian")
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "o.zarr"))[...],
                               want.detach().numpy(), rtol=1e-5, atol=1e-5)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    rc = main(["infer", "--model", "ooc_job:double_plus_one", "--input",
               str(tmp_path / "in.zarr"), "--output", str(tmp_path / "o2.zarr"),
               "--window", "10", "--step", "8"])
    assert rc == 0
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "o2.zarr"))[...],
                               fq.sliding_window(lambda p: p * 2 + 1, torch.from_numpy(x), 10,
                                                 8, weight="gaussian").numpy(),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(SystemExit, match="does not exist"):
        main(["infer", "--model", "ooc_job:double_plus_one", "--input",
              str(tmp_path / "missing.zarr"), "--output", str(tmp_path / "o3.zarr"),
              "--window", "10", "--step", "8"])
    junk = tmp_path / "junk.zarr"
    junk.mkdir()
    (junk / "zarr.json").write_text("not json")
    with pytest.raises(SystemExit, match="cannot read input"):
        main(["infer", "--model", "ooc_job:double_plus_one", "--input", str(junk),
              "--output", str(tmp_path / "o4.zarr"), "--window", "10", "--step", "8"])
    with pytest.raises(SystemExit, match="cannot import model factory"):
        main(["infer", "--model", "no_such_module:f", "--input", str(tmp_path / "in.zarr"),
              "--output", str(tmp_path / "o5.zarr"), "--window", "10", "--step", "8"])
    rc = main(["infer", "--model", "ooc_job:double_plus_one", "--input",
               str(tmp_path / "in.zarr"), "--output", str(tmp_path / "o.zarr"),
               "--window", "10", "--step", "6"])  # different geometry into an existing output
    assert rc == 2 and "different geometry" in capsys.readouterr().err
    rc = main(["infer", "--model", "ooc_job:double_plus_one", "--input",
               str(tmp_path / "in.zarr"), "--output", str(tmp_path / "o6.zarr"),
               "--window", "10", "--step", "8", "--device", "tpu"])
    assert rc == 2 and "device='tpu' is not a device" in capsys.readouterr().err
    # a torch.export program (dynamic batch: the last batch of windows is smaller)
    plain = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    torch.export.save(torch.export.export(plain, (torch.randn(2, 1, 10, 10, 10),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)),
                      str(tmp_path / "model.pt2"))
    rc = main(["infer", "--model", str(tmp_path / "model.pt2"), "--input",
               str(tmp_path / "in.zarr"), "--output", str(tmp_path / "o7.zarr"), "--window",
               "10", "--step", "8", "--batch-size", "5"])
    assert rc == 0
    with torch.no_grad():
        want = fq.sliding_window(plain, torch.from_numpy(x), 10, 8, weight="gaussian")
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "o7.zarr"))[...], want.numpy(),
                               rtol=1e-5, atol=1e-5)


def test_sharded_output_units_hold_whole_shards(tmp_path):
    x, z = make_input(tmp_path, shape=(1, 1, 32, 32, 32))
    y = fq.sliding_window(lambda p: p, z, 8, 6, out=tmp_path / "s.zarr", chunks=8, shards=16,
                          unit=16, weight="flat")
    assert y.shards == (1, 1, 16, 16, 16)
    np.testing.assert_allclose(y[...], x, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of shards"):
        fq.sliding_window(lambda p: p, z, 8, 6, out=tmp_path / "t.zarr", chunks=8, shards=16,
                          unit=8)


@settings(max_examples=min(settings().max_examples, 25))
@given(seed=st.integers(0, 2**31 - 1))
def test_out_of_core_equals_in_memory_for_random_geometries_and_units(seed, tmp_path_factory):
    # Units, chunks and the slab's sliding window against the in-memory result, over random
    # 2D/3D shapes, windows, steps, chunk and unit sizes (units are whole chunks); then a
    # resume after random units were lost (their marker gone, their data overwritten) must
    # redo exactly those.
    rng = np.random.default_rng(seed)
    S, W, step, _ = random_grid(rng, 30, 14, min_size=3)
    chunk, unit = random_units(rng, S)
    N, C = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    weight = ["flat", "gaussian", "hann"][int(rng.integers(0, 3))]
    batch = int(rng.integers(1, 10))
    x = rng.standard_normal((N, C, *S)).astype(np.float32)
    out = tmp_path_factory.mktemp("ooc") / "o.zarr"

    def model(p):
        return p[:, :1] * 2 - 1

    y = fq.sliding_window(model, x, W, step, batch, weight, out=out, chunks=chunk, unit=unit)
    want = fq.sliding_window(model, torch.from_numpy(x), W, step, batch, weight).numpy()
    np.testing.assert_allclose(y[...], want, rtol=1e-5, atol=1e-5)
    info = progress_of(out)
    assert info["done"] == info["total"]
    lost = rng.choice(info["total"], size=int(rng.integers(1, info["total"] + 1)), replace=False)
    units = Units(N, S, unit)
    for uid in lost.tolist():
        (out.parent / "o.zarr.fastquilt-progress" / f"u{uid}").unlink()
        n, box = units.box(uid)
        y[(n, slice(None), *box)] = np.nan
    y = fq.sliding_window(model, x, W, step, batch, weight, out=out, chunks=chunk, unit=unit)
    np.testing.assert_allclose(y[...], want, rtol=1e-5, atol=1e-5)
    assert progress_of(out)["done"] == info["total"]


@pytest.mark.parametrize("c_out", [1, 2, 3, 5])
def test_model_changing_the_channel_count_equals_in_memory(c_out, tmp_path):
    # Units at the far edge are smaller: with as many output channels as such a unit has
    # planes, a unit's (C_out, *unit) sums and (*unit) weights read as (N, C, *S) and (N, *S)
    # would give wrong means in the last unit plane.
    x = torch.randn(2, 2, 19, 23, 29)

    def model(p):
        return torch.cat([p.sum(1, keepdim=True) * (k + 1) for k in range(c_out)], 1)

    want = fq.sliding_window(model, x, (8, 10, 12), (5, 6, 8), 4)
    y = fq.sliding_window(model, x, (8, 10, 12), (5, 6, 8), 4, out=str(tmp_path / "o.zarr"),
                          chunks=(8, 8, 8))
    torch.testing.assert_close(torch.from_numpy(y[...]), want, rtol=1e-5, atol=1e-5)


def test_cli_clear_errors_for_paths_models_and_stray_files(tmp_path, monkeypatch, capsys):
    from fastquilt.cli import main

    make_input(tmp_path, shape=(1, 1, 16, 16, 16))
    args = ["--input", str(tmp_path / "in.zarr"), "--window", "8", "--step", "8"]
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    # a torch.save checkpoint is not loaded (unpickling runs code; a state dict has no model)
    torch.save(torch.nn.Conv3d(1, 1, 3).state_dict(), tmp_path / "weights.pt")
    rc = main(["infer", "--model", str(tmp_path / "weights.pt"), "--output",
               str(tmp_path / "o1.zarr"), *args])
    assert rc == 2 and "is a torch.save checkpoint" in capsys.readouterr().err
    # a model file whose path holds a ':' is a file, not module:function
    odd = tmp_path / "run:1"
    odd.mkdir()
    from .ooc_job import export_model

    export_model(torch.nn.Identity(), odd / "m.pt")  # (its contents say what it is)
    assert main(["infer", "--model", str(odd / "m.pt"), "--output", str(tmp_path / "o2.zarr"),
                 *args]) == 0
    with pytest.raises(SystemExit, match="does not exist"):
        main(["infer", "--model", str(odd / "missing.pt"), "--output",
              str(tmp_path / "o3.zarr"), *args])
    # an output in a folder that cannot be written (a file in the way: unwritable as root
    # too, where a folder's mode bits are not enforced)
    (tmp_path / "not_a_folder").write_text("")
    rc = main(["infer", "--model", "ooc_job:double_plus_one", "--output",
               str(tmp_path / "not_a_folder" / "o.zarr"), *args])
    assert rc == 2 and "writable" in capsys.readouterr().err


def test_progress_folder_problems_are_clear(tmp_path):
    _, z = make_input(tmp_path, shape=(1, 1, 16, 16, 16))
    out = tmp_path / "o.zarr"
    (tmp_path / "o.zarr.fastquilt-progress").write_text("a file in the way")
    with pytest.raises(ValueError, match="is a file, where fastquilt keeps the done-markers"):
        fq.sliding_window(lambda p: p, z, 8, 8, out=out, chunks=8)
    (tmp_path / "o.zarr.fastquilt-progress").unlink()
    fq.sliding_window(lambda p: p, z, 8, 8, out=out, chunks=8)
    (tmp_path / "o.zarr.fastquilt-progress" / "u-notes.txt").write_text("mine")
    (tmp_path / "o.zarr.fastquilt-progress" / "unrelated").write_text("mine")
    assert progress_of(out)["done"] == progress_of(out)["total"]  # stray files are no markers
    fq.sliding_window(lambda p: p, z, 8, 8, out=out, chunks=8)


def test_out_of_core_arguments_like_in_memory(tmp_path):
    x, z = make_input(tmp_path, shape=(1, 1, 20, 20, 20))
    # allow_gaps reaches the out-of-core run (it was dropped, and the error asked for it)
    y = fq.sliding_window(lambda p: p, z, 6, 9, out=tmp_path / "g.zarr", chunks=8,
                          allow_gaps=True, fill_value=-1.0, weight="flat")
    want = fq.sliding_window(lambda p: p, torch.from_numpy(x), 6, 9, allow_gaps=True,
                             fill_value=-1.0, weight="flat")
    np.testing.assert_allclose(y[...], want.numpy(), rtol=1e-6, atol=1e-6)
    # numpy integers are ints; integer model outputs are refused in both paths
    fq.sliding_window(lambda p: p, z, 8, 6, np.int64(4), out=tmp_path / "n.zarr", chunks=8)
    for target in (torch.from_numpy(x), z):
        kw = {"out": tmp_path / f"i{type(target).__name__}.zarr"} if target is z else {}
        with pytest.raises(TypeError, match="model output must be floating point"):
            fq.sliding_window(lambda p: p.int(), target, 8, 6, **kw)


@pytest.mark.parametrize("batch", [1, 5, 16])
def test_units_leave_the_slab_with_the_batch_of_their_last_window(batch):
    # completion_order against a brute force over every window's units; then the slab hands
    # every unit over with the batch that adds its last window, not with its plane
    layout = Layout((1, 1, 40, 24, 32), 8, 6, "flat", None, 0.1, chunks=8, unit=8, shards=None)
    todo = list(range(layout.origins.shape[0]))
    last = {}
    for p, k in enumerate(todo):
        for uid in layout.units.touched(layout.origins[k].tolist(), layout.window):
            last[uid] = p
    positions, uids = completion_order(layout, todo)
    assert dict(zip(uids.tolist(), positions.tolist())) == last
    assert positions.tolist() == sorted(positions.tolist())
    preds = torch.randn(len(todo), 1, 8, 8, 8, generator=torch.Generator().manual_seed(batch))
    by_plane = Slab(layout, Reduction(("mean",), 1), set())  # units cut with their plane
    want = {}
    for b in range(0, len(todo), batch):
        want.update(by_plane.add(todo[b:b + batch], preds[b:b + batch]))
    want.update(by_plane.flush_image())
    slab = Slab(layout, Reduction(("mean",), 1), set(), todo=todo)
    handed = {}
    for b in range(0, len(todo), batch):
        for uid, outputs in slab.add(todo[b:b + batch], preds[b:b + batch]):
            assert uid not in handed
            handed[uid] = b
            assert torch.equal(outputs["mean"], want[uid]["mean"])  # the same bits
    assert not slab.flush_image()
    assert handed == {uid: p - p % batch for uid, p in last.items()}
    assert set(handed) == set(want)
    slab = Slab(layout, Reduction(("mean",), 1), set(), todo=todo)
    with pytest.raises(RuntimeError, match="not the next ones"):  # out of order: refused
        slab.add(todo[1:2], preds[1:2])


@pytest.mark.parametrize("shape,window,step,unit", [
    ((1, 1, 6, 7), (2, 6), (5, 6), (1, 2)),  # a unit plane wholly past the slab
    ((1, 1, 10, 4), (2, 4), (7, 4), (3, 4)),  # a unit plane partly past it
    ((2, 1, 23, 9, 5), (3, 9, 5), (9, 1, 1), (2, 3, 5)),
])
def test_gaps_wider_than_the_slab_along_axis_0_equal_in_memory(shape, window, step, unit,
                                                               tmp_path):
    # with allow_gaps, the next window along axis 0 can start past what the slab holds: the
    # unit planes it skips are cut from what the slab holds and the fill value elsewhere
    x = torch.randn(shape)
    want = fq.sliding_window(lambda p: p * 2, x, window, step, 3, "flat", allow_gaps=True,
                             fill_value=-7.0)
    y = fq.sliding_window(lambda p: p * 2, x.numpy(), window, step, 3, "flat",
                          allow_gaps=True, fill_value=-7.0, out=tmp_path / "o.zarr",
                          chunks=unit, unit=unit)
    np.testing.assert_allclose(y[...], want.numpy(), rtol=1e-6, atol=1e-6)


@settings(max_examples=min(settings().max_examples, 20))
@given(seed=st.integers(0, 2**31 - 1))
def test_zarr_input_chunks_of_any_depth_equal_in_memory(seed, tmp_path_factory):
    # The batcher copies each window's planes from the input blocks it spans (whole input
    # chunks along axis 0): chunks shallower than the window (a window over 2 or more blocks),
    # deeper, not dividing the image (a short last block), with gaps between windows
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(seed)
    S, W, step, _ = random_grid(rng, 30, 14, min_size=3, gaps=2)
    N, C = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    depth = int(rng.integers(1, S[0] + 1))
    folder = tmp_path_factory.mktemp("zin")
    x = rng.standard_normal((N, C, *S)).astype(np.float32)
    z = zarr.create_array(store=str(folder / "in.zarr"), shape=x.shape, dtype="float32",
                          chunks=(1, C, depth, *S[1:]))
    z[...] = x
    batch = int(rng.integers(1, 10))

    def model(p):
        return p[:, :1] * 3 - p[:, -1:]

    want = fq.sliding_window(model, torch.from_numpy(x), W, step, batch, "hann",
                             allow_gaps=True, fill_value=-1.0).numpy()
    y = fq.sliding_window(model, z, W, step, batch, "hann", allow_gaps=True, fill_value=-1.0,
                          out=folder / "o.zarr")
    np.testing.assert_allclose(y[...], want, rtol=1e-5, atol=1e-5)
