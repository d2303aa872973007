"""How well the one-process out-of-core run overlaps its stages: a (1, 1, S^3) float32 zarr input
(64^3 chunks, no compression, in the page cache), window 64, step 48, out of core into zarr.

* read-only: reading every input window (as bench_out_of_core.py), the floor of any run;
* write-only: writing the output's bytes, unit by unit (the run's default 128^3 units), into a
  fresh zarr array with the run's chunks and no compression: the other floor of any run (on a
  machine whose file writes are slower than its page-cache reads, the higher one);
* identity model: the whole run; target <= 1.2x the read-only time;
* a model that sleeps (the GIL released, a stand-in for a GPU model on a CPU machine) as long,
  in total, as the I/O: reading the windows plus writing the output, each measured alone (the
  issue's "a model that costs about as much as the I/O"): target <= 1.2x the larger of the
  model's time and the I/O's (stages one after the other would take their sum, 2x). Two
  stricter cases are run too: the model as long as the reading alone (the model then hides
  less of the writing and the stitching), and as long as the identity run (the whole pipeline
  without a model, reading and writing already overlapped). The model's time is what its
  sleeps took (measured: on a busy machine each ``time.sleep`` overshoots by a millisecond or
  two, 8% here in all).

    python benchmarks/bench_ooc_overlap.py [--size 512] [--threads N] [--dir D] [--json PATH]

``--dir`` holds the input and outputs (default: the system's temporary folder); on a machine
whose file writes stall on the disk's write-back, ``--dir /dev/shm`` measures the pipeline
with files in memory.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from volumes import random_zarr_volume

import fastquilt as fq

WINDOW, STEP, BATCH = 64, 48, 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dir", default=None, help="folder for the input and outputs")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import zarr

    if a.threads:
        torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="fq-overlap-", dir=a.dir))
    try:
        shape = (1, 1, a.size, a.size, a.size)
        z = random_zarr_volume(work / "in.zarr", a.size)
        q = fq.Quilt(shape[2:], WINDOW, STEP)
        positions = q.positions(1).tolist()

        def read_only():
            for o in positions:
                np.asarray(z[(o[0], slice(None), *[slice(s, s + WINDOW) for s in o[1:]])])

        def run(model, name):
            t0 = time.perf_counter()
            fq.sliding_window(model, z, WINDOW, STEP, BATCH, out=work / f"{name}.zarr",
                              compressors=None)
            return time.perf_counter() - t0

        unit = 128
        block = np.ones((1, 1, unit, unit, unit), np.float32)

        def write_only(name):
            o = zarr.create_array(store=str(work / f"{name}.zarr"), shape=shape,
                                  dtype="float32", chunks=(1, 1, 64, 64, 64), compressors=None,
                                  fill_value=0).with_config({"write_empty_chunks": True})
            for i in range(0, a.size, unit):
                for j in range(0, a.size, unit):
                    for k in range(0, a.size, unit):
                        o[:, :, i:i + unit, j:j + unit, k:k + unit] = \
                            block[:, :, :a.size - i, :a.size - j, :a.size - k]

        read_only()  # the page cache
        t_read = min(_timed(read_only) for _ in range(2))
        t_write = min(_timed(write_only, f"w{i}") for i in range(2))
        floor = max(t_read, t_write)
        batches = -(-len(positions) // BATCH)
        pause = 0.0  # each sleep: the model's total time / batches

        slept = []  # the model's own time in each run: time.sleep overshoots on a busy machine

        def sleepy(p):
            t0 = time.perf_counter()
            time.sleep(pause)
            slept[-1] += time.perf_counter() - t0
            return p

        def sleep_run(name):
            slept.append(0.0)
            return run(sleepy, name), slept[-1]

        t_identity = min(run(lambda p: p, f"id{i}") for i in range(2))
        res = {
            "machine": platform.processor() or platform.machine(),
            "files": "--dir" if a.dir else "temporary folder",
            "threads": torch.get_num_threads(), "size": a.size, "windows": len(positions),
            "read_only_s": t_read, "write_only_s": t_write, "identity_s": t_identity,
            "identity_x_read": t_identity / t_read,
            "identity_x_larger_floor": t_identity / floor,
            "sleeping_models": {},
        }
        for k, (label, total) in enumerate((("I/O (read + write)", t_read + t_write),
                                            ("read", t_read), ("identity run", t_identity))):
            pause = total / batches
            # (a new output each: no resume)
            t_run, t_model = min(sleep_run(f"sleep{k}_{i}") for i in range(2))
            res["sleeping_models"][label] = {
                "nominal_s": total, "slept_s": t_model, "run_s": t_run,
                "x_larger_stage": t_run / max(total, t_model)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"(1, 1, {a.size}^3) float32 zarr, window {WINDOW}, step {STEP}, "
          f"{len(positions)} windows, {res['threads']} threads")
    floor = max(t_read, t_write)
    print(f"  read the windows only          {t_read:7.2f} s   1.00")
    print(f"  write the output only          {t_write:7.2f} s   {t_write / t_read:.2f}")
    print(f"  identity model                 {t_identity:7.2f} s   {t_identity / t_read:.2f}"
          f"  x read (target <= 1.2), {t_identity / floor:.2f} x the larger floor")
    for label, r in res["sleeping_models"].items():
        print(f"  model sleeping as long as the {label + ':':19s} {r['run_s']:5.2f} s, "
              f"{r['x_larger_stage']:.2f} x the larger stage (the model slept "
              f"{r['slept_s']:.2f} s for a nominal {r['nominal_s']:.2f} s)"
              + ("  target <= 1.2; in series: 2" if label.startswith("I/O") else ""))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
        print(f"wrote {a.json}")


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
