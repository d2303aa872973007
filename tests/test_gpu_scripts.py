"""The GPU-only code paths' inputs, run on the CPU: the sanitizer script and the CUDA tests'
geometries. A GPU machine is lent rarely and briefly; a case that cannot run anywhere (a window
larger than its image, say) must fail here, not there."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import fastquilt as fq

from . import reference as ref
from .test_cuda import CASES as CUDA_CASES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_gpu  # noqa: E402
import sanitizer_case  # noqa: E402


def test_sanitizer_case_runs_on_the_cpu(capsys):
    sanitizer_case.main("cpu")
    assert capsys.readouterr().out.strip() == "sanitizer case done"


@pytest.mark.parametrize("case", CUDA_CASES)
def test_cuda_test_cases_are_valid_grids(case):
    spatial, window, step = case
    x = torch.randn(2, 3, *spatial, dtype=torch.float64)
    org = torch.as_tensor(ref.origins(spatial, window, step, 2))
    p = fq.gather_windows(x, org, window)
    acc, wsum = fq.scatter_add_windows(p, org, spatial, 2)
    covered = (wsum > 0).unsqueeze(1).expand_as(x)  # gaps: only where a step exceeds its window
    assert covered.all() or any(s > w for s, w in zip(step, window))
    torch.testing.assert_close((acc / wsum.unsqueeze(1).clamp_min(1))[covered], x[covered])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_benchmark_runs_on_the_cpu(dtype):
    r = bench_gpu.run(128, 64, 32, dtype, with_peers=True, device="cpu")
    assert all(f"{k}_frac_of_copy_bw" in r for k in bench_gpu.OPS)  # every op timed
    assert r["roundtrip_max_err"] < 1e-5
    if importlib.util.find_spec("qlty") is not None:  # qlty is timed in both dtypes
        assert r["speedup_vs_qlty"] > 0, r.get("qlty")
