"""Where the time of an in-memory CPU sliding_window goes: its phases timed apart on the
bench_cpu workloads (identity model, border weights, batch 64 unless --batch), against one
memcpy of the same window bytes and MONAI's sliding_window_inference, in one process. Warm
memory (glibc keeps freed memory: the process re-runs itself so) unless --memory fresh.

    python benchmarks/experiments/sliding_phases.py [--threads 1 2] [--memory warm|fresh]
        [--batch 64] [--cases 2D 3D]

Phases: the gathers of every batch into one batch buffer; the scatter-adds of every batch with
the accumulator zeroed and normalised plane by plane (scatter_add_grid_batch_); the inverse
weight-sum rows (grid_inverse_rows: built once per grid, then remembered across calls); the
whole sliding_window call.
"""

import argparse
import os
import subprocess
import sys

import torch
import torch.utils.benchmark as tb

import fastquilt as fq
from fastquilt import ops

CASES = (("2D", (8, 3, 1024, 1024), 128, 64, 8), ("3D", (1, 1, 256, 256, 256), 64, 32, 4))


def seconds(fn, reps: int = 5) -> float:
    """The median of ``reps`` calls at torch's current thread count (a Timer's own default
    is one thread)."""
    fn()
    return tb.Timer(stmt="fn()", globals={"fn": fn},
                    num_threads=torch.get_num_threads()).timeit(reps).median


def phases(shape, window, step, border, batch_size: int) -> dict:
    x = torch.randn(shape)
    q = fq.Quilt(shape[2:], window, step, border=border, border_weight=0.1)
    w, org = q.weight, q.origins(shape[0])
    M = org.shape[0]
    batch = torch.empty((batch_size, shape[1], *q.window))
    acc = torch.empty(shape)
    inv, cls = ops.grid_inverse_rows(w, q.spatial_shape, q.step)
    windows = torch.empty((M, shape[1], *q.window))
    source = torch.ones_like(windows)

    def gathers():
        for lo in range(0, M, batch_size):
            ops.gather_windows_into(x, org[lo:lo + batch_size], batch[:min(batch_size, M - lo)])

    def scatters():
        for lo in range(0, M, batch_size):
            ops.scatter_add_grid_batch_(batch[:min(batch_size, M - lo)], org, lo, acc, inv, cls,
                                        weight=w)

    calls = {
        "gathers": gathers,
        "scatter-adds (zeroed, normalised)": scatters,
        "inverse weight-sum rows": lambda: ops.grid_inverse_rows(w, q.spatial_shape, q.step),
        "sliding_window": lambda: fq.sliding_window(lambda t: t, x, window, step,
                                                    batch_size=batch_size, weight=w),
        "memcpy of the window bytes": lambda: windows.copy_(source),
    }
    try:
        from monai.inferers import sliding_window_inference

        D = len(shape) - 2
        calls["MONAI sliding_window_inference"] = lambda: sliding_window_inference(
            x, (window,) * D, batch_size, lambda t: t, overlap=1 - step / window, mode="constant")
    except ImportError:
        pass
    return {k: seconds(f) for k, f in calls.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    ap.add_argument("--memory", choices=["warm", "fresh"], default="warm")
    ap.add_argument("--batch", type=int, default=64, help="windows a batch (default 64)")
    ap.add_argument("--cases", nargs="+", choices=[c[0] for c in CASES],
                    default=[c[0] for c in CASES])
    a = ap.parse_args()
    if a.memory == "warm" and os.environ.get("MALLOC_MMAP_MAX_") != "0":
        env = dict(os.environ, MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(1 << 40))
        sys.exit(subprocess.call([sys.executable, *sys.argv], env=env))
    for name, shape, window, step, border in (c for c in CASES if c[0] in a.cases):
        for threads in a.threads:
            torch.set_num_threads(threads)
            t = phases(shape, window, step, border, a.batch)
            copy = t["memcpy of the window bytes"]
            print(f"\n{name} {shape} w{window} s{step}, batch {a.batch}, {threads} thread(s), "
                  f"{a.memory} memory")
            for k, v in t.items():
                print(f"  {k:36s} {v * 1e3:8.1f} ms  {v / copy:5.2f}x memcpy")


if __name__ == "__main__":
    main()
