"""The model's idle time in the one-process out-of-core run against the depth of the queue of
predictions between the model and the accumulator: a (1, 1, S^3) float32 zarr input (64^3
chunks, no compression), window 64, step 48, batch 8, a model sleeping ``--sleep`` seconds in
all (the GIL released), the depths alternating in one process.

    python benchmarks/experiments/ooc_queue_depth.py [--size 512] [--sleep 3.0]
                                                     [--depths 2 16] [--rounds 4]
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import fastquilt as fq
from fastquilt.outofcore import local

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from volumes import random_zarr_volume  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--sleep", type=float, default=3.0)
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 16])
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args()
    depth = [a.depths[0]]
    plan_apply = local._apply

    def apply(plan, acc, batcher):  # the plan's queues, then the depth under test
        plan_apply(plan, acc, batcher)
        acc.batches.maxsize = depth[0]

    local._apply = apply
    work = Path(tempfile.mkdtemp(prefix="fq-queue-"))
    try:
        z = random_zarr_volume(work / "in.zarr", a.size)
        batches = -(-len(fq.Quilt((a.size,) * 3, 64, 48).positions(1)) // 8)
        slept = [0.0]

        def model(p):
            t0 = time.perf_counter()
            time.sleep(a.sleep / batches)
            slept[0] += time.perf_counter() - t0
            return p

        for r in range(a.rounds):
            for d in a.depths:
                depth[0], slept[0] = d, 0.0
                t0 = time.perf_counter()
                fq.sliding_window(model, z, 64, 48, 8, out=work / f"o{r}-{d}.zarr",
                                  compressors=None)
                wall = time.perf_counter() - t0
                print(f"queue of {d:2d}: wall {wall:5.2f} s, the model slept {slept[0]:5.2f} s, "
                      f"idle {wall - slept[0]:5.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
