"""fastquilt.sliding_window on the CPU, identity model, (1,1,256^3) float32, window 64 step 32,
border 4, batch 64 (bench_cpu.py's 3D workload): wall_clock.best_of (torch.utils.benchmark,
fastest block of ~5 calls after a warm-up), in seconds, and
as a multiple of unstitch + stitch into preallocated buffers in the same run.
Run: .venv/bin/python benchmarks/experiments/sliding_window_cpu.py"""

import sys
from pathlib import Path

import torch

import fastquilt as fq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wall_clock import best_of  # noqa: E402

x = torch.randn(1, 1, 256, 256, 256)
q = fq.Quilt(x.shape[2:], 64, 32, border=4, border_weight=0.1)
P, O = q.unstitch(x), torch.empty_like(x)
quilt = best_of(lambda: q.stitch(q.unstitch(x, out=P), out=O))
sw = best_of(lambda: fq.sliding_window(lambda p: p, x, 64, 32, batch_size=64, weight=None,
                                       border=4))
print(f"sliding_window {sw:.3f} s = {sw / quilt:.2f}x unstitch + stitch ({quilt:.3f} s)")
