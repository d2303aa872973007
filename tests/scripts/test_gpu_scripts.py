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
