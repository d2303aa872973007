"""C-class segmentation, peak memory and time side by side (issue 16): MONAI
``sliding_window_inference`` + argmax vs fastquilt in memory (``outputs="labels"``) vs
fastquilt out of core (zarr in, a group with a uint8 ``labels`` array out). Every contender
averages softmax probabilities (MONAI: softmax inside its predictor) and takes the argmax.
Each run is its own process (peak resident memory above what it held before the call, the
input included where it is loaded: VmHWM after ``5 > /proc/self/clear_refs``); contenders
alternate over rounds; medians and ratios are printed.

Second part (``--ensemble``): ensemble of 4 + flips vs one model in memory: the time outside
the model calls (gather, stitch, activation, epilogue) relative to the models' own time.

    python benchmarks/bench_segmentation.py [--size 256] [--classes 32] [--rounds 2]
        [--chunks 16] [--max-memory 1G]
    python benchmarks/bench_segmentation.py --ensemble [--size 64] [--window 32 --step 24]
        [--model conv|unet] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def tiny_model(classes: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Conv3d(1, classes, 3, padding=1).eval()


class SmallUNet(torch.nn.Module):
    """A two-level 3D U-Net (``width`` features, then twice as many at half resolution; one
    3^3 convolution + ReLU per stage, a 1^3 head to ``classes`` scores): the size of network
    a sliding-window segmentation of a tomogram runs, far smaller than nnU-Net's."""

    def __init__(self, classes: int, width: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        nn = torch.nn

        def stage(i, o):
            return nn.Sequential(nn.Conv3d(i, o, 3, padding=1), nn.ReLU())

        self.enc, self.down, self.mid = stage(1, width), nn.MaxPool3d(2), stage(width, 2 * width)
        self.up = nn.ConvTranspose3d(2 * width, width, 2, stride=2)
        self.dec, self.head = stage(2 * width, width), nn.Conv3d(width, classes, 1)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.enc(x)
        return self.head(self.dec(torch.cat([e, self.up(self.mid(self.down(e)))], 1)))


def make_model(kind: str, classes: int, seed: int = 0) -> torch.nn.Module:
    return SmallUNet(classes, seed=seed) if kind == "unet" else tiny_model(classes, seed)


def child(a) -> None:
    import fastquilt as fq

    model = tiny_model(a.classes)
    work = Path(a.work)
    if a.impl in ("monai", "memory"):
        x = torch.from_numpy(np.load(work / "in.npy"))  # in RAM: part of both baselines
    else:
        import zarr

        x = zarr.open_array(str(work / "in.zarr"), mode="r")
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kib("VmRSS")
    t0 = time.perf_counter()
    with torch.no_grad():
        if a.impl == "monai":
            from monai.inferers import sliding_window_inference

            prob = sliding_window_inference(
                x, (a.window,) * 3, a.batch, lambda p: torch.softmax(model(p), 1),
                overlap=1 - a.step / a.window, mode="gaussian")
            labels = prob.argmax(1).to(torch.uint8)
            del prob
        elif a.impl == "memory":
            labels = fq.sliding_window(model, x, a.window, a.step, a.batch, outputs="labels",
                                       activation="softmax")
        else:
            out = work / f"out-{time.monotonic_ns()}.zarr"
            g = fq.sliding_window(model, x, a.window, a.step, a.batch, out=out,
                                  outputs=("labels",), activation="softmax",
                                  max_memory=a.max_memory, chunks=a.chunks)
            labels = g["labels"]
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM") - base
    print(json.dumps({"impl": a.impl, "seconds": seconds, "peak_MiB": peak / 1024,
                      "labels": str(labels.dtype)}))


def parent(a) -> None:
    import zarr

    work = Path(tempfile.mkdtemp(prefix="fq_seg_"))
    S = a.size
    x = np.random.default_rng(0).standard_normal((1, 1, S, S, S), dtype=np.float32)
    np.save(work / "in.npy", x)
    z = zarr.create_array(store=str(work / "in.zarr"), shape=x.shape, dtype="float32",
                          chunks=(1, 1, 64, 64, 64), compressors=None)
    z[...] = x
    del x
    impls = a.impls
    results: dict[str, list] = {i: [] for i in impls}
    for r in range(a.rounds):
        order = impls[r % len(impls):] + impls[:r % len(impls)]  # alternate who goes first
        for impl in order:
            cmd = [sys.executable, __file__, "--child", impl, "--work", str(work)] + [
                f"--{k}={v}" for k, v in (("size", S), ("classes", a.classes),
                                         ("window", a.window), ("step", a.step),
                                         ("batch", a.batch))]
            if a.max_memory:
                cmd.append(f"--max-memory={a.max_memory}")
            if a.chunks:
                cmd.append(f"--chunks={a.chunks}")
            p = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res = json.loads(p.stdout.strip().splitlines()[-1])
            results[impl].append(res)
            print(f"round {r} {impl:6s} {res['seconds']:7.2f} s  peak {res['peak_MiB']:7.0f} MiB"
                  f"  labels {res['labels']}", flush=True)
    med = {i: {k: statistics.median(v[k] for v in results[i]) for k in ("seconds", "peak_MiB")}
           for i in impls}
    acc = S ** 3 * a.classes * 4 / 2**20
    print(f"\n(1,1,{S}^3) float32, C={a.classes}, window {a.window}, step {a.step}, batch "
          f"{a.batch}; C-channel float32 accumulator: {acc:.0f} MiB")
    ref = med["monai"] if "monai" in med else next(iter(med.values()))
    for i in impls:
        print(f"{i:6s} median {med[i]['seconds']:7.2f} s  peak {med[i]['peak_MiB']:7.0f} MiB  "
              f"time/monai {med[i]['seconds'] / ref['seconds']:.2f}  "
              f"peak/monai {med[i]['peak_MiB'] / ref['peak_MiB']:.3f}")
    shutil.rmtree(work, ignore_errors=True)


def ensemble(a) -> None:
    """Time outside the models' calls, for 1 model and for 4 models x flips (8); and outside
    both the models and the activation (the softmax of every prediction, which the averaging
    of probabilities needs): the gather, transforms, sums, stitch and epilogue."""
    import fastquilt as fq
    import fastquilt.ensemble as fq_ensemble

    act = [0.0]
    activate = fq_ensemble.activate

    device = torch.device(a.device)
    # on a GPU a call returns before its kernels end: the timers wait for the device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed_activate(y, activation):
        sync()
        t = time.perf_counter()
        out = activate(y, activation)
        sync()
        act[0] += time.perf_counter() - t
        return out

    fq_ensemble.activate = timed_activate

    x = torch.from_numpy(np.random.default_rng(0).standard_normal(
        (1, 1, a.size, a.size, a.size), dtype=np.float32)).to(device)
    spent = [0.0]

    def timed(m):
        def call(p):
            sync()
            t = time.perf_counter()
            y = m(p)
            sync()
            spent[0] += time.perf_counter() - t
            return y
        return call

    print(f"model: {a.model}, {a.classes} classes, (1, 1, {a.size}^3), window {a.window}, "
          f"step {a.step}, batch {a.batch}, {torch.get_num_threads()} threads, {device}")
    configs = {"1 model": ([timed(make_model(a.model, a.classes).to(device))], "none"),
               "4 models + flips": ([timed(make_model(a.model, a.classes, s).to(device))
                                     for s in range(4)], "flips")}
    rows: dict[str, list] = {k: [] for k in configs}
    for r in range(a.rounds):
        for name, (models, tta) in (list(configs.items())[::1 if r % 2 == 0 else -1]):
            spent[0] = act[0] = 0.0
            sync()
            t0 = time.perf_counter()
            with torch.no_grad():
                fq.sliding_window(models, x, a.window, a.step, a.batch, outputs="labels",
                                  activation="softmax", tta=tta)
            sync()
            total = time.perf_counter() - t0
            rows[name].append((total, spent[0], act[0]))
            print(f"round {r} {name:17s} total {total:6.2f} s, model calls {spent[0]:6.2f} s, "
                  f"softmax {act[0]:5.2f} s, outside/model {(total - spent[0]) / spent[0]:.3f}, "
                  f"outside models and softmax / model "
                  f"{(total - spent[0] - act[0]) / spent[0]:.3f}", flush=True)
    med = {}
    for name, v in rows.items():
        tot, mod, sm = (statistics.median(t[i] for t in v) for i in range(3))
        med[name] = tot
        print(f"{name:17s} median total {tot:6.2f} s, model calls {mod:6.2f} s, softmax "
              f"{sm:5.2f} s; time outside the models / model time {(tot - mod) / mod:.3f}; "
              f"outside the models and the softmax / model time {(tot - mod - sm) / mod:.3f}")
    print(f"throughput of 4 models + flips (32 predictions per window) relative to 1 model: "
          f"{med['1 model'] / med['4 models + flips']:.4f} (ideal 1/32 = {1 / 32:.4f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", default=None, dest="impl")
    ap.add_argument("--work", default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--classes", type=int, default=32)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--step", type=int, default=48)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-memory", default=None, help="out of core: max_memory")
    ap.add_argument("--chunks", type=int, default=None, help="out of core: output chunks")
    ap.add_argument("--ensemble", action="store_true")
    ap.add_argument("--model", choices=["conv", "unet"], default="conv",
                    help="--ensemble: one 3^3 convolution, or a small two-level 3D U-Net")
    ap.add_argument("--impls", nargs="+", default=["monai", "memory", "ooc"])
    ap.add_argument("--device", default="cpu", help="--ensemble: the models' device (and the "
                    "volume's)")
    a = ap.parse_args()
    if a.ensemble:
        ensemble(a)
    elif a.impl:
        child(a)
    else:
        parent(a)


if __name__ == "__main__":
    main()
