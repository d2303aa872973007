"""Command line: ``python -m fastquilt plan --shape Z Y X --window 64 --step 32 --border 8
[--labels labels.npy|labels.zarr --missing-label -1]`` prints the grid and, with labels, what
cleaning keeps (the rows of the qlty paper's Table 1)."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from .quilt import Quilt


def _load_labels(path: str) -> torch.Tensor:
    if path.endswith(".npy"):
        arr = np.load(path, mmap_mode="r")
    elif path.rstrip("/").endswith(".zarr"):
        try:
            import zarr
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise SystemExit("reading .zarr labels needs zarr: pip install zarr") from e
        arr = zarr.open_array(path, mode="r")[...]
    else:
        raise SystemExit(f"--labels must be a .npy or .zarr path, got {path}")
    return torch.from_numpy(np.array(arr))  # a writable in-memory copy


def plan(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastquilt plan", description=__doc__)
    ap.add_argument("--shape", type=int, nargs="+", required=True, help="Y X or Z Y X")
    ap.add_argument("--window", type=int, nargs="+", required=True)
    ap.add_argument("--step", type=int, nargs="+", required=True)
    ap.add_argument("--border", type=int, nargs="+", default=None)
    ap.add_argument("--labels", default=None, help="labels (.npy or .zarr), (*S) or (N, *S)")
    ap.add_argument("--missing-label", type=float, default=-1)
    ap.add_argument("--min-labelled", type=int, default=1)
    a = ap.parse_args(argv)

    def one(v):
        return v[0] if v is not None and len(v) == 1 else (tuple(v) if v is not None else None)

    try:
        q = Quilt(tuple(a.shape), one(a.window), one(a.step), border=one(a.border))
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    vox = int(np.prod(q.window))
    print(f"grid {q.spatial_shape}, window {q.window}, step {q.step}, border {q.border}")
    print(f"windows per axis {q.counts}: {q.num_windows} per image, {vox} voxels each")
    print(f"patch voxels / image voxels: {q.num_windows * vox / np.prod(q.spatial_shape):.2f}")
    if a.labels is None:
        return 0
    lab = _load_labels(a.labels)
    if tuple(lab.shape) == q.spatial_shape:
        lab = lab.unsqueeze(0)
    missing = a.missing_label
    if not lab.is_floating_point() and missing == int(missing):
        missing = int(missing)
    try:
        _, stats = q.plan(lab, missing, min_labelled=a.min_labelled)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(stats.table())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("plan",):
        print("usage: python -m fastquilt plan --shape Z Y X --window W --step S [--border B] "
              "[--labels labels.npy|.zarr] [--missing-label -1]", file=sys.stderr)
        return 2
    return plan(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
