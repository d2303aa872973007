"""2.5D channel stacking and patch-pair extraction: fastquilt.compat against qlty 1.5.0, like
with like (each call makes fresh outputs, in both), on one CPU thread and on all threads, with
the ratios printed in one run; on CUDA too with ``--device cuda`` (qlty on the same device).

    python benchmarks/bench_qlty25d.py [--small] [--json benchmarks/results/bench_qlty25d.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wall_clock import best_of  # noqa: E402

import fastquilt as fq  # noqa: E402


def cases(small: bool, device: str):
    from qlty import extract_overlapping_pixels as q_ovl
    from qlty import extract_patch_pairs as q_pairs
    from qlty import extract_patch_pairs_3d as q_pairs3
    from qlty.qlty2_5D import NCZYX25DQuilt as QQuilt

    s = 2 if small else 1
    vol = torch.randn(1, 2, 64 // s, 512 // s, 512 // s, device=device)
    spec = {"identity": [-2, -1, 0, 1, 2], "mean": [[-3, -2], [2, 3]]}
    img = torch.randn(8 // s, 3, 512 // s, 512 // s, device=device)
    vol3 = torch.randn(2, 1, 64, 64, 64, device=device)
    pairs = fq.extract_patch_pairs(img, (64, 64), 64, (16, 48), random_seed=0,
                                   rotation_choices=[0, 1, 2, 3])
    return {
        "2.5D convert, identity x5 (1x2x{}x{}x{})".format(*vol.shape[2:]): (
            lambda: fq.NCZYX25DQuilt(vol, {"identity": spec["identity"]}).convert(),
            lambda: QQuilt(vol, {"identity": spec["identity"]}).convert()),
        "2.5D convert, identity x5 + mean x2": (
            lambda: fq.NCZYX25DQuilt(vol, spec, "reflect").convert(),
            lambda: QQuilt(vol, spec, "reflect").convert()),
        f"patch pairs 2D, 64 pairs/image, w64, rotations ({img.shape[0]}x3x{img.shape[2]}x"
        f"{img.shape[3]})": (
            lambda: fq.extract_patch_pairs(img, (64, 64), 64, (16, 48), random_seed=0,
                                           rotation_choices=[0, 1, 2, 3]),
            lambda: q_pairs(img, (64, 64), 64, (16, 48), random_seed=0,
                            rotation_choices=[0, 1, 2, 3])),
        "overlapping pixels 2D (the pairs above)": (
            lambda: fq.extract_overlapping_pixels(*pairs),
            lambda: q_ovl(*pairs)),
        "patch pairs 3D, 32 pairs/volume, w32": (
            lambda: fq.extract_patch_pairs_3d(vol3, (32, 32, 32), 32, (8, 24), random_seed=0),
            lambda: q_pairs3(vol3, (32, 32, 32), 32, (8, 24), random_seed=0)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="half-size inputs (a quick run)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    all_threads = torch.get_num_threads()
    thread_counts = [1, all_threads] if args.device == "cpu" and all_threads > 1 else [
        all_threads]
    rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for name, (ours, theirs) in cases(args.small, args.device).items():
            t_fq = best_of(lambda f=ours: (f(), sync()), args.reps)
            t_q = best_of(lambda f=theirs: (f(), sync()), args.reps)
            rows.append({"case": name, "threads": threads, "fastquilt_s": t_fq, "qlty_s": t_q,
                         "speedup": t_q / t_fq})
            print(f"{threads:>2} thr  {name:<60} fastquilt {t_fq * 1e3:8.1f} ms   "
                  f"qlty {t_q * 1e3:8.1f} ms   x{t_q / t_fq:6.1f}", flush=True)
    torch.set_num_threads(all_threads)
    if args.json:
        meta = {"device": args.device, "small": args.small, "reps": args.reps,
                "torch": torch.__version__, "cpu_count": os.cpu_count(),
                "machine": platform.machine(), "timer": "best of reps after one warm-up"}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
