"""GPU benchmark: gather, atomic scatter-add and deterministic stitch against a device-to-device
copy of the same bytes, and against MONAI / qlty when installed. Ratios measured in one run.

Workload (issue 3): (1, 1, 512^3), window 64, step 32, float32 and bfloat16.

Each op's bandwidth is the bytes it must move at least, divided by its time, against the
bandwidth of a device-to-device copy of the patches measured in the same run:
  gather       reads the windows P and writes the patches P                 -> 2 P
  scatter_add  reads the patches P and adds each element into an fp32/fp64
               accumulator element (P_acc bytes of atomics)                  -> P + P_acc
               (atomic: one launch; deterministic: torch.use_deterministic_algorithms,
               one launch per set of disjoint windows)
  stitch_grid  reads the patches P and writes the output image O             -> P + O
               (stitch_grid: the aligned fast path on every column; _general: the same with
               the patches at an odd element offset, so the general body everywhere;
               _split: an image 16 bytes narrower, which puts the last window off the fast
               path's chunk grid: fast path left of it, general body right of it;
               _w96s48 / _w48s24: other grids (the second image 480^3), views of the same
               patch storage, each with its own P + O: bf16 takes the fast path's narrower
               shapes there, 32 and 16 bytes per thread)
(P_acc = P for float32; for bfloat16 P_acc = 2 P. The stitch's O is ~ P / 6.6 here.)
`--report results.json` reprints a stored run with these definitions.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import fastquilt as fq
from fastquilt import ops as _ops


def device_time(fn, device: torch.device, reps: int = 5, warmup: int = 2) -> float:
    """Median seconds per call: CUDA events on a GPU, the wall clock on the CPU (where the
    benchmark only runs as a smoke test of this script)."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        if device.type != "cuda":
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            continue
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return sorted(times)[len(times) // 2]


OPS = ("gather", "scatter_atomic", "scatter_deterministic", "stitch_grid", "stitch_grid_general",
       "stitch_grid_split", "stitch_grid_w96s48", "stitch_grid_w48s24")
# Other grids timed by the stitch: (name, image size - the benchmark's size, window, step).
OTHER_GRIDS = (("stitch_grid_w96s48", 0, 96, 48), ("stitch_grid_w48s24", -32, 48, 24))


def derive(r: dict) -> None:
    """Adds each op's minimal bytes, bandwidth and fraction of the copy bandwidth to r."""
    P = r["patch_GB"] * 1e9
    acc_size = 8 if r["dtype"] == "float64" else 4
    elem = {"float64": 8, "float32": 4}.get(r["dtype"], 2)
    out_bytes = r.get("out_GB", r["shape"][0] * r["shape"][1] * r["shape"][2] * elem / 1e9) * 1e9
    scatter_bytes = P + P * acc_size / elem
    nbytes = {"gather": 2 * P, "scatter_atomic": scatter_bytes,
              "scatter_deterministic": scatter_bytes,
              "stitch_grid": P + out_bytes, "stitch_grid_general": P + out_bytes,
              "stitch_grid_split": P + r.get("split_out_GB", 0) * 1e9}
    copy_bw = 2 * P / r["copy_s"]
    r["copy_TBps"] = copy_bw / 1e12
    for k in OPS:
        if f"{k}_s" not in r:  # older runs lack some ops
            continue
        b = r.get(f"{k}_bytes", nbytes.get(k))  # other grids: their own bytes
        r[f"{k}_GB"] = b / 1e9
        r[f"{k}_TBps"] = b / r[f"{k}_s"] / 1e12
        r[f"{k}_frac_of_copy_bw"] = b / r[f"{k}_s"] / copy_bw
        r.pop(f"{k}_frac_of_copy", None)  # older runs: time ratio to the copy


# Issue 3's targets (on an H100): share of the copy bandwidth, and speed-ups over the peers.
TARGETS = (("gather", "gather_frac_of_copy_bw", 0.70), ("atomic scatter-add",
           "scatter_atomic_frac_of_copy_bw", 0.50), ("deterministic stitch",
           "stitch_grid_frac_of_copy_bw", 0.60), ("vs qlty", "speedup_vs_qlty", 50.0),
           ("vs MONAI", "speedup_vs_monai", 3.0))


def targets(device: str, r: dict) -> list[str]:
    """One line per target of issue 3 that this run measured: met or not, with the number."""
    lines = []
    for name, key, want in TARGETS:
        if key not in r:
            continue
        got, frac = r[key], key.endswith("_frac_of_copy_bw")
        shown = f"{100 * got:.1f}% (target {100 * want:.0f}%)" if frac else \
            f"{got:.1f}x (target {want:.0f}x)"
        lines.append(f"  target {name:22s}: {shown} {'met' if got >= want else 'NOT MET'}")
    if lines and "H100" not in device:
        lines.append(f"  (the targets are stated for an H100; this run: {device})")
    return lines


def report(device: str, r: dict) -> None:
    print(f"\n{device}  {r['dtype']}  {tuple(r['shape'])} w{r['window']} s{r['step']}  "
          f"{r['windows']} windows, {r['patch_GB']:.2f} GB of patches")
    print(f"  d2d copy of the patch bytes : {r['copy_s'] * 1e3:8.2f} ms "
          f"({r['copy_TBps']:.2f} TB/s read+write)")
    for k in (k for k in OPS if k + "_s" in r):
        print(f"  {k:28s}: {r[k + '_s'] * 1e3:8.2f} ms, {r[k + '_GB']:5.2f} GB moved, "
              f"{r[k + '_TBps']:.2f} TB/s = {100 * r[k + '_frac_of_copy_bw']:5.1f}% of copy "
              "bandwidth")
    if "split_shape" in r:
        print(f"  (stitch_grid_split: image {tuple(r['split_shape'])})")
    print(f"  sliding_window identity     : {r['fq_sliding_window_identity_s'] * 1e3:8.2f} ms")
    for k in ("speedup_vs_monai", "speedup_vs_qlty"):
        if k in r:
            print(f"  {k:28s}: {r[k]:8.1f}x")
    for k in ("monai", "qlty"):
        if k in r:
            print(f"  {k}: {r[k]}")
    print(f"  round-trip max error        : {r['roundtrip_max_err']:.2e}")
    if device == "cpu":  # a smoke test of the script: its numbers are no GPU's
        print("  (CPU: a smoke test of this script; the targets are for a GPU)")
        return
    for line in targets(device, r):
        print(line)


def run(size: int, window: int, step: int, dtype: torch.dtype, with_peers: bool,
        device: str = "cuda") -> dict:
    dev = torch.device(device)

    def timed(fn, **kw) -> float:
        return device_time(fn, dev, **kw)

    shape = (size,) * 3
    q = fq.Quilt(shape, window, step, border=8, border_weight=0.1)
    x = torch.randn(1, 1, *shape, device=dev).to(dtype)
    patches = torch.empty((q.num_windows, 1, *q.window), device=dev, dtype=dtype)
    out = torch.empty_like(x)
    org = q.positions(1).to(dev)
    w = q.weight_for(dtype, x.device)
    acc = torch.zeros((1, 1, *shape), device=dev, dtype=_ops.acc_dtype(dtype))
    pbytes = patches.numel() * patches.element_size()
    flat = torch.empty(patches.numel() + 1, device=dev, dtype=dtype)
    src = flat[:patches.numel()].view(patches.shape)  # copy source
    odd = flat[1:].view(patches.shape)  # patches at an odd element offset: no vector accesses
    r: dict = {"dtype": str(dtype).replace("torch.", ""), "shape": shape, "window": window,
               "step": step, "windows": q.num_windows, "patch_GB": pbytes / 1e9}
    r["copy_s"] = timed(lambda: patches.copy_(src))
    r["gather_s"] = timed(lambda: q.unstitch(x, out=patches))
    r["scatter_atomic_s"] = timed(
        lambda: fq.scatter_add_windows_(patches, org, acc, None, weight=w))
    torch.use_deterministic_algorithms(True)  # disjoint window sets, one launch each
    try:
        r["scatter_deterministic_s"] = timed(
            lambda: fq.scatter_add_windows_(patches, org, acc, None, weight=w))
    finally:
        torch.use_deterministic_algorithms(False)
    r["stitch_grid_s"] = timed(lambda: q.stitch(patches, out=out))
    r["stitch_grid_general_s"] = timed(lambda: q.stitch(odd, out=out))
    split_shape = (size, size, size - 16 // patches.element_size())
    q_split = fq.Quilt(split_shape, window, step, border=8, border_weight=0.1)
    assert q_split.num_windows == q.num_windows  # the same patches fit
    out_split = torch.empty((1, 1, *split_shape), device=dev, dtype=dtype)
    r["stitch_grid_split_s"] = timed(lambda: q_split.stitch(patches, out=out_split))
    r["split_shape"] = split_shape
    r["split_out_GB"] = out_split.numel() * out_split.element_size() / 1e9
    for name, dsize, wk, sk in OTHER_GRIDS:
        qk = fq.Quilt((size + dsize,) * 3, wk, sk, border=8, border_weight=0.1)
        n = qk.num_windows * wk ** 3
        if size + dsize < wk or n > patches.numel():  # needs more than the patch storage
            continue
        pk = patches.view(-1)[:n].view(qk.num_windows, 1, *qk.window)
        out_k = torch.empty((1, 1, *qk.spatial_shape), device=dev, dtype=dtype)
        r[f"{name}_s"] = timed(lambda q_=qk, p_=pk, o_=out_k: q_.stitch(p_, out=o_))
        r[f"{name}_bytes"] = (n + out_k.numel()) * out_k.element_size()
    # fastquilt aggregation for the peers' comparison: unstitch + stitch (preallocated)
    r["fq_unstitch_stitch_s"] = r["gather_s"] + r["stitch_grid_s"]
    r["fq_sliding_window_identity_s"] = timed(
        lambda: fq.sliding_window(lambda p: p, x, window, step, batch_size=64, weight=None,
                                  border=8), reps=2, warmup=1)
    r["out_GB"] = out.numel() * out.element_size() / 1e9
    derive(r)
    # correctness of what was timed
    mean, _ = q.stitch(q.unstitch(x))
    r["roundtrip_max_err"] = float((mean.float() - x.float()).abs().max())
    if with_peers:
        try:
            from monai.inferers import sliding_window_inference

            def monai_run():
                return sliding_window_inference(x, (window,) * 3, 64, lambda p: p,
                                                overlap=1 - step / window, mode="constant")

            r["monai_sliding_window_s"] = timed(monai_run, reps=2, warmup=1)
            r["speedup_vs_monai"] = r["monai_sliding_window_s"] / r["fq_sliding_window_identity_s"]
        except Exception as e:  # noqa: BLE001 - optional peer
            r["monai"] = f"not run: {type(e).__name__}: {e}"[:200]
        try:  # qlty takes bf16 too (its stitch returns float32), so both dtypes are timed
            from qlty import NCZYXQuilt

            ql = NCZYXQuilt(*shape, (window,) * 3, (step,) * 3, 8, border_weight=0.1)
            xc = x.cpu()
            small = torch.zeros(1, 1, *(2 * window,) * 3, dtype=dtype)
            sq = NCZYXQuilt(*small.shape[2:], (window,) * 3, (step,) * 3, 8, border_weight=0.1)
            sq.stitch(sq.unstitch(small))  # numba's JIT, outside the timing
            t0 = time.perf_counter()
            pq = ql.unstitch(xc)
            ql.stitch(pq)
            r["qlty_cpu_unstitch_stitch_s"] = time.perf_counter() - t0
            r["speedup_vs_qlty"] = r["qlty_cpu_unstitch_stitch_s"] / r["fq_unstitch_stitch_s"]
        except Exception as e:  # noqa: BLE001 - optional peer
            r["qlty"] = f"not run: {type(e).__name__}: {e}"[:200]
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--step", type=int, default=32)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--report", default=None, help="reprint a stored results JSON and exit")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of this script only")
    a = ap.parse_args()
    if a.report:
        with open(a.report) as f:
            res = json.load(f)
        for r in res["runs"]:
            derive(r)
            report(res["device"], r)
        return
    name = torch.cuda.get_device_name() if a.device.startswith("cuda") else a.device
    res = {"device": name, "torch": torch.__version__,
           "python": platform.python_version(), "runs": []}
    for dtype in (torch.float32, torch.bfloat16):
        r = run(a.size, a.window, a.step, dtype, not a.no_peers, a.device)
        res["runs"].append(r)
        report(res["device"], r)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
