"""``python -m fastquilt bench``: the ops on this machine against a memcpy of the same bytes on
the same device at the same thread count, in one run, compared with the reference machines'
ratios (``benchmarks/results/reference_bench.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import ops
from ..quilt import Quilt
from .machine import machine_info, warnings_for
from .timing import measure

REFERENCE = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "reference_bench.json"
SLOWER = 1.5  # an op's time / memcpy ratio this much above the reference's flags the machine


@dataclass(frozen=True)
class Workload:
    """A ``(1, 1, size^3)`` image, window and step of the benchmark."""

    size: int
    window: int
    step: int

    def as_dict(self) -> dict:
        return {"size": self.size, "window": self.window, "step": self.step}


def workload(device: torch.device, quick: bool) -> Workload:
    """The CPU's and the GPU's workloads; the GPU's full one is the stored H100 run's."""
    if device.type == "cuda":
        return Workload(256, 64, 32) if quick else Workload(512, 64, 32)
    return Workload(96, 32, 16) if quick else Workload(256, 64, 32)


def op_calls(wl: Workload, dtype: torch.dtype, device: torch.device) -> dict:
    """``{name: (fn, deterministic)}`` for the memcpy and each op, on preallocated buffers."""
    q = Quilt((wl.size,) * 3, wl.window, wl.step, border=wl.window // 8, border_weight=0.1)
    x = torch.randn(1, 1, *q.spatial_shape, device=device).to(dtype)
    patches = q.unstitch(x)
    src = torch.randn_like(patches, dtype=torch.float32).to(dtype)
    out = torch.empty_like(x)
    org, w = q.positions(1).to(device), q.weight_for(dtype, device)
    acc = torch.zeros(x.shape, dtype=ops.acc_dtype(dtype), device=device)
    acc0 = torch.zeros_like(acc)  # zeros: repeated normalisation never reaches subnormals
    calls = {
        "memcpy": (lambda: patches.copy_(src), False),
        "gather": (lambda: q.unstitch(x, out=patches), False),
        "scatter_atomic": (lambda: ops.scatter_add_windows_(patches, org, acc, None, weight=w),
                           False),
        "stitch_grid": (lambda: q.stitch(patches, out=out), False),
        "grid_normalize": (lambda: ops.grid_normalize_(acc0, w, q.step), False),
    }
    if device.type == "cuda":  # on the CPU the scatter is deterministic already
        calls["scatter_deterministic"] = calls["scatter_atomic"][0], True
    return calls, patches.numel() * patches.element_size()


def run_ops(wl: Workload, dtype: torch.dtype, device: torch.device, threads: int,
            min_run_time: float, measurements: list) -> dict:
    """Times of every op and its ratio to the memcpy, for one dtype and thread count."""
    calls, nbytes = op_calls(wl, dtype, device)
    res: dict = {"dtype": str(dtype).removeprefix("torch."), "threads": threads,
                 "patch_bytes": nbytes, "ops": {}}
    for name, (fn, deterministic) in calls.items():
        before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(deterministic)
        try:
            t, m = measure(fn, threads=threads, min_run_time=min_run_time,
                           label=f"{wl.size}^3 w{wl.window} s{wl.step} {res['dtype']}",
                           sub_label=f"{threads} threads", description=name)
        finally:
            torch.use_deterministic_algorithms(before)
        measurements.append(m)
        res["ops"][name] = t.as_dict()
    copy = res["ops"]["memcpy"]["median_s"]
    res["memcpy_GBps"] = 2 * nbytes / copy / 1e9  # read + write
    for r in res["ops"].values():
        r["x_memcpy"] = r["median_s"] / copy
    return res


def load_references(path: Path | None = None) -> list[dict]:
    """The reference runs (empty when the file is not there, e.g. an installed wheel)."""
    path = Path(path) if path is not None else REFERENCE
    if not path.exists():
        return []
    return json.loads(path.read_text())["references"]


def find_reference(refs: list[dict], device: torch.device, wl: Workload, run: dict,
                   gpu_name: str | None) -> dict | None:
    """The reference of the same device type, workload and dtype; the closest thread count
    (CPU) or the same GPU model first."""
    same = [r for r in refs if r["device"] == device.type and r["dtype"] == run["dtype"] and
            r["workload"] == wl.as_dict()]
    if not same:
        return None
    if device.type == "cuda":
        return next((r for r in same if gpu_name and r.get("gpu") == gpu_name), same[0])
    return min(same, key=lambda r: abs(r["threads"] - run["threads"]))


def compare(run: dict, ref: dict | None) -> list[str]:
    """Adds each op's reference ratio to ``run``; one warning per op far slower than it."""
    if ref is None:
        run["reference"] = None
        return []
    run["reference"] = {"machine": ref["machine"], "threads": ref.get("threads")}
    out = []
    for name, r in run["ops"].items():
        want = ref["x_memcpy"].get(name)
        r["reference_x_memcpy"] = want
        if want is not None and name != "memcpy" and r["x_memcpy"] > SLOWER * want:
            out.append(f"{run['dtype']} {run['threads']} threads: {name} takes "
                       f"{r['x_memcpy']:.2f}x the memcpy, the reference {want:.2f}x "
                       f"({ref['machine']})")
    return out


