"""``make demo`` / ``python -m fastquilt.demo``: the qlty paper's workflow on synthetic data.

A 3D volume of noisy curvilinear filaments labelled on a few XY/XZ/YZ slices; plan statistics;
cleaning (only windows with labels, from box sums); an ensemble of tiny 3D conv nets (different
seeds) trained for a few seconds each on class-balanced batches a ``WindowSampler`` draws
(flips/rot90 fused into the gather); sliding-window inference of the ensemble with flips, out
of core into OME-Zarr (Gaussian-weighted stitching; the mean class probabilities, their std
across members and flips, and the labels, each with a pyramid written by the unit owners, in
one pass); F1 of each member and of the ensemble on held-out labelled slices; timings; a PNG
of input | truth | prediction | std (disagreement) in ``demo_out/`` (Pillow) beside the
OME-Zarr, for napari. Nothing in the library imports this package.
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
    ap.add_argument("--train-seconds", type=float, default=12.0,
                    help="training time of the whole ensemble")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--min-steps", type=int, default=40,
                    help="training steps of each member at least, however slow the machine")
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
    _, stats = fq.select_windows(q, train_labels, -1)
    times["plan + clean (counts from labels, no patches)"] = time.perf_counter() - t0
    print("\n" + stats.table() + "\n")

    # --- training: batches drawn where the labels are, flips/rot90 fused into the gather ------
    frac = float(label.mean())
    pos_weight = torch.tensor(min(20.0, (1 - frac) / frac))
    t0 = time.perf_counter()
    nets = []
    for seed in range(a.members):
        sampler = fq.WindowSampler(x, train_labels, q, missing_label=-1, batch_size=8,
                                   where="balanced", seed=seed)
        net, steps, epochs, loss = train_member(sampler, pos_weight,
                                                a.train_seconds / a.members, a.min_steps, seed)
        nets.append(net)
        print(f"member {seed}: trained {steps} steps ({epochs} epochs of {len(sampler)} "
              f"batches, each holding windows of every class, drawn from the "
              f"{stats.kept_windows} windows with labels), last loss {loss:.3f}")
    times[f"train {a.members} tiny 3D nets (WindowSampler, balanced)"] = \
        time.perf_counter() - t0

    # --- sliding-window inference with Gaussian-weighted stitching ----------------------------
    t0 = time.perf_counter()
    ome = Path(a.out) / "pred.ome.zarr"
    root = write_ome_zarr(nets, x, ome)
    times[f"{a.members} nets x 8 flips, out of core to OME-Zarr"] = time.perf_counter() - t0
    qi = fq.Quilt(x.shape[2:], 32, 24, weight="gaussian")
    t0 = time.perf_counter()
    mean, _ = qi.stitch(qi.unstitch(x))
    times[f"unstitch + stitch alone ({qi.num_windows} windows)"] = time.perf_counter() - t0
    assert torch.allclose(mean, x, atol=1e-5), "identity round trip failed"
    prob = torch.from_numpy(root["0"][:, 1:])  # (the filament class)
    std = torch.from_numpy(root["std/0"][:, 1:])
    ho = held_out >= 0

    def held_out_f1(p):
        return f1_score((p > 0.5)[0, 0][ho[0]], held_out[0][ho[0]] > 0)

    members = [held_out_f1(torch.sigmoid(fq.sliding_window(n, x, 32, 24, 8))) for n in nets]
    f1_held = held_out_f1(prob)
    f1_all = f1_score(prob > 0.5, label > 0.5)

    z = x.shape[2] // 2
    slab = slice(z - 6, z + 7)  # maximum projection of 13 slices shows the filaments as curves

    def mip(t):
        v = t[0, 0, slab].amax(0)
        return ((v - v.min()) / (v.max() - v.min()).clamp_min(1e-12)).numpy()

    gap = np.ones((x.shape[3], 4))
    panel = np.concatenate([mip(x), gap, mip(label), gap, mip(prob), gap, mip(std)], axis=1)
    png = write_png_gray(f"{a.out}/slab_z{z}.png", panel)

    print("\ntimings (2 CPU cores are typical here)")
    for k, v in times.items():
        print(f"  {k:46s} {v:8.3f} s")
    print("\nF1 of each member on the held-out slices: "
          + ", ".join(f"{f:.3f}" for f in members))
    print(f"F1 on the held-out labelled slices: {f1_held:.3f} (ensemble + flips; whole volume: "
          f"{f1_all:.3f}); std across members and flips: mean {float(std.mean()):.3f}, max "
          f"{float(std.max()):.3f}")
    print(f"wrote {png} (max projection of z {slab.start}..{slab.stop - 1}: "
          "input | truth | prediction | std)")
    print(f"wrote {ome} (OME-Zarr 0.5: class probabilities [background, filament], std/, "
          f"labels/labels, 3 levels each; napari --plugin napari-ome-zarr {ome})")


class TwoClasses(torch.nn.Module):
    """A binary net's logit ``y`` as two class scores ``[0, y]``: their softmax is
    ``[1 - sigmoid(y), sigmoid(y)]``, so the ensemble's labels are its argmax."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return torch.cat([torch.zeros_like(y), y], 1)


def write_ome_zarr(nets, x: torch.Tensor, path: Path):
    """The ensemble of ``nets`` with flips, out of core into the OME-Zarr image ``path``:
    the mean class probabilities (the root image), their std (``std/``) and the labels
    (``labels/labels/``, filaments red), 2 pyramid levels each written by the unit owners, 1
    micrometer voxels. Returns the root zarr group (a fresh output each run)."""
    import shutil

    from ..formats.ome_writer import set_label_colors

    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.parent / (path.name + ".fastquilt-progress")):
        shutil.rmtree(p, ignore_errors=True)
    root = fq.sliding_window([TwoClasses(n) for n in nets], x, window=32, step=24,
                             batch_size=8, weight="gaussian", out=str(path), chunks=32,
                             unit=64, levels=2, voxel_size=1.0, voxel_unit="micrometer",
                             outputs=("mean", "std", "labels"), tta="flips",
                             activation="softmax")
    set_label_colors(path, "labels", {1: (255, 64, 64, 255)})
    return root


def train_member(sampler, pos_weight: torch.Tensor, seconds: float, min_steps: int,
                 seed: int):
    """One ensemble member: a :class:`TinyNet` from seed ``seed`` trained on the labelled voxels
    of the ``sampler``'s batches for ``seconds``, and for ``min_steps`` steps at least (a slow
    or busy machine still trains every member); returns ``(net in eval mode, steps, epochs,
    last loss)``."""
    torch.manual_seed(seed)
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    t0, steps, epoch, loss = time.perf_counter(), 0, 0, torch.tensor(0.0)

    def done() -> bool:
        return steps >= min_steps and time.perf_counter() - t0 >= seconds

    while not done():
        sampler.set_epoch(epoch)
        for xb, yb in sampler:
            valid = yb >= 0  # only labelled voxels (interior of the window) count
            logits = net(xb)[:, 0]
            loss = F.binary_cross_entropy_with_logits(
                logits[valid], yb[valid].float(), pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if done():
                break
        epoch += 1
    return net.eval(), steps, epoch, float(loss.detach())
