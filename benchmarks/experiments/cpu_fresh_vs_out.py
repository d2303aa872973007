"""What a fresh output buffer costs on the CPU: (1,1,512^3) float32, window 64 step 32 (3.5 GB
of patches). Four rounds in one process of: unstitch into a new tensor (freed after), unstitch
into a reused `out=`, and a plain zero fill of a new tensor of the same bytes (torch's own
allocation: the page faults alone). The first round pays for memory the process never
touched; the later rounds show the steady state.
Run: .venv/bin/python benchmarks/experiments/cpu_fresh_vs_out.py"""

import time

import torch

import fastquilt as fq

n = 512
q = fq.Quilt((n,) * 3, 64, 32, border=8, border_weight=0.1)
x = torch.randn(1, 1, n, n, n)
for r in range(4):
    t0 = time.perf_counter()
    fresh = q.unstitch(x)
    t1 = time.perf_counter()
    q.unstitch(x, out=fresh)
    t2 = time.perf_counter()
    del fresh
    t3 = time.perf_counter()
    torch.zeros(q.num_windows, 1, 64, 64, 64)
    t4 = time.perf_counter()
    print(f"round {r}: unstitch() {t1 - t0:.2f} s, unstitch(out=reused) {t2 - t1:.2f} s, "
          f"torch.zeros of the same bytes {t4 - t3:.2f} s", flush=True)
