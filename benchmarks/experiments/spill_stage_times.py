"""Where a spilling out-of-core segmentation spends its time (issue 16's memory comparison):
(1, 1, 256^3) float32 zarr input, 32 classes (``Conv3d(1, 32, 3)``), window 64, step 48,
batch 1, chunks 16, labels, softmax, a memory bound that no plane-wide slab fits (default
250M). Prints the seconds inside each timed function (the model, the predictor with its
softmax, the waits in step, the spilling slab's stages), one run.

    python benchmarks/experiments/spill_stage_times.py [--max-memory 250M]
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

import fastquilt as fq
from fastquilt import ensemble, reductions
from fastquilt.outofcore import local, spill

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from volumes import random_zarr_volume  # noqa: E402
from wall_clock import StageSeconds  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-memory", default="250M")
    ap.add_argument("--size", type=int, default=256)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fq_spill_"))
    stages = StageSeconds()
    timed = stages.timed
    try:
        z = random_zarr_volume(work / "in.zarr", a.size)
        torch.manual_seed(0)
        model = torch.nn.Conv3d(1, 32, 3, padding=1).eval()
        model.forward = timed("model", model.forward)
        ensemble.Predictor.__call__ = timed("predictor (model + softmax)",
                                            ensemble.Predictor.__call__)
        local._Accumulator.put = timed("main thread waiting in step", local._Accumulator.put)
        spill.SpillingSlab.add = timed("accumulator: SpillingSlab.add", spill.SpillingSlab.add)
        spill.SpillingSlab._load = timed("  units read back", spill.SpillingSlab._load)
        spill.SpillingSlab._store = timed("  units stored", spill.SpillingSlab._store)
        spill.scatter_windows = timed("  scatter-add", spill.scatter_windows)
        reductions.Reduction.finish = timed("  finish (class epilogue)",
                                            reductions.Reduction.finish)
        local.release_free_memory = timed("accumulator: heap trim", local.release_free_memory)
        t0 = time.perf_counter()
        with torch.no_grad():
            fq.sliding_window(model, z, 64, 48, 1, out=work / "o.zarr", outputs=("labels",),
                              activation="softmax", max_memory=a.max_memory, chunks=16)
        print(f"total {time.perf_counter() - t0:.2f} s")
        for name, s in stages.seconds.items():
            print(f"{name:34s} {s:6.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