def scaling_warning(runs: list[dict]) -> list[str]:
    """A thread-scaling probe: the gather barely faster on more threads means no OpenMP, or
    cores busy with other work."""
    by_dtype: dict = {}
    for r in runs:
        by_dtype.setdefault(r["dtype"], []).append(r)
    out = []
    for dtype, rs in by_dtype.items():
        lo, hi = min(rs, key=lambda r: r["threads"]), max(rs, key=lambda r: r["threads"])
        if hi["threads"] > lo["threads"]:
            speedup = lo["ops"]["gather"]["median_s"] / hi["ops"]["gather"]["median_s"]
            if speedup < 1.15:
                out.append(f"{dtype}: gather on {hi['threads']} threads is only {speedup:.2f}x "
                           f"faster than on {lo['threads']}: no OpenMP in the build, or the "
                           "cores are busy")
    return out


def run_bench(device: torch.device, dtypes: list[torch.dtype], threads: list[int],
              quick: bool, reference: Path | None = None) -> tuple[dict, list]:
    """The whole benchmark: ``(results, Measurements)``."""
    wl = workload(device, quick)
    info = machine_info(device)
    refs = load_references(reference)
    min_run_time = 0.05 if quick else 0.3
    measurements: list = []
    runs, flagged = [], warnings_for(info)
    gpu_name = info.get("gpu", {}).get("name")
    for dtype in dtypes:
        for t in threads if device.type == "cpu" else [torch.get_num_threads()]:
            run = run_ops(wl, dtype, device, t, min_run_time, measurements)
            flagged += compare(run, find_reference(refs, device, wl, run, gpu_name))
            runs.append(run)
    flagged += scaling_warning(runs)
    if device.type == "cuda":
        info["gpu"] = info["gpu"] | machine_info(device).get("gpu", {})  # state after load
        flagged = list(dict.fromkeys(flagged + warnings_for(info)))
    return {"machine": info, "workload": wl.as_dict(), "quick": quick, "runs": runs,
            "warnings": flagged}, measurements


def table(res: dict) -> str:
    """The results as text: per dtype and thread count, each op's median time, IQR, ratio to
    the memcpy, and the reference's ratio."""
    wl = res["workload"]
    m = res["machine"]
    lines = [f"fastquilt bench on {m.get('gpu', {}).get('name') or m['cpu']} "
             f"({m['device']}), (1,1,{wl['size']}^3) window {wl['window']} step {wl['step']}; "
             f"OpenMP {m['openmp']}, AVX2 {m['avx2']}"]
    for run in res["runs"]:
        ref = run.get("reference")
        lines.append(f"\n{run['dtype']}, {run['threads']} threads; memcpy of "
                     f"{run['patch_bytes'] / 1e6:.1f} MB patches: {run['memcpy_GBps']:.1f} GB/s "
                     "read+write")
        lines.append(f"  {'op':22s} {'median ms':>10s} {'IQR ms':>8s} {'x memcpy':>9s} "
                     f"{'reference':>10s}")
        for name, r in run["ops"].items():
            want = r.get("reference_x_memcpy")
            shown = f"{want:10.2f}" if want is not None else f"{'-':>10s}"
            lines.append(f"  {name:22s} {r['median_s'] * 1e3:10.3f} {r['iqr_s'] * 1e3:8.3f} "
                         f"{r['x_memcpy']:9.2f} {shown}")
        lines.append(f"  reference: {ref['machine']}, {ref['threads']} threads" if ref else
                     "  reference: none for this device, workload and dtype")
    lines.append("")
    lines += [f"WARNING: {w}" for w in res["warnings"]] or \
        ["no warnings: ratios within 1.5x of the references, OpenMP and AVX2 present"]
    return "\n".join(lines)
