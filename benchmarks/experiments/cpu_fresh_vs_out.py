"""What a fresh output buffer costs on the CPU: (1,1,512^3) float32, window 64 step 32 (3.5 GB
of patches), unstitch into a new tensor vs into a reused `out=`, and a plain fill of the same
number of fresh bytes (the page faults alone). Three rounds, one process.
Run: .venv/bin/python benchmarks/experiments/cpu_fresh_vs_out.py"""

import time

import torch

import fastquilt as fq

n = 512
q = fq.Quilt((n,) * 3, 64, 32, border=8, border_weight=0.1)
x = torch.randn(1, 1, n, n, n)
out = torch.empty(q.num_windows, 1, 64, 64, 64)
for _ in range(3):
    t0 = time.perf_counter()
    q.unstitch(x, out=out)
    t1 = time.perf_counter()
    fresh = q.unstitch(x)
    t2 = time.perf_counter()
    del fresh
    t3 = time.perf_counter()
    torch.empty(out.shape).fill_(0)
    t4 = time.perf_counter()
    print(f"unstitch(out=reused) {t1 - t0:.2f} s, unstitch() {t2 - t1:.2f} s, "
          f"fresh fill of the same bytes {t4 - t3:.2f} s", flush=True)
