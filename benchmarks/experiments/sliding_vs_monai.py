"""fastquilt.sliding_window against MONAI's sliding_window_inference (identity model, batch 64,
flat weights), 2D (8,3,1024^2) w128 s64 and 3D (1,1,256^3) w64 s32, at 1 and 2 threads, best of
3 after a warm-up, in one process (ratios from the same run).

    python benchmarks/experiments/sliding_vs_monai.py
"""

import time

import torch
from monai.inferers import sliding_window_inference

import fastquilt as fq

CASES = (("2D", torch.randn(8, 3, 1024, 1024), 128, 64),
         ("3D", torch.randn(1, 1, 256, 256, 256), 64, 32))

for name, x, w, s in CASES:
    D = x.dim() - 2
    for threads in (1, 2):
        torch.set_num_threads(threads)
        calls = {
            "fastquilt": lambda x=x, w=w, s=s: fq.sliding_window(
                lambda t: t, x, w, s, batch_size=64, weight="flat"),
            "MONAI": lambda x=x, w=w, s=s, D=D: sliding_window_inference(
                x, (w,) * D, 64, lambda t: t, overlap=1 - s / w, mode="constant"),
        }
        best = {}
        for k, f in calls.items():
            f()
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                f()
                times.append(time.perf_counter() - t0)
            best[k] = min(times)
        print(f"{name} {threads} thread(s): fastquilt {best['fastquilt']:.3f} s, MONAI "
              f"{best['MONAI']:.3f} s: {best['MONAI'] / best['fastquilt']:.2f}x faster")
