"""Choosing training windows from sparse labels on disk: peak memory and time of
`select_windows` on a zarr label array (read slab by slab) against the same labels loaded
into a tensor, for two depths of the same 512x512 planes, each run in its own process.
Ratios measured in one run. `python benchmarks/bench_label_stream.py [--depths 256 1024]`
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import resource, sys, time, torch, zarr, fastquilt as fq
path, mode = sys.argv[1], sys.argv[2]
z = zarr.open_array(path, mode="r")
q = fq.Quilt(tuple(z.shape[1:]), 64, 32, border=8)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
kept, stats = fq.select_windows(q, torch.from_numpy(z[...]) if mode == "tensor" else z, -1)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(dt, peak / 1024, stats.kept_windows)
"""


def make_labels(path: Path, depth: int) -> None:
    """int8 labels, -1 (missing) except 16 labelled 40x40 patches on single planes."""
    import numpy as np
    import zarr

    a = zarr.create_array(store=str(path), shape=(1, depth, 512, 512), dtype="int8",
                          chunks=(1, 64, 64, 64), fill_value=-1, overwrite=True)
    rng = np.random.default_rng(0)
    for k in range(16):
        z, y, x = rng.integers(40, depth - 50), rng.integers(40, 470), rng.integers(40, 470)
        a[0:1, z:z + 1, y:y + 40, x:x + 40] = np.full((1, 1, 40, 40), k % 2, np.int8)


def run(path: Path, mode: str) -> tuple[float, float, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), mode], check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1]), int(out[2])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depths", type=int, nargs="+", default=[256, 1024])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for depth in a.depths:
            path = Path(tmp) / f"lab{depth}.zarr"
            make_labels(path, depth)
            t_mem, m_mem, k_mem = run(path, "tensor")
            t_disk, m_disk, k_disk = run(path, "disk")
            assert k_mem == k_disk, "the two paths must keep the same windows"
            print(f"(1, {depth}, 512, 512) int8 labels ({depth // 4} MiB), {k_disk} windows "
                  f"kept: tensor {t_mem:.2f} s / +{m_mem:.0f} MiB, from disk {t_disk:.2f} s / "
                  f"+{m_disk:.0f} MiB: {m_mem / m_disk:.1f}x less memory, "
                  f"{t_mem / t_disk:.1f}x the speed")


if __name__ == "__main__":
    main()
