"""A/B timing of the Python layer's hot paths on two built trees (e.g. those tools/ab_compare.py
keeps in its --keep folder): each case runs in its own process (python -S, the tree first on
sys.path), the two trees alternately, several rounds; prints the best time of each.

    python benchmarks/experiments/ab_python_layer.py BEFORE_TREE AFTER_TREE [--rounds 3]

Cases (256^3 float32, window 64, step 48 unless said): out of core zarr -> zarr (identity
model), sliding_window in memory, StitchAccumulator add + finalize, Quilt unstitch + stitch,
select_windows on sparse int8 labels, PatchDataset items with augmentation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

CASE = r'''
import sys, time, tempfile, json
sys.path[:0] = [sys.argv[1] + "/python"]
sys.path.append(sys.argv[2])
import numpy as np, torch, zarr
import fastquilt as fq
assert fq.__file__.startswith(sys.argv[1]), fq.__file__
torch.set_num_threads(2)
case = sys.argv[3]
S, W, ST = (256, 256, 256), 64, 48
g = torch.Generator().manual_seed(0)
x = torch.randn((1, 1, *S), generator=g)
d = tempfile.mkdtemp()
if case == "ooc":
    z = zarr.create_array(store=d + "/in.zarr", shape=x.shape, chunks=(1, 1, 64, 64, 64),
                          dtype="float32", compressors=None)
    z[...] = x.numpy()
    def run():
        fq.sliding_window(lambda p: p, z, W, ST, 8, out=d + f"/o{time.time_ns()}.zarr",
                          compressors=None)
elif case == "sliding":
    def run():
        fq.sliding_window(lambda p: p, x, W, ST, 16)
elif case == "accumulator":
    q = fq.Quilt(S, W, ST, weight="gaussian")
    p = q.unstitch(x)
    idx = torch.arange(p.shape[0])
    def run():
        a = fq.StitchAccumulator(q, 1, 1)
        for c in idx.split(64):
            a.add(p[c], c)
        a.finalize()
elif case == "quilt":
    q = fq.Quilt(S, W, ST, border=4)
    def run():
        q.stitch(q.unstitch(x))
elif case == "select":
    lab = torch.full((1, *S), -1, dtype=torch.int8)
    lab[0, ::37, 10:50, 20:60] = 1
    q = fq.Quilt(S, W, 32, border=8)
    def run():
        fq.select_windows(q, lab, -1)
elif case == "dataset":
    lab = torch.full((1, *S), -1, dtype=torch.int8)
    lab[0, ::17, 10:200, 20:240] = 1
    q = fq.Quilt(S, W, 32, border=8)
    ds = fq.PatchDataset(x, lab, q, -1, augment=True)
    def run():
        for i in range(200):
            ds[i % len(ds)]
run()
best = float("inf")
for _ in range(3):
    t0 = time.perf_counter(); run(); best = min(best, time.perf_counter() - t0)
print(json.dumps(best))
'''

CASES = ["ooc", "sliding", "accumulator", "quilt", "select", "dataset"]


def time_case(tree: str, case: str) -> float:
    site = sysconfig.get_paths()["purelib"]
    out = subprocess.run([sys.executable, "-S", "-c", CASE, tree, site, case], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", nargs="+", default=CASES)
    a = ap.parse_args()
    for case in a.cases:
        times = {"before": [], "after": []}
        for _ in range(a.rounds):
            for side, tree in (("before", a.before), ("after", a.after)):
                times[side].append(time_case(str(Path(tree).resolve()), case))
        b, f = min(times["before"]), min(times["after"])
        print(f"{case:12s} before {b:.3f} s  after {f:.3f} s  after/before {f / b:.2f}  "
              f"(before {', '.join(f'{t:.3f}' for t in times['before'])}; after "
              f"{', '.join(f'{t:.3f}' for t in times['after'])})", flush=True)


if __name__ == "__main__":
    main()
