"""Keep only the windows that hold labels — decided from counts of labelled voxels per window
interior (box_sums.py), so no window is materialised before it is known to be kept."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import ops
from ..arrays import read_box
from ..quilt import Quilt
from .box_sums import coordinate_box_sums, covered_by_kept, grid_box_sums
from .label_scan import sparse_label_coords
from .labels import (
    as_label_batch,
    check_missing_label,
    gather_label_patches,
    is_missing,
    label_has_channel_axis,
    torch_dtype,
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


# Label tensors with more elements than this are scanned slab by slab (select_windows).
STREAM_TENSORS_ABOVE = 1 << 28


def _check_criteria(dtype: torch.dtype, min_labelled, min_fraction, class_min) -> None:
    if isinstance(min_labelled, bool) or not isinstance(min_labelled, int) or min_labelled < 1:
        raise ValueError(f"min_labelled must be an int >= 1, got {min_labelled!r}")
    if min_fraction is not None and not (0.0 <= min_fraction <= 1.0):
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
    if class_min is not None and not isinstance(class_min, dict):
        raise TypeError(f"class_min must be a dict {{label value: minimum count}}, got "
                        f"{type(class_min).__name__}")
    for k, m in (class_min or {}).items():
        check_missing_label(k, dtype, name="class_min key")
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 0:
            raise ValueError(f"class_min[{k!r}] must be an int >= 0, got {m!r}")


class _LabelledVoxels:
    """The labelled elements of ``(N, *S)`` / ``(N, C, *S)`` labels: their coordinates
    ``(L, 2 + D)`` ``[n, c, p...]`` and values, read in one pass by :meth:`scan` (slab by
    slab from disk, or from a large CPU tensor, while they are sparse: memory O(labelled
    voxels); else the whole array, whose valid mask then serves the O(volume) box sums)."""

    def __init__(self, labels, quilt: Quilt, missing_label) -> None:
        on_disk = not isinstance(labels, torch.Tensor)  # numpy, memmap, zarr, dask
        if on_disk:
            channel = label_has_channel_axis(labels.shape, quilt.spatial_shape)
            self.N = int(labels.shape[0])
            self.C = int(labels.shape[1]) if channel else 1
            self.dtype = torch_dtype(labels.dtype)
        else:
            lab, _ = as_label_batch(labels, quilt.spatial_shape)
            self.N, self.C, self.dtype = lab.shape[0], lab.shape[1], lab.dtype
        self.missing_label = check_missing_label(missing_label, self.dtype)
        if self.missing_label is None:
            raise ValueError("missing_label is required to clean sparse labels (e.g. -1)")
        self.quilt, self.labels = quilt, labels

    def scan(self) -> None:
        """Read the labels once: the coordinates and values of the labelled elements."""
        labels, quilt = self.labels, self.quilt
        on_disk = not isinstance(labels, torch.Tensor)
        lab = None if on_disk else as_label_batch(labels, quilt.spatial_shape)[0]
        streamed = None
        if on_disk:
            streamed = sparse_label_coords(labels, quilt.spatial_shape, self.missing_label)
        elif (lab.numel() > STREAM_TENSORS_ABOVE and lab.device.type == "cpu"
              and lab.dtype != torch.bfloat16):  # (numpy has no bfloat16)
            # The whole-volume pass needs 2 bytes per voxel more (at 512^3: +257 MiB against
            # +55 MiB slab-wise), which matters when the labels alone nearly fill the RAM.
            streamed = sparse_label_coords(lab.detach().numpy(), quilt.spatial_shape,
                                           self.missing_label)
        if streamed is not None:
            self.coords, self.values = streamed
            self.sparse, self.lab, self.valid = True, None, None
            return
        if on_disk:
            lab, _ = as_label_batch(read_box(labels, ...), quilt.spatial_shape)
        self.lab = lab.cpu()
        self.valid = ~is_missing(self.lab, self.missing_label)
        self.coords = torch.nonzero(self.valid)
        self.sparse = self.coords.shape[0] * 8 < self.valid.numel()
        self.values = self.lab[tuple(self.coords.T)]

    def per_window(self, which) -> torch.Tensor:
        """Labelled elements per window interior ``(N * num_windows,)`` among those for which
        ``which(values)`` holds."""
        if self.sparse:  # O(labelled voxels)
            return coordinate_box_sums(self.coords[which(self.values)], self.N, self.quilt)
        return grid_box_sums(which(self.lab) & self.valid, self.quilt)  # O(volume), separable


def select_windows(
    quilt: Quilt,
    labels: torch.Tensor | np.ndarray,
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
    Labels are ``(N, *S)`` or ``(N, C, *S)``; channels count separately, as in qlty. A
    tensor is read in memory; an array-like (numpy, memmap, zarr, dask) slab by slab while
    its labels are sparse (memory O(labelled voxels)), else whole.
    """
    voxels = _LabelledVoxels(labels, quilt, missing_label)
    N, C, dtype = voxels.N, voxels.C, voxels.dtype
    _check_criteria(dtype, min_labelled, min_fraction, class_min)
    voxels.scan()
    values = voxels.values
    per_window = voxels.per_window(lambda v: torch.ones_like(v, dtype=torch.bool))
    interior = C * int(np.prod(
        [w - 2 * b for w, b in zip(quilt.window, quilt.border or (0,) * quilt.ndim)]))
    keep = per_window >= min_labelled
    if min_fraction is not None:
        keep &= per_window >= min_fraction * interior
    want_classes = dict(class_min or {})
    if per_class_stats and not dtype.is_floating_point and dtype != torch.bool:
        present = torch.unique(values)
        if present.numel() <= 64:
            for k in present.tolist():
                want_classes.setdefault(k, None)
    classes: dict = {}
    for k, m in want_classes.items():
        per_k = voxels.per_window(lambda v, k=k: v == k)
        classes[k] = (int((values == k).sum()), per_k)
        if m is not None:
            keep &= per_k >= int(m)
    kept = torch.nonzero(keep).reshape(-1)
    # distinct labelled elements inside a kept window's interior: O(labelled voxels)
    in_kept = int(covered_by_kept(voxels.coords, keep.reshape(N, *quilt.counts), quilt).sum())
    stats = CleaningStats(
        total_windows=int(N * quilt.num_windows),
        kept_windows=int(kept.numel()),
        labelled_voxels=int(values.numel()),
        labelled_voxels_in_kept=in_kept,
        labelled_occurrences=int(per_window[kept].sum()),
        window_voxels=int(np.prod(quilt.window)) * C,
        per_class={k: (v, int(per_k[kept].sum())) for k, (v, per_k) in classes.items()},
    )
    return kept, stats


