"""Keep only the windows that hold labels — decided from box sums of the valid-label mask
(an integral image, O(volume)), so no window is materialised before it is known to be kept."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import _ops
from .labels import (
    as_label_batch,
    check_missing_label,
    gather_label_patches,
    is_missing,
)


@dataclass
class CleaningStats:
    """What cleaning keeps — the rows of the qlty paper's Table 1."""

    total_windows: int
    kept_windows: int
    labelled_voxels: int
    labelled_voxels_in_kept: int  # distinct labelled voxels inside a kept window's interior
    labelled_occurrences: int  # labelled voxels summed over the kept windows' interiors
    window_voxels: int  # voxels (times channels) of one window
    per_class: dict = field(default_factory=dict)  # class -> (voxels, occurrences in kept)

    @property
    def duplication_rate(self) -> float:
        """Times each labelled voxel appears in the kept training windows, on average."""
        return self.labelled_occurrences / self.labelled_voxels if self.labelled_voxels else 0.0

    @property
    def reduction_factor(self) -> float:
        """Data-volume reduction: all windows / kept windows."""
        return self.total_windows / self.kept_windows if self.kept_windows else float("inf")

    @property
    def kept_fraction(self) -> float:
        return self.kept_windows / self.total_windows if self.total_windows else 0.0

    def table(self) -> str:
        rows = [
            ("windows (all)", f"{self.total_windows}"),
            ("windows kept", f"{self.kept_windows} ({100 * self.kept_fraction:.2f}%)"),
            ("labelled voxels", f"{self.labelled_voxels}"),
            ("labelled voxels in kept windows", f"{self.labelled_voxels_in_kept}"),
            ("labelled voxel occurrences in kept windows", f"{self.labelled_occurrences}"),
            ("duplication rate", f"{self.duplication_rate:.2f}"),
            ("data-volume reduction", f"{self.reduction_factor:.2f}x"),
            ("voxels in kept windows", f"{self.kept_windows * self.window_voxels}"),
        ]
        for k, (n, occ) in sorted(self.per_class.items()):
            rows.append((f"class {k}: voxels / occurrences in kept", f"{n} / {occ}"))
        if self.kept_windows == 0:
            rows.append(("note", "no window holds a label in its interior: nothing to train on"))
        w = max(len(r[0]) for r in rows)
        return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)

    def __str__(self) -> str:
        return self.table()


def _integral(counts: torch.Tensor) -> torch.Tensor:
    """Zero-padded inclusive prefix sums over the spatial axes of ``(N, *S)`` counts."""
    dt = torch.int32 if counts.numel() < 2**31 - 1 else torch.int64
    out = counts.to(dt)
    for d in range(1, counts.dim()):
        out = out.cumsum(d, dtype=dt)
    return F.pad(out, [1, 0] * (counts.dim() - 1))


