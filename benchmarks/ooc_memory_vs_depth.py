"""Peak memory of the out-of-core sliding window vs the depth of the input (512x512 planes):
it should follow the plane size, not the volume. Each depth runs in its own process via
bench_out_of_core.py's fastquilt contender (identity model, window 64, step 48).

    python benchmarks/ooc_memory_vs_depth.py [--depths 192 512 768]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import zarr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depths", type=int, nargs="+", default=[192, 512, 768])
    ap.add_argument("--plane", type=int, default=512)
    a = ap.parse_args()
    bench = str(Path(__file__).parent / "bench_out_of_core.py")
    S = a.plane
    for Z in a.depths:
        work = tempfile.mkdtemp(prefix="fq_depth_")
        z = zarr.create_array(store=f"{work}/in.zarr", shape=(1, 1, Z, S, S),
                              chunks=(1, 1, 64, 64, 64), dtype="float32", compressors=None)
        rng = np.random.default_rng(0)
        for i in range(0, Z, 64):
            z[0, 0, i:i + 64] = rng.standard_normal((min(64, Z - i), S, S), dtype=np.float32)
        p = subprocess.run([sys.executable, bench, "--impl", "fastquilt", "--model", "identity",
                            "--src", f"{work}/in.zarr", "--work", work],
                           capture_output=True, text=True, check=True)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"input (1,1,{Z},{S},{S}) = {Z * S * S * 4 / 2**30:.2f} GiB: "
              f"{r['seconds']:.2f} s, peak {r['peak_MiB']:.0f} MiB")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
