"""The ``bench`` and ``tune`` subcommands: arguments, tables, files. Bad arguments end in one
line ``error: ...`` and exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .bench import run_bench, table
from .settings import save_tuning
from .tune import run_tune

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line and exits with status 2."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _device(name: str) -> torch.device | str:
    """A device the ops can run on here, or an error message."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        return f"--device {name!r} is not a device; use cpu or cuda"
    if dev.type not in ("cpu", "cuda"):
        return f"--device must be cpu or cuda, got {name!r}"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return "--device cuda but CUDA is not available here; use --device cpu"
    return dev


def bench_parser() -> Parser:
    ap = Parser(prog="python -m fastquilt bench",
                description="The ops (gather, scatter-add, grid stitch, normalisation) against "
                            "a memcpy of the same bytes, compared with reference machines.")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--dtype", nargs="+", default=["float32"], choices=list(DTYPES))
    ap.add_argument("--threads", nargs="+", type=int, default=None,
                    help="CPU thread counts to run at (default: torch's current count)")
    ap.add_argument("--quick", action="store_true", help="a small workload, short timings")
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    ap.add_argument("--reference", default=None,
                    help="reference results (default benchmarks/results/reference_bench.json)")
    ap.add_argument("--compare", action="store_true",
                    help="also print torch.utils.benchmark.Compare's table")
    return ap


def bench_main(argv: list[str]) -> int:
    a = bench_parser().parse_args(argv)
    dev = _device(a.device)
    if isinstance(dev, str):
        return fail(dev)
    threads = a.threads or [torch.get_num_threads()]
    if min(threads) < 1:
        return fail(f"--threads must be positive, got {threads}")
    if a.reference is not None and not Path(a.reference).exists():
        return fail(f"--reference {a.reference} does not exist")
    res, measurements = run_bench(dev, [DTYPES[d] for d in a.dtype], threads, a.quick,
                                  a.reference)
    print(table(res))
    if a.compare:
        from torch.utils.benchmark import Compare

        Compare(measurements).print()
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {a.json}")
    return 0


def tune_parser() -> Parser:
    ap = Parser(prog="python -m fastquilt tune",
                description="Measure a model's sliding-window inference on this machine "
                            "within a time budget; write the chosen settings for `infer "
                            "--tuning` and fastquilt.tuning.load_tuning.")
    ap.add_argument("--model", required=True,
                    help="model file (.pt2 or TorchScript) or module:function, as for infer")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", default=None, help="(N, C, *S) zarr array or .npy file")
    src.add_argument("--shape", type=int, nargs="+", default=None,
                     help="spatial shape Y X or Z Y X of random input")
    ap.add_argument("--channels", type=int, default=1, help="input channels with --shape")
    ap.add_argument("--window", type=int, nargs="+", required=True)
    ap.add_argument("--step", type=int, nargs="+", default=None,
                    help="fix the step (default: choose it by --min-overlap)")
    ap.add_argument("--min-overlap", type=float, default=0.25,
                    help="smallest overlap (1 - step/window) a chosen step keeps")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget-seconds", type=float, default=60.0)
    ap.add_argument("--max-batch", type=int, default=1024)
    ap.add_argument("--weight", default="gaussian",
                    choices=["gaussian", "hann", "linear", "flat", "border"])
    ap.add_argument("--chunks", type=int, default=None, help="output chunk per axis (zarr)")
    ap.add_argument("--out", default="tuned.json", help="the tuned settings (JSON)")
    ap.add_argument("--plot", default=None, help="a PNG of the measurements")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def tune_table(res: dict) -> str:
    """The measurements and the choice, as text."""
    lines = [f"tune on {res['context']['device']}, window {res['settings']['window']}, "
             f"{res['elapsed_s']:.1f} s of a {res['context']['budget_seconds']:.0f} s budget",
             f"\n{'batch':>6s} {'windows/s':>10s} {'voxels/s':>10s} {'peak MB':>9s}"]
    for r in res["batch"]["rows"]:
        if r.get("out_of_memory"):
            lines.append(f"{r['batch_size']:6d} out of memory (caught; stopped growing)")
        else:
            lines.append(f"{r['batch_size']:6d} {r['windows_per_s']:10.1f} "
                         f"{r['voxels_per_s']:10.3g} {r['peak_bytes'] / 1e6:9.1f}")
    method = next((r["memory_method"] for r in res["batch"]["rows"] if "memory_method" in r), "")
    lines.append(f"stopped: {res['batch']['stopped']}; memory: {method}")
    lines.append(f"\n{'step':>14s} {'overlap':>8s} {'ns/out voxel':>13s} {'full image s':>13s}")
    for r in res["step"]["rows"]:
        lines.append(f"{str(tuple(r['step'])):>14s} {r['overlap']:8.3f} "
                     f"{r['seconds_per_output_voxel'] * 1e9:13.2f} {r['predicted_s']:13.2f}")
    v = res.get("variants", {})
    if "deterministic_overhead" in v:
        lines.append(f"\ndeterministic scatter costs {100 * v['deterministic_overhead']:+.1f}% "
                     "against atomic")
    elif "note" in v:
        lines.append(f"\n{v['note']}")
    ooc = res.get("out_of_core")
    if ooc:
        lines.append(f"\nout of core, crop {tuple(ooc['crop'])}, chunk {ooc['chunk']}:")
        for r in ooc["rows"]:
            lines.append(f"  reader_threads {r['reader_threads']} unit {r['unit']:4d}: "
                         f"{r['seconds']:.2f} s")
    for s in res["skipped"]:
        lines.append(f"skipped for the budget: {s}")
    lines.append(f"\nchosen: {res['settings']} {res['out_of_core_settings'] or ''}")
    return "\n".join(lines)


def tune_main(a: argparse.Namespace, model, x=None) -> int:
    """Run ``tune`` with the parsed arguments, the model (resolved by the CLI) and the opened
    input (or None for --shape)."""
    dev = _device(a.device)
    if isinstance(dev, str):
        return fail(dev)
    if a.channels < 1:
        return fail(f"--channels must be >= 1, got {a.channels}")
    if a.plot is not None and not a.plot.lower().endswith(".png"):
        return fail(f"--plot must name a .png file, got {a.plot}")
    try:
        res = run_tune(model, window=a.window, step=a.step, x=x, shape=a.shape,
                       channels=a.channels, device=dev, budget_seconds=a.budget_seconds,
                       max_batch=a.max_batch, min_overlap=a.min_overlap, weight=a.weight,
                       chunks=a.chunks, progress=not a.no_progress)
    except (ValueError, TypeError) as e:
        return fail(str(e))
    print(tune_table(res))
    measured = {k: res[k] for k in ("batch", "step", "variants", "out_of_core", "skipped",
                                    "elapsed_s") if k in res}
    context = dict(res["context"], model=a.model, input=a.input)
    save_tuning(a.out, res["settings"], res["out_of_core_settings"], context, measured)
    print(f"wrote {a.out}")
    if a.plot:
        from .plot import draw_plot

        draw_plot(res, a.plot)
        print(f"wrote {a.plot}")
    return 0
