"""The cluster run's time by task kind (dask's task stream: compute and the transfers of the
bands' pieces to the owners, summed over tasks) beside one process, alternating, for the
identity model on a (1, 1, S^3) float32 zarr input, window 64, step 48, border weight, units
128^3, LocalCluster(2 workers x 1 thread).

    python benchmarks/experiments/cluster_task_stream.py [--size 512] [--rounds 2]
"""

import argparse
import collections
import shutil
import sys
import tempfile
import time
from pathlib import Path

import distributed

import fastquilt as fq
from fastquilt.distributed import local_cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from volumes import random_zarr_volume  # noqa: E402


def identity(p):
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fq-cluster-"))
    kw = dict(batch_size=8, weight="border", border=8, chunks=64, unit=128, compressors=None)
    try:
        z = random_zarr_volume(work / "in.zarr", a.size)
        with local_cluster(2, 1, dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            for _ in range(a.rounds):
                shutil.rmtree(work / "one.zarr", ignore_errors=True)
                t0 = time.perf_counter()
                fq.sliding_window(identity, z, 64, 48, out=work / "one.zarr", **kw)
                one = time.perf_counter() - t0
                print(f"one process  wall {one:5.2f} s", flush=True)
                shutil.rmtree(work / "cl.zarr", ignore_errors=True)
                with distributed.get_task_stream(client) as ts:
                    t0 = time.perf_counter()
                    fq.sliding_window(identity, z, 64, 48, out=work / "cl.zarr", client=client,
                                      **kw)
                    wall = time.perf_counter() - t0
                busy = collections.defaultdict(lambda: collections.defaultdict(float))
                for t in ts.data:
                    kind = str(t["key"]).split("-")[1] if "-" in str(t["key"]) else "other"
                    for s in t["startstops"]:
                        busy[kind][s["action"]] += s["stop"] - s["start"]
                parts = "; ".join(f"{k}: " + ", ".join(f"{a} {v:.2f} s" for a, v in d.items())
                                  for k, d in busy.items() if k in ("band", "pick", "own"))
                print(f"2 workers    wall {wall:5.2f} s  = {wall / one:.2f}x one process"
                      f"   ({parts})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
