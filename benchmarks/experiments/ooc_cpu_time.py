"""Wall and CPU seconds (the whole process, every thread) of the one-process out-of-core run:
a (1, 1, S^3) float32 zarr input (64^3 chunks, no compression), window 64, step 48, batch 8,
into zarr, with the identity model and with a model sleeping ``--sleep`` seconds in all (the
GIL released). CPU seconds above wall seconds show the stages running beside each other; CPU
seconds are the work the stages beside the model must fit in the cores.

    python benchmarks/experiments/ooc_cpu_time.py [--size 512] [--sleep 2.0] [--rounds 3]
                                                  [--dir D]
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import fastquilt as fq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from volumes import random_zarr_volume  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--sleep", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fq-cpu-", dir=a.dir))
    try:
        z = random_zarr_volume(work / "in.zarr", a.size)
        batches = -(-len(fq.Quilt((a.size,) * 3, 64, 48).positions(1)) // 8)
        for name, pause in (("identity", 0.0), (f"sleeping {a.sleep:g} s", a.sleep / batches)):
            def model(p, pause=pause):
                if pause:
                    time.sleep(pause)
                return p

            for _ in range(a.rounds):
                shutil.rmtree(work / "out.zarr", ignore_errors=True)
                t0, c0 = time.perf_counter(), time.process_time()
                fq.sliding_window(model, z, 64, 48, 8, out=work / "out.zarr", compressors=None)
                print(f"{name:18s} wall {time.perf_counter() - t0:5.2f} s   "
                      f"CPU {time.process_time() - c0:5.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
