"""How busy a real 3D U-Net keeps the GPU during sliding-window inference (issue 15).

For each mode and dtype, one run of ``fastquilt.sliding_window`` with a small 3D U-Net, whose
every forward call is timed by CUDA events on the model's stream:

  busy      = the model's event time summed over its calls / the run's wall time
              (1: the GPU never waits for reading, gathering, stitching or writing)
  overhead  = the run's wall time / the same model calls on device-resident batches of the
              same shape, run back to back, - 1 (what reading, gathering, copying,
              stitching and writing add to the model's own time)

Modes: ``out_of_core`` (a (1,1,S^3) float32 zarr input, 64^3 chunks, no compression, written to
a zarr output; accumulation in the device-resident slab), ``in_memory_cpu`` (a CPU-resident
volume, the model and the accumulator on the GPU: the next batch gathered into pinned memory
and copied while the model runs), ``in_memory_cpu_sums_cpu`` (the same with the accumulator in
RAM, ``sliding_window``'s default for a CPU volume: each batch's predictions summed on the CPU
while the model runs on the next) and ``in_memory_gpu`` (the volume already on the GPU).
Dtypes: float32, and bfloat16 autocast for the model (accumulation stays float32).
Targets (issue 15): busy >= 0.9 and overhead <= 0.1.

    python benchmarks/bench_gpu_pipeline.py [--size 512] [--json out.json]
    python benchmarks/bench_gpu_pipeline.py --device cpu --size 48 --window 32 --step 16
        (a smoke test of this script; the CPU "events" are the wall clock)
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import numpy as np
import torch
from torch import nn

import fastquilt as fq


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, padding=1), nn.GroupNorm(4, c_out),
                         nn.ReLU(inplace=True), nn.Conv3d(c_out, c_out, 3, padding=1),
                         nn.GroupNorm(4, c_out), nn.ReLU(inplace=True))


class UNet3D(nn.Module):
    """A 3-level 3D U-Net (16-32-64 channels), 1 input channel, ``classes`` outputs;
    windows divisible by 4."""

    def __init__(self, classes: int = 2, width: int = 16) -> None:
        super().__init__()
        w = width
        self.down1, self.down2, self.bottom = conv_block(1, w), conv_block(w, 2 * w), \
            conv_block(2 * w, 4 * w)
        self.up2, self.dec2 = nn.ConvTranspose3d(4 * w, 2 * w, 2, 2), conv_block(4 * w, 2 * w)
        self.up1, self.dec1 = nn.ConvTranspose3d(2 * w, w, 2, 2), conv_block(2 * w, w)
        self.head = nn.Conv3d(w, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.down1(x)
        d2 = self.down2(nn.functional.max_pool3d(d1, 2))
        b = self.bottom(nn.functional.max_pool3d(d2, 2))
        u2 = self.dec2(torch.cat([self.up2(b), d2], 1))
        u1 = self.dec1(torch.cat([self.up1(u2), d1], 1))
        return self.head(u1)


class TimedModel(nn.Module):
    """``model`` on ``device`` (bfloat16 autocast when asked), each call timed on the current
    stream (CUDA events; the wall clock on the CPU). Returns float32 predictions."""

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.device, self.dtype = model, device, dtype
        self.events: list = []
        self.cpu_seconds = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        cuda = self.device.type == "cuda"
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
        else:
            t0 = time.perf_counter()
        with torch.autocast(self.device.type, dtype=self.dtype,
                            enabled=self.dtype != torch.float32):
            y = self.model(x).float()
        if cuda:
            b.record()
            self.events.append((a, b))
        else:
            self.cpu_seconds += time.perf_counter() - t0
        return y

    def busy_seconds(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return sum(a.elapsed_time(b) for a, b in self.events) / 1e3
        return self.cpu_seconds

    def reset(self) -> None:
        self.events, self.cpu_seconds = [], 0.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only_seconds(timed: TimedModel, calls: list[int], window: int) -> float:
    """The model's calls on device-resident batches of the run's sizes, back to back."""
    batches = {b: torch.randn(b, 1, window, window, window, device=timed.device)
               for b in set(calls)}
    timed(batches[calls[0]])  # warm-up (cuDNN's algorithm choice)
    sync(timed.device)
    t0 = time.perf_counter()
    for b in calls:
        timed(batches[b])
    sync(timed.device)
    return time.perf_counter() - t0


def run(size: int, window: int, step: int, batch: int, device: str, reps: int = 1,
        width: int = 16) -> dict:
    dev = torch.device(device)
    torch.manual_seed(0)
    model = UNet3D(width=width).to(dev).eval()
    x = torch.rand(1, 1, size, size, size)
    n_windows = len(fq.Quilt((size,) * 3, window, step).origins(1, "cpu"))
    calls = [min(batch, n_windows - i) for i in range(0, n_windows, batch)]
    results: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda"
                     else platform.processor() or "cpu",
                     "torch": torch.__version__, "size": size, "window": window, "step": step,
                     "batch": batch, "windows": n_windows, "runs": {}}
    outputs = {}
    with tempfile.TemporaryDirectory() as d:
        import zarr

        z = zarr.create_array(store=f"{d}/in.zarr", shape=x.shape, chunks=(1, 1, 64, 64, 64),
                              dtype="float32", compressors=None)
        z[...] = x.numpy()
        x_dev = x.to(dev)
        modes = {
            "out_of_core": lambda m, k: fq.sliding_window(
                m, z, window, step, batch, out=f"{d}/out{k}.zarr", device=dev,
                compressors=None),
            "in_memory_cpu": lambda m, k: fq.sliding_window(m, x, window, step, batch,
                                                            device=dev, out_device=dev),
            "in_memory_cpu_sums_cpu": lambda m, k: fq.sliding_window(m, x, window, step,
                                                                     batch, device=dev),
            "in_memory_gpu": lambda m, k: fq.sliding_window(m, x_dev, window, step, batch),
        }
        for dtype in (torch.float32, torch.bfloat16):
            timed = TimedModel(model, dev, dtype)
            for mode, call in modes.items():
                best = None
                for rep in range(reps + 1):  # the first run warms up (cuDNN, page cache)
                    timed.reset()
                    sync(dev)
                    t0 = time.perf_counter()
                    out = call(timed, f"{mode}{dtype}{rep}")
                    sync(dev)
                    wall = time.perf_counter() - t0
                    if rep and (best is None or wall < best[0]):
                        best = (wall, timed.busy_seconds())
                    last = out
                timed.reset()
                alone = model_only_seconds(timed, calls, window)
                wall, busy = best
                key = f"{mode}_{str(dtype).removeprefix('torch.')}"
                results["runs"][key] = {"wall_s": wall, "model_event_s": busy,
                                        "model_alone_s": alone, "busy": busy / wall,
                                        "overhead": wall / alone - 1}
                outputs[key] = torch.as_tensor(np.asarray(last[...]) if mode == "out_of_core"
                                               else last.float().cpu().numpy())
    # the three modes compute the same stitch (to rounding): a benchmark of wrong output
    # would mean nothing
    for dt in ("float32", "bfloat16"):
        ref = outputs[f"in_memory_gpu_{dt}"]
        results[f"max_diff_between_modes_{dt}"] = max(
            float((outputs[f"{m}_{dt}"] - ref).abs().max())
            for m in ("out_of_core", "in_memory_cpu", "in_memory_cpu_sums_cpu"))
    return results


def report(r: dict) -> None:
    print(f"{r['device']}, torch {r['torch']}: 3D U-Net over ({r['size']})^3, window "
          f"{r['window']}, step {r['step']}, batch {r['batch']}, {r['windows']} windows")
    print(f"{'run':32s} {'wall s':>8s} {'model alone s':>14s} {'busy':>6s} {'overhead':>9s}")
    for k, v in r["runs"].items():
        print(f"{k:32s} {v['wall_s']:8.3f} {v['model_alone_s']:14.3f} {v['busy']:6.2f} "
              f"{v['overhead']:+9.1%}")
    print("targets: busy >= 0.90, overhead <= +10%; largest difference between modes: "
          f"float32 {r['max_diff_between_modes_float32']:.2e}, "
          f"bfloat16 {r['max_diff_between_modes_bfloat16']:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--window", type=int, default=96)
    ap.add_argument("--step", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    r = run(a.size, a.window, a.step, a.batch, a.device, a.reps)
    report(r)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    main()
