"""What the fused orientation costs: ``gather_windows_oriented`` with random orientations (48
of a cube) against the plain ``gather_windows`` of the same windows, and against the plain
gather followed by ``torch.permute``/``torch.flip`` copies per window (what a per-item
augmentation does). Contenders alternate, several rounds; medians and ratios printed.

``python benchmarks/bench_oriented_gather.py [--size 256] [--window 64] [--batch 16]``
"""

from __future__ import annotations

import argparse
import statistics

import torch
from wall_clock import median_of

import fastquilt as fq
from fastquilt.training import sampling


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    dev, w = torch.device(args.device), (args.window,) * 3
    vol = torch.randn(1, 1, *(args.size,) * 3, device=dev)
    q = fq.Quilt(vol.shape[2:], args.window, args.window // 2)
    gen = torch.Generator().manual_seed(0)
    org = sampling.uniform_origins(q, 1, args.batch, gen)
    ori = sampling.draw_orientations(sampling.orientation_choices(w), args.batch, gen)
    org, ori = org.to(dev), ori.to(dev)
    codes = ori.tolist()

    def copies():
        plain = fq.gather_windows(vol, org, w)
        return torch.stack([p.permute(0, *[abs(c) for c in k]).flip(
            [1 + d for d, c in enumerate(k) if c < 0]) for p, k in zip(plain, codes)])

    def run(fn):
        def timed():
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
        return timed

    contenders = {"plain gather": run(lambda: fq.gather_windows(vol, org, w)),
                  "oriented gather": run(lambda: fq.gather_windows_oriented(vol, org, ori, w)),
                  "gather + permute/flip copies": run(copies)}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(args.rounds):
        for name in (list(contenders) if r % 2 == 0 else list(reversed(contenders))):
            times[name].append(median_of(contenders[name]))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}, "
          f"{args.batch} windows {args.window}^3 from {args.size}^3 float32")
    for k, v in med.items():
        print(f"{k:<30} {args.batch / v:10.0f} windows/s")
    print(f"oriented / plain rate: {med['plain gather'] / med['oriented gather']:.2f}; "
          f"oriented / (gather + copies) rate: "
          f"{med['gather + permute/flip copies'] / med['oriented gather']:.2f}")


if __name__ == "__main__":
    main()
