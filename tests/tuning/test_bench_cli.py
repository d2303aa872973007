"""``bench --quick`` and the commands' errors: one line ``error: ...``, exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fastquilt import cli

MODEL = "tests.tuning.tiny_models:tiny"


def test_bench_quick_writes_valid_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert cli.main(["bench", "--quick", "--threads", "1", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "x memcpy" in out and "gather" in out
    res = json.loads(path.read_text())
    run = res["runs"][0]
    assert run["threads"] == 1 and run["dtype"] == "float32"
    assert set(run["ops"]) == {"memcpy", "gather", "scatter_atomic", "stitch_grid",
                               "grid_normalize"}
    assert all(r["median_s"] > 0 and r["x_memcpy"] > 0 for r in run["ops"].values())
    assert res["machine"]["openmp"] in (True, False, None)
    # the repository's reference has this workload: the comparison is made
    assert run["reference"] is not None
    assert all("reference_x_memcpy" in r for r in run["ops"].values())


BAD = [
    (["bench", "--device", "tpu"], "is not a device; use cpu or cuda"),
    (["bench", "--threads", "0"], "--threads must be positive"),
    (["bench", "--dtype", "int8"], "invalid choice"),
    (["tune", "--model", MODEL, "--window", "8"], "one of the arguments --input --shape"),
    (["tune", "--model", MODEL, "--shape", "16", "16", "--window", "0"], "--window must be"),
    (["tune", "--model", MODEL, "--shape", "16", "16", "--window", "8", "--step", "9"],
     "--step (9, 9) is larger than --window"),
    (["tune", "--model", MODEL, "--shape", "16", "16", "--window", "32"], "larger than the "
     "image"),
    (["tune", "--model", MODEL, "--shape", "16", "16", "--window", "8", "--budget-seconds",
      "0"], "--budget-seconds must be > 0"),
    (["tune", "--model", "nope.pt2", "--shape", "16", "16", "--window", "8"],
     "does not exist"),
    (["tune", "--model", MODEL, "--shape", "16", "16", "--window", "8", "--plot", "a.jpg"],
     "--plot must name a .png"),
    (["infer", "--model", MODEL, "--input", "x.zarr", "--output", "y.zarr", "--tuning",
      "missing.json"], "does not exist"),
]


@pytest.mark.parametrize(("argv", "message"), BAD)
def test_bad_arguments_give_one_error_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err, err
    assert message in err


def test_no_traceback_from_the_command_line():
    r = subprocess.run([sys.executable, "-m", "fastquilt", "tune", "--model", MODEL, "--shape",
                        "16", "16", "--window", "8", "--device", "cuda:7"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ")
