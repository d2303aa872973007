"""The GPU scripts, run on the CPU: the sanitizer script and the GPU benchmark. A GPU machine
is lent rarely and briefly; a case that cannot run anywhere (a window larger than its image,
say) must fail here, not there. (The kernel-path test grids run on every device in
tests/ops/test_ops.py.)"""

import importlib.util

import pytest
import torch

from benchmarks import bench_gpu, sanitizer_case


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
                                                   "in_memory_gpu")
                              for d in ("float32", "bfloat16")}
    for v in r["runs"].values():  # the model's time is inside the run's wall time
        assert 0 < v["model_event_s"] <= v["wall_s"]
    # the three modes stitch the same predictions
    assert r["max_diff_between_modes_float32"] < 1e-5
    assert r["max_diff_between_modes_bfloat16"] < 1e-5
