"""Label patches for training: qlty's border masking, in 2D and 3D, for any label dtype."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .. import ops
from ..quilt import Quilt


def is_missing(labels: torch.Tensor, missing_label) -> torch.Tensor:
    """Bool mask of missing labels (NaN-aware: ``missing_label=nan`` matches NaN labels)."""
    if isinstance(missing_label, float) and math.isnan(missing_label):
        return torch.isnan(labels) if labels.is_floating_point() else torch.zeros_like(
            labels, dtype=torch.bool)
    return labels == missing_label


def check_missing_label(missing_label, dtype: torch.dtype, name: str = "missing_label"):
    """``missing_label`` (a label value called ``name``) as a value representable in ``dtype``,
    or a clear error."""
    if missing_label is None:
        return None
    if isinstance(missing_label, bool) or not isinstance(missing_label, numbers.Real):
        raise TypeError(f"{name} must be a number, got {missing_label!r}")
    if isinstance(missing_label, float) and math.isnan(missing_label):
        if not dtype.is_floating_point:
            raise ValueError(
                f"{name}=nan cannot be stored in {dtype} labels; use an integer "
                "sentinel such as -1, or float labels"
            )
        return missing_label
    if dtype == torch.bool:
        raise ValueError(f"bool labels cannot hold a separate {name}; use int labels")
    if not dtype.is_floating_point:
        info = torch.iinfo(dtype)
        if float(missing_label) != int(missing_label) or not (
            info.min <= int(missing_label) <= info.max
        ):
            raise ValueError(
                f"{name}={missing_label} cannot be represented in {dtype} labels "
                f"(range [{info.min}, {info.max}], integers only); cast the labels "
                "(e.g. labels.to(torch.int16)) or choose another sentinel"
            )
        return int(missing_label)
    return float(missing_label)


def label_has_channel_axis(shape, spatial_shape: tuple[int, ...], name: str = "labels") -> bool:
    """Whether labels of ``shape`` are ``(N, C, *S)`` (True) or ``(N, *S)`` (False); any
    other shape is an error. For tensors and array-likes alike."""
    shape, D = tuple(int(v) for v in shape), len(spatial_shape)
    if len(shape) == D + 1 and shape[1:] == tuple(spatial_shape):
        return False
    if len(shape) == D + 2 and shape[2:] == tuple(spatial_shape):
        return True
    raise ValueError(
        f"{name} must have shape (N, {', '.join(map(str, spatial_shape))}) or (N, C, "
        f"{', '.join(map(str, spatial_shape))}) to match the image, got {shape}"
    )


def torch_dtype(dtype) -> torch.dtype:
    """The torch dtype of a numpy (or torch) dtype: array-like labels' checks use it."""
    if isinstance(dtype, torch.dtype):
        return dtype
    return torch.from_numpy(np.zeros(0, np.dtype(dtype))).dtype


def as_label_batch(labels: torch.Tensor, spatial_shape: tuple[int, ...], name: str = "labels"):
    """``(N, *S)`` or ``(N, C, *S)`` labels as ``(N, C, *S)`` plus whether a channel was added."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if label_has_channel_axis(labels.shape, spatial_shape, name):
        return labels, False
    return labels.unsqueeze(1), True


def mask_label_border(label_patches: torch.Tensor, border_mask: torch.Tensor, missing_label):
    """Write ``missing_label`` into the border frame (``border_mask == 0``) of every patch."""
    if missing_label is None:
        return label_patches
    frame = (border_mask < 0.5).to(label_patches.device)
    return label_patches.masked_fill_(frame, missing_label)


def gather_label_patches(labels, origins, window, border_mask, missing_label):
    """Gather label windows ``(M, C, *window)`` and blank their border frames."""
    lp = ops.gather_windows(labels, origins, window)
    return mask_label_border(lp, border_mask, missing_label)


def unstitch_pair(
    quilt: Quilt, x: torch.Tensor, labels: torch.Tensor, missing_label=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches of ``x`` ``(N, C, *S)`` and of ``labels`` (``(N, *S)`` or ``(N, C, *S)``, dtype
    kept) on ``quilt``'s grid, with ``missing_label`` written into each label patch's border
    frame (qlty semantics, 2D and 3D). Label patches are ``(M, *window)`` for ``(N, *S)``
    labels, ``(M, C, *window)`` otherwise."""
    quilt.check_image(x)
    lab, squeezed = as_label_batch(labels, quilt.spatial_shape)
    if lab.shape[0] != x.shape[0]:
        raise ValueError(f"labels have {lab.shape[0]} images but x has {x.shape[0]}")
    missing_label = check_missing_label(missing_label, lab.dtype)
    lp = gather_label_patches(lab, quilt.origins(x.shape[0], lab.device), quilt.window,
                              quilt.border_mask(), missing_label)
    return quilt.unstitch(x), (lp.squeeze(1) if squeezed else lp)
