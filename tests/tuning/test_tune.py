"""``tune`` on the CPU with a tiny model: the structure of the recommendation, the budget, an
out-of-memory at a large batch, and the tuned file read back by ``infer`` and the Python API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import fastquilt as fq
from fastquilt import cli
from fastquilt.tuning import load_tuning, save_tuning
from fastquilt.tuning import search as search_mod
from fastquilt.tuning import tune as tune_mod
from fastquilt.tuning.budget import Budget
from fastquilt.tuning.tune import run_tune

from .tiny_models import RunsOutOfMemory, Tiny, tiny

MODEL = "tests.tuning.tiny_models:tiny"


def _structure(res: dict) -> dict:
    # (measurements a loaded machine skips for the budget are listed in res["skipped"]: the
    # structure is that of the recommendation and of the rows that ran)
    return {"keys": sorted(res), "settings": sorted(res["settings"]),
            "batch_row": sorted(res["batch"]["rows"][0]),
            "step_row": sorted({k for r in res["step"]["rows"] for k in r}) or None}


def test_the_budget_splits_phases_and_refuses_what_does_not_fit():
    # a fake clock: the test does not depend on this machine's speed
    now = [0.0]
    b = Budget(10.0, {"batch": 3, "step": 1}, progress=False, clock=lambda: now[0])
    b.phase("batch")
    assert b.phase_left() == pytest.approx(7.5)
    assert b.affords(7.0, "batch 64") and not b.affords(8.0, "batch 128")
    now[0] = 6.0  # the batch phase used 6 s: the step phase gets what is left
    b.phase("step")
    assert b.phase_left() == pytest.approx(4.0) and b.left() == pytest.approx(4.0)
    now[0] = 11.0
    assert b.left() == 0.0 and not b.affords(0.01, "step 6")
    assert [s.split(":")[0] for s in b.skipped] == ["batch", "step"]


def test_recommendation_is_reproducible_in_structure_and_keeps_the_budget():
    budget = 2.0
    runs = []
    for _ in range(2):
        res = run_tune(Tiny(), window=8, shape=(24, 24, 24), budget_seconds=budget,
                       progress=False)
        runs.append(res)  # (the budget's rules: test_the_budget_splits_phases_...)
    a, b = _structure(runs[0]), _structure(runs[1])
    if a["step_row"] is None or b["step_row"] is None:  # one run skipped the steps
        a["step_row"] = b["step_row"] = None
        assert any(r["skipped"] for r in runs)
    assert a == b
    for res in runs:
        s = res["settings"]
        assert s["window"] == [8, 8, 8]
        assert s["step"] == [6, 6, 6]  # fewest windows with overlap >= 0.25: steps 6 and 7 tie
        assert s["batch_size"] in [r["batch_size"] for r in res["batch"]["rows"]]
        assert all(r["windows_per_s"] > 0 and r["peak_bytes"] >= 0
                   for r in res["batch"]["rows"])
        assert "deterministic" in res["variants"]["note"]


@pytest.mark.parametrize("cuda_error", [True, False])
def test_out_of_memory_at_a_large_batch_is_caught_and_reported(monkeypatch, cuda_error):
    monkeypatch.setattr(search_mod, "PLATEAU", 0.0)  # keep doubling until memory runs out
    # the whole budget to the batch sizes, on a clock that stands still: the doubling stops at
    # the out-of-memory batch however slow or loaded this machine is, never at the budget
    monkeypatch.setattr(tune_mod, "SHARES",
                        {k: float(k == "batch size") for k in tune_mod.SHARES})
    monkeypatch.setattr(tune_mod, "Budget", lambda seconds, shares, progress: Budget(
        seconds, shares, progress, clock=lambda: 0.0))
    model = RunsOutOfMemory(limit=4, cuda_error=cuda_error)
    res = run_tune(model, window=8, step=8, shape=(16, 16, 32), budget_seconds=8.0,
                   max_batch=16, progress=False)
    rows = res["batch"]["rows"]
    assert [r["batch_size"] for r in rows] == [1, 2, 4, 8]
    assert rows[-1] == {"batch_size": 8, "out_of_memory": True}
    assert res["batch"]["stopped"] == "out of memory"
    assert res["settings"]["batch_size"] <= 4
    assert res["settings"]["step"] == [8, 8, 8]  # given: kept


def test_out_of_memory_at_batch_one_is_a_clear_error():
    with pytest.raises(RuntimeError, match="out of memory at batch size 1"):
        run_tune(RunsOutOfMemory(limit=0), window=8, shape=(16, 16, 16), budget_seconds=1.0,
                 progress=False)


def test_tuned_file_round_trips_into_infer_and_the_python_api(tmp_path, capsys):
    zarr = pytest.importorskip("zarr")
    x = torch.randn(1, 1, 32, 32, 32)
    src = zarr.create_array(str(tmp_path / "in.zarr"), shape=x.shape, chunks=(1, 1, 16, 16, 16),
                            dtype="float32")
    src[...] = x.numpy()
    tuned, png = tmp_path / "tuned.json", tmp_path / "tuned.png"
    rc = cli.main(["tune", "--model", MODEL, "--input", str(tmp_path / "in.zarr"), "--window",
                   "16", "--chunks", "16", "--budget-seconds", "4", "--out", str(tuned),
                   "--plot", str(png), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "chosen:" in out and png.read_bytes()[:4] == b"\x89PNG"
    doc = json.loads(tuned.read_text())
    assert doc["settings"]["window"] == [16, 16, 16]
    ooc = doc["out_of_core"]
    assert ooc and ooc["reader_threads"] in (1, 2, 4) and ooc["unit"] % 16 == 0
    kw = load_tuning(tuned)
    assert sorted(kw) == ["batch_size", "step", "window"]
    model = tiny()  # the factory's weights
    want = fq.sliding_window(model, x, **kw)  # Python API, in memory
    rc = cli.main(["infer", "--model", MODEL, "--input", str(tmp_path / "in.zarr"),
                   "--output", str(tmp_path / "out.zarr"), "--tuning", str(tuned)])
    assert rc == 0, capsys.readouterr().err
    got = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[...]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    out2 = fq.sliding_window(model, src, out=str(tmp_path / "out2.zarr"),
                             **load_tuning(tuned, out_of_core=True))  # out of core
    np.testing.assert_allclose(out2[...], want.numpy(), atol=1e-5)


def test_bad_tuning_files_are_refused(tmp_path):
    p = tmp_path / "t.json"
    save_tuning(p, {"window": [8, 8], "step": [4, 4], "batch_size": 2})
    assert load_tuning(p) == {"window": (8, 8), "step": (4, 4), "batch_size": 2}
    p.write_text(json.dumps({"fastquilt_tuning": 1, "settings": {"batch": 2}}))
    with pytest.raises(ValueError, match="unknown settings"):
        load_tuning(p)
    p.write_text(json.dumps({"fastquilt_tuning": 1, "settings": {"batch_size": 0}}))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        load_tuning(p)
    p.write_text("{}")
    with pytest.raises(ValueError, match="not a fastquilt tuning file"):
        load_tuning(p)
    with pytest.raises(ValueError, match="does not exist"):
        load_tuning(tmp_path / "missing.json")
