"""Where the one-process out-of-core run spends its time: the busy seconds of each stage
(reading, the model call, the slab's sums, the unit writes), summed over their threads, for a
(1, 1, 512^3) float32 zarr input, window 64, step 48, batch 8, and a model that sleeps 2 s in
all (the GIL released). Stages that add up to more than the cores can run beside the model
cannot hide behind it.

    python benchmarks/experiments/ooc_stage_times.py
"""

import shutil
import sys
import tempfile
import time
from pathlib import Path

import fastquilt as fq
from fastquilt.outofcore import local, reading, slab, store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from volumes import random_zarr_volume  # noqa: E402
from wall_clock import StageSeconds  # noqa: E402

S = 512


def main() -> None:
    d = tempfile.mkdtemp()
    z = random_zarr_volume(d + "/in.zarr", S)
    stages = StageSeconds()
    timed = stages.timed
    slab.Slab.add = timed("accumulate (slab.add)", slab.Slab.add)
    store.OutputStore.write_unit = timed("write_unit", store.OutputStore.write_unit)
    reading.read_box = timed("read_box", reading.read_box)
    local.Predictor.__call__ = timed("predict (Predictor)", local.Predictor.__call__)
    n_batches = -(-len(fq.Quilt((S,) * 3, 64, 48).positions(1)) // 8)
    pause = 2.0 / n_batches

    def sleepy(p):
        time.sleep(pause)
        return p

    t0 = time.perf_counter()
    try:
        fq.sliding_window(sleepy, z, 64, 48, 8, out=d + "/o.zarr", compressors=None)
    finally:
        wall = time.perf_counter() - t0
        shutil.rmtree(d, ignore_errors=True)
    print(f"wall {wall:.2f} s, the model sleeps {pause * n_batches:.2f} s in all")
    for k, v in stages.seconds.most_common():
        print(f"  {k:24s} {v:6.2f} s")


if __name__ == "__main__":
    main()