def _box_sums(integral: torch.Tensor, n: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """Sums over boxes ``[lo, hi)`` (``(M, D)``) of image ``n`` by inclusion-exclusion."""
    D = lo.shape[1]
    total = torch.zeros(n.shape[0], dtype=torch.int64)
    for corner in itertools.product((0, 1), repeat=D):
        idx = [n] + [hi[:, d] if c else lo[:, d] for d, c in enumerate(corner)]
        sign = 1 if (D - sum(corner)) % 2 == 0 else -1
        total += sign * integral[tuple(idx)].to(torch.int64)
    return total


def _interior_bounds(quilt, origins: torch.Tensor):
    b = torch.tensor(quilt.border if quilt.border is not None else (0,) * quilt.ndim)
    w = torch.tensor(quilt.window)
    lo = origins[:, 1:] + b
    return lo, origins[:, 1:] + w - b


def select_windows(
    quilt,
    labels: torch.Tensor,
    missing_label,
    *,
    min_labelled: int = 1,
    min_fraction: float | None = None,
    class_min: dict | None = None,
    per_class_stats: bool = True,
) -> tuple[torch.Tensor, CleaningStats]:
    """Global indices of the windows to keep, and the statistics.

    A window is kept when its interior (the window minus qlty's border frame) holds at least
    ``min_labelled`` labels that are not ``missing_label`` (and at least ``min_fraction`` of
    its interior, and ``class_min[k]`` labels of each class ``k`` when given). With
    ``min_labelled=1`` this is exactly qlty's ``weed_sparse_classification_training_pairs``.
    Labels are ``(N, *S)`` or ``(N, C, *S)``; channels count separately, as in qlty.
    """
    lab, _ = as_label_batch(labels, quilt.spatial_shape)
    missing_label = check_missing_label(missing_label, lab.dtype)
    if missing_label is None:
        raise ValueError("missing_label is required to clean sparse labels (e.g. -1)")
    if isinstance(min_labelled, bool) or not isinstance(min_labelled, int) or min_labelled < 1:
        raise ValueError(f"min_labelled must be an int >= 1, got {min_labelled!r}")
    if min_fraction is not None and not (0.0 <= min_fraction <= 1.0):
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
    lab = lab.cpu()
    N, C = lab.shape[:2]
    valid = ~is_missing(lab, missing_label)
    counts = valid.sum(1, dtype=torch.int32)  # (N, *S): labelled channels per voxel
    origins = quilt.grid.origins(N)
    lo, hi = _interior_bounds(quilt, origins)
    n = origins[:, 0]
    per_window = _box_sums(_integral(counts), n, lo, hi)
    interior = int(torch.prod(hi[0] - lo[0])) * C
    keep = per_window >= min_labelled
    if min_fraction is not None:
        keep &= per_window >= min_fraction * interior
    classes: dict = {}
    want_classes = dict(class_min or {})
    if per_class_stats and not lab.is_floating_point() and lab.dtype != torch.bool:
        present = torch.unique(lab[valid])
        if present.numel() <= 64:
            for k in present.tolist():
                want_classes.setdefault(k, None)
    for k, m in want_classes.items():
        cnt = (lab == k).sum(1, dtype=torch.int32)
        per_k = _box_sums(_integral(cnt), n, lo, hi)
        classes[k] = (int(cnt.sum()), per_k)
        if m is not None:
            keep &= per_k >= int(m)
    kept = torch.nonzero(keep).reshape(-1)
    # distinct labelled voxels covered by a kept window's interior
    if kept.numel():
        mask = quilt.border_mask().to(torch.float32)
        empty = torch.empty((kept.numel(), 0, *quilt.window))
        _, cover = _ops.scatter_add_windows(empty, origins[kept], quilt.spatial_shape, N,
                                            weight=mask)
        in_kept = int((counts * (cover > 0)).sum())
    else:
        in_kept = 0
    stats = CleaningStats(
        total_windows=int(origins.shape[0]),
        kept_windows=int(kept.numel()),
        labelled_voxels=int(counts.sum()),
        labelled_voxels_in_kept=in_kept,
        labelled_occurrences=int(per_window[kept].sum()),
        window_voxels=int(torch.tensor(quilt.window).prod()) * C,
        per_class={k: (v, int(per_k[kept].sum())) for k, (v, per_k) in classes.items()},
    )
    return kept, stats


def clean_pairs(
    quilt,
    x: torch.Tensor,
    labels: torch.Tensor,
    missing_label,
    **criteria,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, CleaningStats]:
    """Gather only the kept windows: ``(input patches, label patches, kept indices, stats)``.

    Label patches keep the labels' dtype and layout (``(M, *w)`` for ``(N, *S)`` labels) and
    have ``missing_label`` in their border frame (qlty semantics, also in 3D). When nothing is
    kept the patches are empty tensors of the right shapes and ``stats`` says so.
    """
    quilt._check_image(x)
    lab, squeezed = as_label_batch(labels, quilt.spatial_shape)
    if lab.shape[0] != x.shape[0]:
        raise ValueError(f"labels have {lab.shape[0]} images but x has {x.shape[0]}")
    kept, stats = select_windows(quilt, lab, missing_label, **criteria)
    missing_label = check_missing_label(missing_label, lab.dtype)
    origins = quilt.grid.origins(x.shape[0], indices=kept)
    xp = _ops.gather_windows(x, origins.to(x.device), quilt.window)
    lp = gather_label_patches(lab, origins.to(lab.device), quilt.window,
                              quilt.border_mask(), missing_label)
    return xp, (lp.squeeze(1) if squeezed else lp), kept, stats
