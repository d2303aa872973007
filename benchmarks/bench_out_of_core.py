"""Out-of-core benchmark: a (1, 1, S^3) float32 zarr input (chunks 64^3), window 64, step 48.
fastquilt in one process and on a LocalCluster(2 workers), qlty 1.5.0's LargeNCZYXQuilt, and
MONAI's PatchInferer + ZarrAvgMerger when it runs; identity model and a small conv net. Each
contender runs in its own process (fastquilt's after a small untimed job of the same kind,
in that process and on every worker); wall time, peak memory (max RSS; for the cluster the
largest worker and the client) and the ratio to the time of just reading the input windows are
printed in one run.

    python benchmarks/bench_out_of_core.py [--size 512] [--skip-qlty] [--skip-peers]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WINDOW, STEP = 64, 48


def small_net():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv3d(4, 1, 3, padding=1))


def identity(p):
    return p


def warm_up(model, work: str, client=None) -> None:
    """A small job of the same kind first (256^3, units of 64 planes: two bands on a
    cluster), untimed: each process's first-run costs (zarr's import and event loop, thread
    pools, first allocations) are not counted, in one process as on every worker."""
    import zarr

    import fastquilt as fq

    src = Path(work) / f"warm-{'cluster' if client else 'one'}-in.zarr"
    small = zarr.create_array(store=str(src), shape=(1, 1, 256, 256, 256), dtype="float32",
                              chunks=(1, 1, 64, 64, 64), compressors=None, fill_value=0.5,
                              overwrite=True)
    out = Path(work) / f"{src.stem}-out.zarr"
    shutil.rmtree(out, ignore_errors=True)  # (a new run, not a resume of another contender's)
    fq.sliding_window(model, small, WINDOW, STEP, batch_size=8, weight="border", border=8,
                      out=out, chunks=64, unit=64, compressors=None, client=client)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(impl: str, model_name: str, src: str, work: str) -> dict:
    import numpy as np
    import torch
    import zarr

    torch.set_num_threads(2)
    x = zarr.open_array(src, mode="r")
    model = identity if model_name == "identity" else small_net()
    out = str(Path(work) / f"{impl}-{model_name}.zarr")
    res: dict = {"impl": impl, "model": model_name}
    t0 = time.perf_counter()
    if impl == "read-only":
        import fastquilt as fq

        q = fq.Quilt(x.shape[2:], WINDOW, STEP)
        for o in q.positions(1).tolist():
            _ = np.asarray(x[(o[0], slice(None), *[slice(s, s + WINDOW) for s in o[1:]])])
    elif impl == "fastquilt":
        import fastquilt as fq

        warm_up(model, work)
        t0 = time.perf_counter()
        fq.sliding_window(model, x, WINDOW, STEP, batch_size=8, weight="border", border=8,
                          out=out, chunks=64, unit=128, compressors=None)
    elif impl == "fastquilt-cluster":
        import distributed

        import fastquilt as fq
        from fastquilt.distributed import local_cluster

        with local_cluster(2, 1, dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            # cluster start-up and the workers' first job not counted (as this process's)
            warm_up(model, work, client)
            t0 = time.perf_counter()
            fq.sliding_window(model, x, WINDOW, STEP, batch_size=8, weight="border", border=8,
                              out=out, chunks=64, unit=128, compressors=None, client=client)
            res["seconds"] = time.perf_counter() - t0
            peaks = client.run(peak_mib)
            res["worker_peak_MiB"] = max(peaks.values())
    elif impl == "qlty":
        import qlty

        S = x.shape[2:]
        ql = qlty.LargeNCZYXQuilt(str(Path(work) / "qlty"), 1, *S, (WINDOW,) * 3, (STEP,) * 3,
                                  8, border_weight=0.1)
        for i in range(ql.N_chunks):
            n, zz, yy, xx = np.unravel_index(i, (1, ql.nZ, ql.nY, ql.nX))
            st = [min(a * STEP, s - WINDOW) for a, s in zip((zz, yy, xx), S)]
            patch = torch.from_numpy(np.asarray(
                x[(n, slice(None), *[slice(s, s + WINDOW) for s in st])]))
            with torch.no_grad():
                y = model(patch.unsqueeze(0))
            ql.stitch(y, i)
        ql.return_mean()
    elif impl == "monai":
        from monai.inferers import PatchInferer, SlidingWindowSplitter, ZarrAvgMerger

        inferer = PatchInferer(
            splitter=SlidingWindowSplitter(patch_size=WINDOW, overlap=1 - STEP / WINDOW),
            merger_cls=ZarrAvgMerger, batch_size=8, store=str(Path(work) / "monai.zarr"),
            count_dtype="float32")
        xt = torch.from_numpy(np.asarray(x[...]))
        with torch.no_grad():
            inferer(xt, model)
    res.setdefault("seconds", time.perf_counter() - t0)
    res["peak_MiB"] = peak_mib()
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--skip-qlty", action="store_true")
    ap.add_argument("--skip-peers", action="store_true", help="fastquilt's contenders only")
    ap.add_argument("--json", default=None,
                    help="where to write the results (default: the stored results, full runs only)")
    ap.add_argument("--impl", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default="identity", help=argparse.SUPPRESS)
    ap.add_argument("--src", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.impl:
        print(json.dumps(run(a.impl, a.model, a.src, a.work)))
        return
    import numpy as np
    import zarr

    work = tempfile.mkdtemp(prefix="fq_ooc_bench_")
    src = str(Path(work) / "in.zarr")
    z = zarr.create_array(store=src, shape=(1, 1, *(a.size,) * 3), chunks=(1, 1, 64, 64, 64),
                          dtype="float32", compressors=None)
    rng = np.random.default_rng(0)
    for i in range(0, a.size, 64):
        z[0, 0, i:i + 64] = rng.standard_normal((min(64, a.size - i), a.size, a.size),
                                                dtype=np.float32)
    plan = [("read-only", "identity"), ("fastquilt", "identity"),
            ("fastquilt-cluster", "identity"), ("fastquilt", "conv"),
            ("fastquilt-cluster", "conv"), ("monai", "identity")]
    if not (a.skip_qlty or a.skip_peers):
        plan.append(("qlty", "identity"))
    if a.skip_peers:
        plan.remove(("monai", "identity"))
    results = []
    for impl, model in plan:
        p = subprocess.run([sys.executable, __file__, "--impl", impl, "--model", model,
                            "--src", src, "--work", work], capture_output=True, text=True)
        if p.returncode != 0:
            err = (p.stderr.strip().splitlines() or ["?"])[-1][:160]
            results.append({"impl": impl, "model": model, "error": err})
            continue
        results.append(json.loads(p.stdout.strip().splitlines()[-1]))
    ref = {r["model"]: r for r in results if r["impl"] == "fastquilt" and "error" not in r}
    read = next(r["seconds"] for r in results if r["impl"] == "read-only")
    print(f"\n(1,1,{a.size}^3) float32 zarr, window {WINDOW}, step {STEP}, 2-core machine")
    print(f"  {'contender':20s} {'model':9s} {'seconds':>8s} {'x read-only':>11s} "
          f"{'peak MiB':>9s}  vs fastquilt")
    for r in results:
        if "error" in r:
            print(f"  {r['impl']:20s} {r['model']:9s} did not run: {r['error']}")
            continue
        peak = f"{r['peak_MiB']:9.0f}"
        if "worker_peak_MiB" in r:
            peak += f" (+{r['worker_peak_MiB']:.0f}/worker)"
        rel = ""
        if r["model"] in ref and r["impl"] not in ("fastquilt", "read-only"):
            rel = f"{r['seconds'] / ref[r['model']]['seconds']:.1f}x the time"
        print(f"  {r['impl']:20s} {r['model']:9s} {r['seconds']:8.2f} {r['seconds'] / read:11.2f} "
              f"{peak}  {rel}")
    shutil.rmtree(work, ignore_errors=True)
    # keep the stored full run
    if a.json is None and (a.size != 512 or a.skip_qlty or a.skip_peers):
        return
    out = Path(a.json or Path(__file__).parent / "results" / "bench_out_of_core.json")
    out.write_text(json.dumps({"size": a.size, "results": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
