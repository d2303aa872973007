"""What writing an OME-Zarr pyramid during inference adds to an out-of-core run: a (1, 1, S^3)
float32 zarr input (64^3 chunks, no compression, in the page cache), window 64, step 48,
batch 8, an identity model (the worst case: no model time to hide the writes behind), out of
core into

* a plain zarr v3 array (``pred.zarr``),
* an OME-Zarr 0.5 image with ``--levels`` pyramid levels written by the unit owners
  (``pred.ome.zarr``),

alternating, several rounds, in one process; prints the median wall time of each and their
ratio (target: the pyramid adds <= 15%), and the ratio of the CPU seconds the process used
(less sensitive to other load on a shared machine). Both outputs use zarr's default
compressor (zstd).

    python benchmarks/bench_ome_pyramid.py [--size 512] [--levels 3] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
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
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fq-pyramid-"))
    try:
        z = random_zarr_volume(work / "in.zarr", a.size)
        np.asarray(z[...])  # the page cache

        def run(name: str, **ome) -> tuple[float, float]:
            out = work / name
            t0, c0 = time.perf_counter(), time.process_time()
            fq.sliding_window(lambda p: p, z, WINDOW, STEP, BATCH, out=str(out), **ome)
            t, c = time.perf_counter() - t0, time.process_time() - c0
            shutil.rmtree(out)
            shutil.rmtree(work / (name + ".fastquilt-progress"), ignore_errors=True)
            return t, c

        run("warm.zarr")
        plain, pyramid, plain_cpu, pyramid_cpu = [], [], [], []
        for r in range(a.rounds):  # alternating, the order swapped every round
            order = [("plain", {}), ("ome", {"levels": a.levels})]
            for kind, ome in (order if r % 2 == 0 else order[::-1]):
                t, c = run(f"r{r}.ome.zarr" if kind == "ome" else f"r{r}.zarr", **ome)
                (pyramid if kind == "ome" else plain).append(t)
                (pyramid_cpu if kind == "ome" else plain_cpu).append(c)
                print(f"round {r}: {kind:5s} {t:7.3f} s wall, {c:7.3f} s CPU", flush=True)
        ratios = [p / q for p, q in zip(pyramid, plain)]
        cpu_ratio = statistics.median(pyramid_cpu) / statistics.median(plain_cpu)
        res = {
            "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "size": a.size, "levels": a.levels,
            "plain_s": plain, "ome_pyramid_s": pyramid,
            "median_plain_s": statistics.median(plain),
            "median_ome_pyramid_s": statistics.median(pyramid),
            "ratio_of_medians": statistics.median(pyramid) / statistics.median(plain),
            "per_round_ratios": ratios,
            "plain_cpu_s": plain_cpu, "ome_pyramid_cpu_s": pyramid_cpu,
            "cpu_ratio_of_medians": cpu_ratio,
        }
        print(f"plain zarr {res['median_plain_s']:.3f} s, OME-Zarr + {a.levels} levels "
              f"{res['median_ome_pyramid_s']:.3f} s: ratio {res['ratio_of_medians']:.3f} "
              f"(per round {', '.join(f'{r:.3f}' for r in ratios)}; target <= 1.15); "
              f"CPU seconds (this process, all threads) ratio {cpu_ratio:.3f}")
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
