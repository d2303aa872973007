"""Command line.

``python -m fastquilt plan --shape Z Y X --window 64 --step 32 --border 8 [--labels labels.npy|
labels.zarr --missing-label -1]`` prints the grid and, with labels, what cleaning keeps (the rows
of the qlty paper's Table 1).

``python -m fastquilt infer --model model.pt2 --input in.zarr --output out.zarr --window 64
--step 48 --batch-size 8 [--scheduler tcp://...]`` runs out-of-core sliding-window inference
(a model file told apart by its contents — ``torch.export`` ``.pt2``, AOTInductor,
TorchScript — or a ``module:function`` factory with optional ``--weights``, built on
``--device``), resumable; an OME-Zarr ``--input`` (``--level``) and a ``*.ome.zarr``
``--output`` (``--levels``, ``--voxel-size``) keep NGFF metadata and write a pyramid;
``--tuning tuned.json`` takes the window, step, batch size, unit and reader/writer threads
from a tuned file (flags given win).

``python -m fastquilt bench`` times the ops against a memcpy on this machine and compares with
the reference machines; ``python -m fastquilt tune`` measures a model and writes a tuned file
(:mod:`fastquilt.tuning`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np

from .arrays import OneImage
from .formats import open_ome_zarr
from .formats.ome_zarr import is_ome_zarr
from .outofcore import ModelFactory, sliding_window_zarr
from .quilt import Quilt
from .training import select_windows
from .tuning.commands import bench_main, tune_main, tune_parser
from .tuning.settings import load_tuning


def _open_labels(path: str):
    """The labels on disk (a memmap or a zarr array): cleaning reads them slab by slab."""
    if not path.endswith(".npy") and not path.rstrip("/").endswith(".zarr"):
        raise SystemExit(f"error: --labels must be a .npy or .zarr path, got {path}")
    if not Path(path).exists():
        raise SystemExit(f"error: labels {path} do not exist")
    try:
        if path.endswith(".npy"):
            return np.load(path, mmap_mode="r")
        import zarr

        return zarr.open_array(path, mode="r")
    except Exception as e:  # unreadable file: say which, without a traceback
        raise SystemExit(f"error: cannot read labels {path}: {e}") from e


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
    lab = _open_labels(a.labels)
    if tuple(lab.shape) == q.spatial_shape:
        lab = OneImage(lab)  # (*S) -> (1, *S), still read slab by slab
    missing = a.missing_label
    if not np.issubdtype(np.dtype(lab.dtype), np.floating) and np.isfinite(missing) and \
            missing == int(missing):
        missing = int(missing)  # (nan or 0.5 stay floats: the labels' check refuses them)
    try:
        _, stats = select_windows(q, lab, missing, min_labelled=a.min_labelled)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(stats.table())
    return 0


def _model_spec(spec: str, weights: str | None = None):
    """A model file (``torch.export`` ``.pt2``, AOTInductor, TorchScript), or
    ``module:function`` returning a model (built once per worker, on the device), with
    ``weights`` (a state dict) loaded into it."""
    if Path(spec).exists():  # a file, even one whose path holds a ':'
        if weights is not None:
            raise SystemExit(f"error: --weights goes with --model module:function (a factory "
                             f"that builds the model); {spec} is a file")
        return ModelFactory(os.path.abspath(spec))  # absolute: workers start elsewhere
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", spec):
        import importlib

        mod, fn = spec.split(":", 1)
        try:
            factory = getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as e:
            raise SystemExit(f"error: cannot import model factory {spec!r}: {e}") from e
        if weights is None:
            return ModelFactory(factory)
        if not Path(weights).is_file():
            raise SystemExit(f"error: --weights {weights} does not exist")
        return ModelFactory.with_weights(factory, os.path.abspath(weights))
    raise SystemExit(f"error: model file {spec} does not exist (nor is it a module:function)")


def _open_input(path: str, level: int | None = None):
    """A ``.npy`` file, a zarr array, or level ``level`` (default 0) of an OME-Zarr image
    (recognised by its metadata)."""
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"error: input {path} does not exist")
    if is_ome_zarr(path):
        try:
            return open_ome_zarr(path, level or 0)
        except ValueError as e:
            raise SystemExit(f"error: --input {path}: {e}") from None
    if level is not None:
        raise SystemExit(f"error: --level applies to an OME-Zarr input; {path} is not one")
    if path.endswith(".npy"):
        return np.load(path, mmap_mode="r")
    import zarr

    try:
        return zarr.open_array(path, mode="r")
    except Exception as e:
        raise SystemExit(f"error: cannot read input {path} as a zarr array: {e}") from e


def infer(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m fastquilt infer",
        description="Sliding-window inference from a zarr (or .npy) array into a zarr v3 array, "
                    "bounded memory, resumable (re-run the same command after a crash).")
    ap.add_argument("--model", required=True, action="append",
                    help="model file (torch.export .pt2 with a dynamic batch dimension, an "
                    "AOTInductor package, or TorchScript (deprecated)) or module:function; "
                    "repeat for an ensemble")
    ap.add_argument("--weights", default=None, action="append",
                    help="state dict (torch.save) loaded into the model module:function builds "
                    "(with several --model: one --weights per --model, in order)")
    ap.add_argument("--input", required=True, help="(N, C, *S) zarr array or .npy file, or an "
                    "OME-Zarr image (its metadata is kept)")
    ap.add_argument("--level", type=int, default=None,
                    help="level of an OME-Zarr input to read (default 0: full resolution)")
    ap.add_argument("--output", required=True, help="output zarr v3 path; *.ome.zarr writes an "
                    "OME-Zarr 0.5 image with a multiscale pyramid (several outputs: "
                    "docs/formats.md)")
    ap.add_argument("--levels", type=int, default=None, help="pyramid levels besides level 0 "
                    "of an OME-Zarr output (default: until it fits a screen)")
    ap.add_argument("--voxel-size", type=float, nargs="+", default=None,
                    help="voxel size per spatial axis (Z Y X) for an OME-Zarr output (default: "
                    "the OME-Zarr input's, or 1)")
    ap.add_argument("--voxel-unit", default=None,
                    help="unit of --voxel-size, an NGFF unit name such as micrometer")
    ap.add_argument("--window", type=int, nargs="+", default=None, help="required without "
                    "--tuning")
    ap.add_argument("--step", type=int, nargs="+", default=None, help="required without "
                    "--tuning")
    ap.add_argument("--batch-size", type=int, default=None, help="default 8, or the tuned one")
    ap.add_argument("--weight", default="gaussian",
                    choices=["gaussian", "hann", "linear", "flat", "border"])
    ap.add_argument("--border", type=int, nargs="+", default=None)
    ap.add_argument("--chunks", type=int, nargs="+", default=None)
    ap.add_argument("--unit", type=int, nargs="+", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--scheduler", default=None, help="dask.distributed scheduler address")
    ap.add_argument("--tuning", default=None,
                    help="tuned file from `python -m fastquilt tune` (flags given win)")
    ap.add_argument("--tta", default="none", choices=["none", "flips", "all"],
                    help="test-time augmentations (flips; all: flips and axis permutations)")
    ap.add_argument("--activation", default="none", choices=["none", "softmax", "sigmoid"],
                    help="applied to every prediction before averaging")
    ap.add_argument("--outputs", nargs="+", default=["mean"],
                    help="any of mean std variance labels probability entropy (default mean; "
                    "anything else writes a zarr group with one array per output)")
    ap.add_argument("--max-memory", default=None,
                    help="bound on fastquilt's memory, e.g. 4G (default: half the RAM)")
    a = ap.parse_args(argv)

    def one(v):
        return v[0] if v is not None and len(v) == 1 else (tuple(v) if v is not None else None)

    tuned: dict = {}
    if a.tuning is not None:
        try:
            tuned = load_tuning(a.tuning, out_of_core=True)
        except ValueError as e:
            print(f"error: --tuning: {e}", file=sys.stderr)
            return 2
    for flag in ("window", "step"):
        if getattr(a, flag) is None and flag not in tuned:
            print(f"error: --{flag} is required (or give --tuning tuned.json)", file=sys.stderr)
            return 2
    window = one(a.window) if a.window is not None else tuned["window"]
    step = one(a.step) if a.step is not None else tuned["step"]
    batch_size = a.batch_size if a.batch_size is not None else tuned.get("batch_size", 8)
    unit = one(a.unit) if a.unit is not None else tuned.get("unit")
    chunks = one(a.chunks) if a.chunks is not None else tuned.get("chunks")
    threads = {k: tuned[k] for k in ("reader_threads", "writer_threads") if k in tuned}
    weights = a.weights or [None] * len(a.model)
    if len(weights) != len(a.model):
        raise SystemExit(f"error: {len(weights)} --weights for {len(a.model)} --model: give one "
                         "--weights per --model, in order (or none)")
    models = [_model_spec(m, w) for m, w in zip(a.model, weights)]
    model = models[0] if len(models) == 1 else models
    x = _open_input(a.input, a.level)
    ome = {k: v for k, v in (("levels", a.levels), ("voxel_size", one(a.voxel_size)),
                             ("voxel_unit", a.voxel_unit)) if v is not None}
    ensemble = {}
    if a.outputs != ["mean"] or a.tta != "none" or a.activation != "none" or len(models) > 1:
        ensemble = dict(outputs=tuple(a.outputs), tta=a.tta, activation=a.activation)
    client = None
    if a.scheduler:
        from distributed import Client

        client = Client(a.scheduler)
    try:
        out = sliding_window_zarr(
            model, x, a.output, window, step, batch_size, a.weight,
            border=one(a.border), chunks=chunks, unit=unit, device=a.device,
            progress=True, client=client, max_memory=a.max_memory, **threads, **ensemble,
            **ome)
    except (ValueError, TypeError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if client is not None:
            client.close()
    if hasattr(out, "array_keys"):  # a group of outputs
        for name in a.outputs:
            print(f"wrote {a.output}/{name}: shape {out[name].shape}, dtype {out[name].dtype}")
    else:
        print(f"wrote {a.output}: shape {out.shape}, dtype {out.dtype}")
    return 0


USAGE = """usage:
  python -m fastquilt plan --shape Z Y X --window W --step S [--border B]
                           [--labels labels.npy|labels.zarr] [--missing-label -1]
  python -m fastquilt infer --model model.pt2|module:function [--weights w.pt]
                            --input in.zarr|in.ome.zarr [--level 0]
                            --output out.zarr|out.ome.zarr [--levels L]
                            [--voxel-size Z Y X --voxel-unit micrometer]
                            --window W --step S [--batch-size 8]
                            [--scheduler tcp://host:8786] [--tuning tuned.json]
                            [--model m2.pt2 ...] [--tta none|flips|all]
                            [--activation none|softmax|sigmoid] [--max-memory 4G]
                            [--outputs mean std labels probability entropy]
  python -m fastquilt bench [--device cpu|cuda] [--dtype float32 ...] [--threads N ...]
                            [--quick] [--json PATH]
  python -m fastquilt tune --model model.pt|module:function (--input in.zarr | --shape Z Y X)
                           --window W [--step S] [--device cpu|cuda] [--budget-seconds 60]
                           [--out tuned.json] [--plot tuned.png]"""


def tune(argv: list[str]) -> int:
    """``tune``: the model and input are opened as ``infer`` opens them."""
    a = tune_parser().parse_args(argv)
    try:
        model = _model_spec(a.model)
        x = _open_input(a.input) if a.input is not None else None
    except SystemExit as e:  # the openers' one-line errors, with the usage error status
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        raise
    return tune_main(a, model, x)


COMMANDS = {"plan": plan, "infer": infer, "bench": bench_main, "tune": tune}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])
