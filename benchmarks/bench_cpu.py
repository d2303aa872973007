"""CPU benchmark: unstitch + stitch (identity model) of a 2D and a 3D workload, for fastquilt
(into new outputs, as a qlty user calls it, and into reused out= buffers), its scatter-add and
sliding_window, qlty 1.5.0, MONAI (if installed), Tensor.unfold + a slice-add loop, and a
two-copy memcpy floor at the same thread count — in one process, one run, at 1, 2, ... all
threads. Prints seconds and ratios; writes JSON to benchmarks/results/.

``--rounds R`` times every contender once per round, the contenders one after another, so a
drift of the machine's speed between minutes reaches all of them alike: the seconds are each
contender's fastest round, and each ratio to the floor is the median (and range) of the ratios
taken within one round.

``--memory warm`` runs the same in a process whose glibc keeps freed memory
(``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>``), so that new outputs cost no page
faults for any contender: compare qlty and fastquilt like with like, fresh with fresh (the
default) and warm with warm.

    python benchmarks/bench_cpu.py [--reps 5] [--rounds 3] [--quick] [--memory fresh|warm]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from wall_clock import best_of

import fastquilt as fq

FLOOR = "memcpy floor (2 copies)"
WORKLOADS = {
    "2d": dict(shape=(8, 3, 1024, 1024), window=128, step=64, border=8),
    "3d": dict(shape=(1, 1, 256, 256, 256), window=64, step=32, border=4),
}


def impls(x: torch.Tensor, window: int, step: int, border: int) -> dict:
    D = x.dim() - 2
    q = fq.Quilt(x.shape[2:], window, step, border=border, border_weight=0.1)
    P = torch.empty((x.shape[0] * q.num_windows, x.shape[1], *q.window))
    O = torch.empty_like(x)
    out: dict = {}

    def fastquilt():
        q.unstitch(x, out=P)
        return q.stitch(P, out=O)[0]

    out["fastquilt"] = fastquilt
    out["fastquilt, new outputs"] = lambda: q.stitch(q.unstitch(x))[0]
    acc = torch.zeros_like(x)
    org, wt = q.origins(x.shape[0]), q.weight

    def scatter():
        acc.zero_()
        fq.scatter_add_windows_(P, org, acc, None, weight=wt)

    out["fastquilt scatter-add (into acc)"] = scatter
    out["fastquilt sliding_window"] = lambda: fq.sliding_window(
        lambda t: t, x, window, step, batch_size=64, weight=q.weight)

    A, B = torch.ones_like(P), torch.ones_like(P)  # touched, preallocated

    def floor():
        P.copy_(A)  # the gather's bytes
        B.copy_(P)  # the stitch's bytes
        return None

    out[FLOOR] = floor

    w = q.weight

    def unfold_loop():
        v = x
        for d in range(D):
            v = v.unfold(2 + d, window, step)
        n = v.shape[2:2 + D]
        perm = (0, *range(2, 2 + D), 1, *range(2 + D, 2 + 2 * D))
        p = v.permute(*perm).reshape(-1, x.shape[1], *q.window)  # the copy
        acc = torch.zeros_like(x)
        norm = torch.zeros(x.shape[2:])
        p = p.view(x.shape[0], -1, x.shape[1], *q.window)
        for k, pos in enumerate(torch.cartesian_prod(*[torch.arange(c) for c in n]).tolist()
                                if D > 1 else []):
            sl = tuple(slice(i * step, i * step + window) for i in pos)
            acc[(slice(None), slice(None), *sl)] += p[:, k] * w
            norm[sl] += w
        return acc / norm

    out["Tensor.unfold + slice-add loop"] = unfold_loop

    try:
        import qlty

        if D == 2:
            ql = qlty.NCYXQuilt(*x.shape[2:], (window,) * 2, (step,) * 2, border,
                                border_weight=0.1)
        else:
            ql = qlty.NCZYXQuilt(*x.shape[2:], (window,) * 3, (step,) * 3, border,
                                 border_weight=0.1)
        out["qlty 1.5.0"] = lambda: ql.stitch(ql.unstitch(x))[0]
    except ImportError:
        pass
    from fastquilt import compat

    # the qlty drop-in: qlty's classes and calls, fastquilt underneath (fresh outputs)
    cq = (compat.NCYXQuilt(*x.shape[2:], (window,) * 2, (step,) * 2, border, border_weight=0.1)
          if D == 2 else
          compat.NCZYXQuilt(*x.shape[2:], (window,) * 3, (step,) * 3, border, border_weight=0.1))
    out["fastquilt.compat (qlty drop-in)"] = lambda: cq.stitch(cq.unstitch(x))[0]
    try:
        from monai.inferers import sliding_window_inference

        out["MONAI sliding_window_inference"] = lambda: sliding_window_inference(
            x, (window,) * D, 64, lambda t: t, overlap=1 - step / window, mode="constant")
    except ImportError:
        pass
    return out


def set_threads(threads: int) -> None:
    """Every contender's thread count: torch's (fastquilt's OpenMP pool) and numba's (qlty)."""
    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3,
                    help="times every contender once per round, in turn (default 3)")
    ap.add_argument("--quick", action="store_true",
                    help="smaller shapes (smoke test; writes JSON only with --json)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--memory", choices=["fresh", "warm"], default="fresh")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="thread counts to run (default: 1 to all), e.g. 1 4 8 16")
    a = ap.parse_args()
    if a.memory == "warm" and os.environ.get("MALLOC_MMAP_MAX_") != "0":
        env = dict(os.environ, MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(1 << 40))
        sys.exit(subprocess.call([sys.executable, *sys.argv], env=env))
    all_threads = os.cpu_count() or 1
    results = {"machine": platform.processor() or platform.machine(), "cpus": all_threads,
               "torch": torch.__version__, "memory": a.memory, "rounds_run": a.rounds,
               "runs": {}, "rounds": {}, "x_floor": {}}
    for name, wl in WORKLOADS.items():
        shape = wl["shape"]
        if a.quick:
            shape = shape[:2] + tuple(s // 4 for s in shape[2:])
        x = torch.randn(shape)
        fns = impls(x, wl["window"] // (4 if a.quick else 1), wl["step"] // (4 if a.quick else 1),
                    wl["border"])
        for k, fn in fns.items():  # every contender must reproduce x (identity model)
            r = fn()
            if r is not None:
                err = float((r - x).abs().max())
                assert err < 1e-4, f"{k} on {name}: round trip error {err}"
        for _ in range(a.rounds):
            for threads in a.threads or range(1, all_threads + 1):
                set_threads(threads)
                key = f"{name} threads={threads}"
                rounds = results["rounds"].setdefault(key, {k: [] for k in fns})
                for k, fn in fns.items():
                    rounds[k].append(best_of(fn, a.reps))
    torch.set_num_threads(all_threads)
    for key, rounds in results["rounds"].items():
        floor = rounds[FLOOR]
        results["runs"][key] = {k: min(ts) for k, ts in rounds.items()}
        results["x_floor"][key] = {k: [t / f for t, f in zip(ts, floor)]
                                   for k, ts in rounds.items()}

    print(f"\nunstitch + stitch, identity model, fastest of ~{a.reps} calls "
          f"(torch.utils.benchmark) in each of {a.rounds} rounds: seconds of the fastest "
          "round; x floor: the median [range] of the ratios within a round"
          + ("\n--quick: every spatial size, window and step below divided by 4" if a.quick
             else ""))
    for key, row in results["runs"].items():
        ratios = results["x_floor"][key]
        print(f"\n{key}: {WORKLOADS[key.split()[0]]}")
        print(f"  {'':34s} {'seconds':>9s} {'x floor':>8s} {'[range]':>13s} "
              f"{'fastquilt faster by':>20s}")
        for k, t in row.items():
            r = ratios[k]
            print(f"  {k:34s} {t:9.4f} {statistics.median(r):8.2f} "
                  f"[{min(r):5.2f}-{max(r):5.2f}] {t / row['fastquilt']:19.1f}x")
    if a.quick and a.json is None:  # a smoke test must not replace the stored results
        return
    default = "bench_cpu.json" if a.memory == "fresh" else "bench_cpu_warm.json"
    path = Path(a.json or Path(__file__).parent / "results" / default)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
