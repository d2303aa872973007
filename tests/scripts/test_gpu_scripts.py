"""The GPU scripts, run on the CPU: the sanitizer script and the GPU benchmark. A GPU machine
is lent rarely and briefly; a case that cannot run anywhere (a window larger than its image,
say) must fail here, not there. (The kernel-path test grids run on every device in
tests/ops/test_ops.py.)"""

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import bench_gpu, sanitizer_case

ROOT = Path(__file__).resolve().parents[2]


def test_sanitizer_case_runs_on_the_cpu(capsys):
    sanitizer_case.main("cpu")
    assert capsys.readouterr().out.strip() == "sanitizer case done"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_benchmark_runs_on_the_cpu(dtype):
    r = bench_gpu.run(128, 64, 32, dtype, with_peers=True, device="cpu")
    assert all(f"{k}_frac_of_copy_bw" in r for k in bench_gpu.OPS)  # every op timed
    assert r["roundtrip_max_err"] < 1e-5
    if importlib.util.find_spec("qlty") is not None:  # qlty is timed in both dtypes
        assert r["speedup_vs_qlty"] > 0, r.get("qlty")


def test_gpu_pipeline_benchmark_runs_on_the_cpu():
    from benchmarks import bench_gpu_pipeline

    r = bench_gpu_pipeline.run(16, 8, 4, batch=8, device="cpu", reps=1, width=4)
    assert set(r["runs"]) == {f"{m}_{d}" for m in ("out_of_core", "in_memory_cpu",
                                                   "in_memory_cpu_sums_cpu", "in_memory_gpu")
                              for d in ("float32", "bfloat16")}
    for v in r["runs"].values():  # the model's time is inside the run's wall time
        assert 0 < v["model_event_s"] <= v["wall_s"]
    # the four modes stitch the same predictions
    assert r["max_diff_between_modes_float32"] < 1e-5
    assert r["max_diff_between_modes_bfloat16"] < 1e-5


def test_gpu_check_fits_its_budget(tmp_path):
    # The script parses, and its stage runner keeps to the budget: each stage runs under what
    # is left of it (5 s kept for the summary), a stage with under 20 s left is skipped and
    # said so, FQ_GPU_STAGES picks stages (build always runs), and a failing stage does not
    # stop the next.
    path = ROOT / "benchmarks" / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(path)], check=True)
    script = path.read_text()
    start = script.index("BUDGET=")
    end = script.index("\n}\n", script.index("stage() {")) + 3
    runner = (f"set -u\nOUT_DIR={tmp_path}\nSUMMARY=$OUT_DIR/summary.txt\n: > $SUMMARY\n"
              + script[start:end]
              + "stage build 100 true\nstage slow 100 sleep 2\nstage late 100 true\n"
                "stage bad 10 false\nstage after 10 true\ncat $SUMMARY\n")

    def run(budget: int, stages: str = "") -> str:
        env = {"PATH": os.environ["PATH"], "FQ_GPU_BUDGET_S": str(budget),
               "FQ_GPU_STAGES": stages}
        return subprocess.run(["bash", "-c", runner], env=env, capture_output=True, text=True,
                              check=True).stdout

    out = run(26)  # 21 s left for build and slow; after slow's 2 s, 19: the rest skipped
    # (bash's SECONDS counts whole seconds: one may tick while the shell starts)
    assert re.search(r"build \(limit 2[01] s\)", out) and "slow: rc=0" in out
    for name in ("late", "bad", "after"):
        assert f"{name}: skipped (budget of 26 s spent)" in out
    out = run(100, "bad after")
    assert "build: rc=0" in out and "slow" not in out and "late" not in out
    assert "bad: rc=1" in out and "after: rc=0" in out
