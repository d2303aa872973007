"""The CLI's ensemble flags and the out-of-core memory budget: the plan fits the bound (a
tighter bound gives a shallower unit), a bound too small is refused with the parts named,
sizes parse, bad flags give one line and exit 2."""

from pathlib import Path

import numpy as np
import pytest
import torch

import fastquilt as fq
from fastquilt.cli import main
from fastquilt.outofcore import budget

zarr = pytest.importorskip("zarr")
OOC = Path(__file__).parents[1] / "outofcore"


def _input(tmp_path, shape=(1, 1, 24, 26, 22)):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    z = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=shape, dtype="float32",
                          chunks=(1, 1, 8, 8, 8))
    z[...] = x
    return x


def test_cli_ensemble_with_flips_and_class_outputs(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(OOC))
    import ooc_job

    x = _input(tmp_path)
    args = ["infer", "--model", "ooc_job:two_classes", "--model", "ooc_job:two_classes_b",
            "--input", str(tmp_path / "in.zarr"), "--window", "10", "--step", "8",
            "--chunks", "8", "--tta", "flips", "--activation", "softmax"]
    rc = main(args + ["--output", str(tmp_path / "o.zarr"), "--outputs", "labels", "entropy",
                      "std", "--max-memory", "1G"])
    out = capsys.readouterr().out
    assert rc == 0 and "o.zarr/labels" in out and "o.zarr/std" in out
    want = fq.sliding_window([ooc_job.two_classes(), ooc_job.two_classes_b()],
                             torch.from_numpy(x), 10, 8, outputs=("labels", "entropy", "std"),
                             tta="flips", activation="softmax")
    g = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")
    np.testing.assert_array_equal(g["labels"][...], want["labels"].numpy())
    for name in ("entropy", "std"):
        np.testing.assert_allclose(g[name][...], want[name].numpy(), rtol=1e-5, atol=1e-6)
    for extra, message in [(["--outputs", "median"], "outputs must be names among"),
                           (["--outputs", "labels", "--activation", "none"],
                            "need class probabilities"),
                           (["--max-memory", "64K"], "is too small for this run"),
                           (["--max-memory", "lots"], "a size like '4G'")]:
        rc = main(args + extra + ["--output", str(tmp_path / "bad.zarr")])  # (last flag wins)
        err = capsys.readouterr().err
        assert rc == 2 and message in err and err.count("\n") == 1, (extra, err)


def test_the_plan_fits_the_bound_and_a_tighter_bound_gives_a_shallower_unit(tmp_path):
    x = _input(tmp_path, shape=(1, 1, 64, 48, 48))
    model = torch.nn.Conv3d(1, 40, 1)
    kw = dict(chunks=8, outputs=("labels",), activation="softmax", batch_size=2)
    sizes = dict(spatial=(64, 48, 48), window=(8, 8, 8), chunk=(8, 8, 8), unit=(16, 16, 16),
                 unit_given=False, c_in=1, in_itemsize=4, in_depth=8,
                 state_channels=40, out_bytes=1, c_out=40, batch_size=2,
                 temporaries=2)  # (one model, no augmentation)
    roomy = budget.plan_memory(2**30, **sizes)
    assert roomy.unit == (16, 16, 16) and roomy.queue_depth == 2 and roomy.total <= 2**30
    est = {k: v for k, v in sizes.items() if k not in ("chunk", "unit_given")}
    deepest_least = sum(budget.estimate(**est, queue_depth=1, max_pending=1).values())
    bound = int(deepest_least / budget.HEADROOM) + 1
    assert budget.plan_memory(bound, **sizes).unit[0] == 16
    tight = budget.plan_memory(bound - 2, **sizes)  # no unit of depth 16 fits
    assert tight.unit == (8, 16, 16) and tight.total <= budget.HEADROOM * (bound - 2)
    with pytest.raises(ValueError, match=r"too small .* spilled to disk.* needs .*row region"):
        budget.plan_memory(2**20, **sizes)
    g = fq.sliding_window(model, x, 8, 6, out=tmp_path / "o.zarr", max_memory=bound - 2,
                          **kw)
    assert dict(g.attrs)["fastquilt"]["unit"][0] == 8
    want = fq.sliding_window(model, torch.from_numpy(x), 8, 6, outputs=("labels",),
                             activation="softmax")
    np.testing.assert_array_equal(g["labels"][...], want["labels"].numpy())


def test_the_default_bound_is_checked_once_the_channels_are_known(tmp_path, monkeypatch):
    x = _input(tmp_path, shape=(1, 1, 32, 32, 32))
    monkeypatch.setattr(budget, "default_max_memory", lambda: 2**20)
    from fastquilt.outofcore import run

    monkeypatch.setattr(run, "default_max_memory", lambda: 2**20)
    with pytest.raises(ValueError, match="max_memory 1 MiB is too small"):
        fq.sliding_window(torch.nn.Conv3d(1, 64, 1), x, 8, 6, out=tmp_path / "o.zarr",
                          chunks=8)


@pytest.mark.parametrize("value,want", [(1000, 1000), ("4G", 4 * 2**30),
                                        ("500MiB", 500 * 2**20), ("1.5 GB", 3 * 2**29)])
def test_memory_sizes_parse(value, want):
    assert budget.memory_arg(value) == want


@pytest.mark.parametrize("value", ["", "4X", "-1", 0, True])
def test_bad_memory_sizes_are_refused(value):
    with pytest.raises((ValueError, TypeError), match="max_memory"):
        budget.memory_arg(value)