def window_label_counts(
    quilt: Quilt, labels, missing_label, *, per_class: bool = False
) -> tuple[torch.Tensor, dict]:
    """Labelled elements in every window's interior, ``(N * num_windows,)`` int64 in qlty
    order, and with ``per_class`` the same count per label value ``{k: (N * num_windows,)}``
    (integer labels; classes in ascending order). The counts cleaning decides by (O(labelled
    voxels) for sparse labels, no window materialised); label-aware sampling draws from them.
    """
    voxels = _LabelledVoxels(labels, quilt, missing_label)
    voxels.scan()
    total = voxels.per_window(lambda v: torch.ones_like(v, dtype=torch.bool))
    classes: dict = {}
    if per_class:
        if voxels.dtype.is_floating_point or voxels.dtype == torch.bool:
            raise TypeError(f"class-balanced sampling needs integer class labels, got "
                            f"{voxels.dtype} labels")
        for k in torch.unique(voxels.values).tolist():
            classes[k] = voxels.per_window(lambda v, k=k: v == k)
    return total, classes


def clean_pairs(
    quilt: Quilt,
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
    quilt.check_image(x)
    lab, squeezed = as_label_batch(labels, quilt.spatial_shape)
    if lab.shape[0] != x.shape[0]:
        raise ValueError(f"labels have {lab.shape[0]} images but x has {x.shape[0]}")
    kept, stats = select_windows(quilt, lab, missing_label, **criteria)
    missing_label = check_missing_label(missing_label, lab.dtype)
    origins = quilt.grid.origins(x.shape[0], indices=kept)
    xp = ops.gather_windows(x, origins.to(x.device), quilt.window)
    lp = gather_label_patches(lab, origins.to(lab.device), quilt.window,
                              quilt.border_mask(), missing_label)
    return xp, (lp.squeeze(1) if squeezed else lp), kept, stats
