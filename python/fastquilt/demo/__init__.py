"""``make demo`` / ``python -m fastquilt.demo``: the qlty paper's workflow on synthetic data.

A 3D volume of noisy curvilinear filaments labelled on a few XY/XZ/YZ slices; plan statistics;
cleaning (only windows with labels, from box sums); a tiny 3D conv net trained for a few
seconds on the kept windows (lazy dataset, flips/rot90); sliding-window inference with
Gaussian-weighted stitching; F1 on held-out labelled slices; timings; a PNG of input | truth |
prediction in ``demo_out/`` (Pillow), and the prediction as OME-Zarr (probability image,
labels, pyramid) beside it, for napari. Nothing in the library imports this package.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import fastquilt as fq

from .data import TinyNet, f1_score, make_filaments, sparse_slice_labels


def write_png_gray(path: str | Path, image: np.ndarray) -> Path:
    """A 2D array scaled to 0..255 (min..max), written as an 8-bit grayscale PNG."""
    from PIL import Image

    img = np.asarray(image, dtype=np.float64)
    lo, hi = float(img.min()), float(img.max())
    u8 = np.zeros(img.shape, np.uint8) if hi <= lo else ((img - lo) / (hi - lo) * 255).round()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(u8.astype(np.uint8)).save(path)  # 2D uint8: 8-bit grayscale
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-seconds", type=float, default=25.0)
    ap.add_argument("--out", default="demo_out")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    times = {}

    t0 = time.perf_counter()
    x, label = make_filaments()
    # Sparse annotation: two XY slices and one XZ slice for training; other slices (XY, XZ,
    # YZ) are held out for evaluation.
    train_labels = sparse_slice_labels(label, {0: [20, 55], 1: [64]})
    held_out = sparse_slice_labels(label, {0: [38], 1: [100], 2: [90]})
    times["make synthetic volume + sparse labels"] = time.perf_counter() - t0
    print(f"volume {tuple(x.shape)}: {int(label.sum())} filament voxels "
          f"({100 * float(label.mean()):.1f}%); {int((train_labels >= 0).sum())} labelled "
          f"voxels on 3 slices for training, {int((held_out >= 0).sum())} held out")

    # --- plan: which windows hold labels, and the statistics to choose window/step/border ---
    q = fq.Quilt(x.shape[2:], 24, 12, border=4, border_weight=0.1)
    t0 = time.perf_counter()
    kept, stats = fq.select_windows(q, train_labels, -1)
    times["plan + clean (counts from labels, no patches)"] = time.perf_counter() - t0
    print("\n" + stats.table() + "\n")

    # --- training on the kept windows only, read lazily, flips/rot90 -------------------------
    ds = fq.PatchDataset(x, train_labels, q, missing_label=-1, indices=kept, augment=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    frac = float(label.mean())
    pos_weight = torch.tensor(min(20.0, (1 - frac) / frac))
    t0, steps, epoch, loss = time.perf_counter(), 0, 0, torch.tensor(0.0)
    while time.perf_counter() - t0 < a.train_seconds:
        ds.set_epoch(epoch)
        for xb, yb in loader:
            valid = yb >= 0  # only labelled voxels (interior of the window) count
            logits = net(xb)[:, 0]
            loss = F.binary_cross_entropy_with_logits(
                logits[valid], yb[valid].float(), pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if time.perf_counter() - t0 >= a.train_seconds:
                break
        epoch += 1
    times["train tiny 3D net on kept windows"] = time.perf_counter() - t0
    print(f"trained {steps} steps ({epoch} epochs of {len(ds)} windows), last loss "
          f"{loss.item():.3f}")

    # --- sliding-window inference with Gaussian-weighted stitching ----------------------------
    net.eval()
    t0 = time.perf_counter()
    logits = fq.sliding_window(net, x, window=32, step=24, batch_size=8, weight="gaussian")
    times["sliding_window inference (model + stitch)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ome = write_ome_zarr(torch.nn.Sequential(net, torch.nn.Sigmoid()), x, a.out)
    times["same, out of core to OME-Zarr + pyramid"] = time.perf_counter() - t0
    qi = fq.Quilt(x.shape[2:], 32, 24, weight="gaussian")
    t0 = time.perf_counter()
    mean, _ = qi.stitch(qi.unstitch(x))
    times[f"unstitch + stitch alone ({qi.num_windows} windows)"] = time.perf_counter() - t0
    assert torch.allclose(mean, x, atol=1e-5), "identity round trip failed"
    prob = torch.sigmoid(logits)
    pred = prob > 0.5
    ho = held_out >= 0
    f1_held = f1_score(pred[0, 0][ho[0]], held_out[0][ho[0]] > 0)
    f1_all = f1_score(pred, label > 0.5)

    z = x.shape[2] // 2
    slab = slice(z - 6, z + 7)  # maximum projection of 13 slices shows the filaments as curves

    def mip(t):
        v = t[0, 0, slab].amax(0)
        return ((v - v.min()) / (v.max() - v.min()).clamp_min(1e-12)).numpy()

    gap = np.ones((x.shape[3], 4))
    panel = np.concatenate([mip(x), gap, mip(label), gap, mip(prob)], axis=1)
    png = write_png_gray(f"{a.out}/slab_z{z}.png", panel)

    print("\ntimings (2 CPU cores are typical here)")
    for k, v in times.items():
        print(f"  {k:46s} {v:8.3f} s")
    print(f"\nF1 on the held-out labelled slices: {f1_held:.3f} (whole volume: {f1_all:.3f})")
    print(f"wrote {png} (max projection of z {slab.start}..{slab.stop - 1}: "
          "input | truth | prediction)")
    print(f"wrote {ome} (OME-Zarr 0.5: probability image + labels/filaments, 3 levels; "
          f"napari --plugin napari-ome-zarr {ome})")


def write_ome_zarr(model, x: torch.Tensor, out: str | Path) -> Path:
    """The model's prediction of ``x`` written out of core as an OME-Zarr image with a
    pyramid (levels written by the unit owners), and its thresholded labels (> 0.5) as an
    NGFF label image; the volume's voxels are 1 micrometer. Returns the path."""
    import shutil

    from ..formats.ome_writer import add_label_image

    path = Path(out) / "pred.ome.zarr"
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.parent / (path.name + ".fastquilt-progress")):
        shutil.rmtree(p, ignore_errors=True)  # (a fresh run each time)
    prob = fq.sliding_window(model, x, window=32, step=24, batch_size=8, weight="gaussian",
                             out=str(path), chunks=32, unit=64, levels=2, voxel_size=1.0,
                             voxel_unit="micrometer")
    labels = (prob[...] > 0.5).astype(np.uint8)
    add_label_image(path, "filaments", labels, chunks=32, colors={1: (255, 64, 64, 255)})
    return path
