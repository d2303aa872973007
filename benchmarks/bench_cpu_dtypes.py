"""CPU benchmark per floating dtype: unstitch, weighted unstitch, scatter-add and grid stitch of
a (1,1,256^3) image, window 64 step 32 (343 windows), each as a multiple of a memcpy of the same
patch bytes in the same run (wall_clock.best_of: torch.utils.benchmark, fastest block of ~5
calls; preallocated buffers, all threads). float16 and bfloat16 should cost about what
float32 does per element, not more.

    python benchmarks/bench_cpu_dtypes.py [--size 256] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform

import torch
from wall_clock import best_of

import fastquilt as fq


def run(size: int, dtype: torch.dtype) -> dict:
    q = fq.Quilt((size,) * 3, 64, 32, border=4, border_weight=0.1)
    x = torch.randn(1, 1, size, size, size).to(dtype)
    org = q.positions(1)
    w = q.weight_for(dtype, x.device)
    patches = q.unstitch(x)
    src, out = torch.empty_like(patches), torch.empty_like(x)
    acc = torch.zeros(x.shape, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    wsum = torch.zeros(acc.shape[1:], dtype=acc.dtype)
    copy = best_of(lambda: patches.copy_(src))
    times = {
        "unstitch": best_of(lambda: q.unstitch(x, out=patches)),
        "weighted unstitch": best_of(lambda: fq.gather_windows_into(x, org, patches, weight=w)),
        "scatter-add": best_of(lambda: fq.scatter_add_windows_(patches, org, acc, wsum,
                                                               weight=w)),
        "grid stitch": best_of(lambda: q.stitch(patches, out=out)),
    }
    return {"dtype": str(dtype).replace("torch.", ""), "copy_s": copy,
            **{f"{k}_s": t for k, t in times.items()},
            **{f"{k}_x_copy": t / copy for k, t in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    res = {"machine": platform.processor() or platform.machine(),
           "threads": torch.get_num_threads(), "size": a.size, "runs": []}
    print(f"(1,1,{a.size}^3) window 64 step 32, {torch.get_num_threads()} threads: time as a "
          "multiple of a memcpy of the patch bytes")
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        r = run(a.size, dtype)
        res["runs"].append(r)
        print(f"  {r['dtype']:9s} " + "  ".join(
            f"{k} {r[k + '_x_copy']:5.2f}x" for k in
            ("unstitch", "weighted unstitch", "scatter-add", "grid stitch")), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
