"""The GPU benchmark's bandwidth definitions, on the stored H200 run (no GPU needed): each
op's bytes are what it must move, so the stitch (reads P, writes O) is not credited with 2P."""

import json
import subprocess
import sys
from pathlib import Path

from benchmarks import bench_gpu

ROOT = Path(__file__).resolve().parents[2]
STORED = ROOT / "benchmarks" / "results" / "gpu_check_2026-11-26_h200" / "bench_gpu.json"


def test_derive_uses_the_bytes_each_op_moves():
    run = json.loads(STORED.read_text())["runs"][0]  # float32
    bench_gpu.derive(run)
    P = run["patch_GB"]
    O = 512**3 * 4 / 1e9
    assert abs(run["gather_GB"] - 2 * P) < 1e-9
    assert abs(run["scatter_atomic_GB"] - 2 * P) < 1e-9  # float32: one fp32 atomic per element
    assert abs(run["stitch_grid_GB"] - (P + O)) < 1e-9
    copy_bw = 2 * P * 1e9 / run["copy_s"]
    want = (P + O) * 1e9 / run["stitch_grid_s"] / copy_bw
    assert abs(run["stitch_grid_frac_of_copy_bw"] - want) < 1e-12
    assert "stitch_grid_frac_of_copy" not in run  # the old time ratio is dropped
    bf16 = json.loads(STORED.read_text())["runs"][1]
    bench_gpu.derive(bf16)
    assert abs(bf16["scatter_atomic_GB"] - 3 * bf16["patch_GB"]) < 1e-9  # bf16 in, fp32 atomics


def test_stitch_variants_use_their_own_image_bytes():
    run = json.loads(STORED.read_text())["runs"][0]
    run.update(stitch_grid_general_s=2e-3, stitch_grid_split_s=1.5e-3,
               split_shape=[512, 512, 508], split_out_GB=512 * 512 * 508 * 4 / 1e9)
    bench_gpu.derive(run)
    P = run["patch_GB"]
    assert abs(run["stitch_grid_general_GB"] - (P + 512**3 * 4 / 1e9)) < 1e-9
    assert abs(run["stitch_grid_split_GB"] - (P + 512 * 512 * 508 * 4 / 1e9)) < 1e-9


def test_report_reprints_a_stored_run():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--report",
                          str(STORED)], capture_output=True, text=True, check=True).stdout
    assert out.count("% of copy bandwidth") == 6  # 3 ops x 2 dtypes in the stored run
    assert "14.2% of copy bandwidth" in out  # fp32 grid stitch of that run


def test_other_grids_use_their_own_bytes():
    run = json.loads(STORED.read_text())["runs"][1]  # bfloat16
    n = 1000 * 96**3  # window 96 step 48 on 512^3: a view of the same patch storage
    run.update(stitch_grid_w96s48_s=1e-3, stitch_grid_w96s48_bytes=(n + 512**3) * 2)
    bench_gpu.derive(run)
    assert abs(run["stitch_grid_w96s48_GB"] - (n + 512**3) * 2 / 1e9) < 1e-9
    copy_bw = 2 * run["patch_GB"] * 1e9 / run["copy_s"]
    want = (n + 512**3) * 2 / 1e-3 / copy_bw
    assert abs(run["stitch_grid_w96s48_frac_of_copy_bw"] - want) < 1e-12
    assert "stitch_grid_w48s24_GB" not in run  # not timed: not derived


def test_targets_say_met_or_not_with_the_number():
    run = json.loads(STORED.read_text())["runs"][1]  # bfloat16
    bench_gpu.derive(run)
    run.update(speedup_vs_monai=2.9)
    lines = bench_gpu.targets("NVIDIA H200", run)
    stitch = next(line for line in lines if "deterministic stitch" in line)
    want = f"{100 * run['stitch_grid_frac_of_copy_bw']:.1f}% (target 60%)"
    assert want in stitch and stitch.endswith(
        "NOT MET" if run["stitch_grid_frac_of_copy_bw"] < 0.6 else "met")
    assert any("vs MONAI" in line and "2.9x (target 3x) NOT MET" in line for line in lines)
    assert lines[-1] == "  (the targets are stated for an H100; this run: NVIDIA H200)"
    run.update(speedup_vs_monai=3.0)
    assert any(line.endswith("3.0x (target 3x) met") for line in
               bench_gpu.targets("NVIDIA H100 80GB HBM3", run))
    assert "stated for an H100" not in bench_gpu.targets("NVIDIA H100 80GB HBM3", run)[-1]
