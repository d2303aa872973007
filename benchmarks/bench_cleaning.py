"""Cleaning benchmark (issue: training data): a (1, 1, S, S, S) volume with sparse labels
(16 labelled 40x40 regions on XY/XZ/YZ slices), window 64, step 32, border 8.
fastquilt (window counts from the labels + gather of the kept windows only) vs qlty 1.5.0
(unstitch_data_pair + weed_sparse_classification_training_pairs_3D). Each runs in its own
process; wall time and peak memory above the inputs are printed with their ratios.

    python benchmarks/bench_cleaning.py [--size 512]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def make_inputs(size: int):
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, size, size, size, generator=g)
    lab = torch.full((1, size, size, size), -1, dtype=torch.int8)
    # Sparse annotation as in the qlty paper: 16 labelled 40x40 regions on XY, XZ and YZ slices
    # (about 26k labelled voxels).
    for k in range(16):
        axis = k % 3
        i, a, b = (int(v) for v in torch.randint(0, size - 40, (3,), generator=g))
        sl = [slice(a, a + 40), slice(b, b + 40)]
        sl.insert(axis, i)
        lab[(0, *sl)] = torch.randint(0, 3, (40, 40), generator=g, dtype=torch.int8)
    return x, lab


def run_one(impl: str, size: int) -> dict:
    import torch

    x, lab = make_inputs(size)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if impl == "fastquilt":
        import fastquilt as fq

        q = fq.Quilt((size,) * 3, 64, 32, border=8)
        xp, lp, kept, stats = fq.clean_pairs(q, x, lab, -1)
        n_kept, total = xp.shape[0], stats.total_windows
    else:
        import qlty

        ql = qlty.NCZYXQuilt(size, size, size, (64,) * 3, (32,) * 3, 8)
        a, b = ql.unstitch_data_pair(x, lab)
        b[:, ql.border_tensor() < 0.5] = -1  # qlty 3D has no missing_label argument
        xp, lp, removed = qlty.weed_sparse_classification_training_pairs_3D(
            a, b, -1, ql.border_tensor())
        n_kept, total = xp.shape[0], removed.numel()
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del torch
    return {"impl": impl, "seconds": dt, "peak_extra_MiB": (peak - base) / 1024,
            "kept": int(n_kept), "total": int(total)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--json", default=None,
                    help="where to write the results (default: the stored results, full size only)")
    ap.add_argument("--impl", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.impl:
        print(json.dumps(run_one(a.impl, a.size)))
        return
    res = {}
    for impl in ("fastquilt", "qlty"):
        out = subprocess.run([sys.executable, __file__, "--size", str(a.size), "--impl", impl],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{impl}: failed\n{out.stderr[-2000:]}")
            continue
        res[impl] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\ncleaning (1,1,{a.size}^3) float32, int8 labels, window 64, step 32, border 8, "
          "16 labelled 40x40 regions")
    print(f"  {'':10s} {'seconds':>9s} {'peak MiB above inputs':>22s} {'kept / total':>14s}")
    for k, r in res.items():
        print(f"  {k:10s} {r['seconds']:9.2f} {r['peak_extra_MiB']:22.0f} "
              f"{r['kept']:>6d} / {r['total']}")
    if len(res) == 2:
        f, q = res["fastquilt"], res["qlty"]
        assert f["kept"] == q["kept"], "kept sets differ"
        print(f"  fastquilt is {q['seconds'] / f['seconds']:.1f}x faster and uses "
              f"{q['peak_extra_MiB'] / max(f['peak_extra_MiB'], 1):.1f}x less peak memory")
    if a.json is None and a.size != 512:  # a smaller run must not replace the stored results
        return
    path = Path(a.json or Path(__file__).parent / "results" / "bench_cleaning.json")
    path.write_text(json.dumps({"size": a.size, "results": res}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
