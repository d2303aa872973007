"""The demo's synthetic data: a volume of noisy curvilinear filaments, its labels, labels on a
few whole slices as a scientist would annotate, a tiny 3D conv net and the F1 score."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def make_filaments(shape=(80, 128, 128), n=24, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy volume (1, 1, *shape) of smooth random tubes and its binary label (1, 1, *shape)."""
    g = torch.Generator().manual_seed(seed)
    S = torch.tensor(shape, dtype=torch.float32)
    mask = torch.zeros(shape)
    for _ in range(n):
        p = torch.rand(3, generator=g) * S
        d = F.normalize(torch.randn(3, generator=g), dim=0)
        pts = []
        for _ in range(400):  # a smooth random walk with unit steps
            d = F.normalize(d + 0.15 * torch.randn(3, generator=g), dim=0)
            p = p + d
            if ((p < 0) | (p >= S)).any():
                break
            pts.append(p.clone())
        if pts:
            idx = torch.stack(pts).long()
            mask[idx[:, 0], idx[:, 1], idx[:, 2]] = 1.0
    label = F.max_pool3d(mask[None, None], 3, stride=1, padding=1)  # tubes of radius ~1
    k = torch.exp(-0.5 * (torch.arange(-2, 3.0) / 1.0) ** 2)
    k = (k[:, None, None] * k[None, :, None] * k[None, None, :]) / k.sum() ** 3
    signal = F.conv3d(label, k[None, None], padding=2)
    noise = 0.35 * torch.randn(label.shape, generator=g)
    z = torch.linspace(0, 1, shape[0])[:, None, None]
    x = signal / signal.max() + noise + 0.2 * z  # uneven background
    return x.float(), label


class TinyNet(torch.nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv3d(1, width, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv3d(width, width, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv3d(width, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def f1_score(pred: torch.Tensor, truth: torch.Tensor) -> float:
    tp = float((pred & truth).sum())
    return 2 * tp / max(1.0, float(pred.sum()) + float(truth.sum()))


def sparse_slice_labels(label: torch.Tensor, slices: dict, missing: int = -1) -> torch.Tensor:
    """Labels only on a few whole slices, as a scientist would annotate: ``{axis: [index]}``.
    Everything else is ``missing``. Returns int64 (1, *S)."""
    out = torch.full(label.shape[2:], missing, dtype=torch.int64)
    for axis, idx in slices.items():
        for i in idx:
            sl = [slice(None)] * 3
            sl[axis] = i
            out[tuple(sl)] = label[0, 0][tuple(sl)].long()
    return out[None]
