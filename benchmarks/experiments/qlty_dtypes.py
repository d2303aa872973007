"""qlty 1.5.0's (1,1,512^3) window 64 step 32 unstitch + stitch, float32 and bfloat16, timed on
this machine's CPU as benchmarks/bench_gpu.py times it (after a warm-up call), twice each and
alternating. It estimates the bf16 ratio the GPU benchmark did not measure before it timed qlty
in bf16; the fastquilt side of that ratio is a GPU time. Run: .venv/bin/python <this file>."""

import time

import torch
from qlty import NCZYXQuilt

n, w, s = 512, 64, 32
ql = NCZYXQuilt(n, n, n, (w,) * 3, (s,) * 3, 8, border_weight=0.1)
small = NCZYXQuilt(2 * w, 2 * w, 2 * w, (w,) * 3, (s,) * 3, 8, border_weight=0.1)
for dtype in (torch.float32, torch.bfloat16, torch.float32, torch.bfloat16):
    small.stitch(small.unstitch(torch.zeros(1, 1, 2 * w, 2 * w, 2 * w, dtype=dtype)))
    x = torch.randn(1, 1, n, n, n).to(dtype)
    t0 = time.perf_counter()
    mean = ql.stitch(ql.unstitch(x))[0]
    print(f"{dtype}: qlty unstitch + stitch {time.perf_counter() - t0:.2f} s "
          f"(returns {mean.dtype})", flush=True)
    del x, mean
