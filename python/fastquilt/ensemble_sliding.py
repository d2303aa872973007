"""Sliding-window inference in memory with several models, test-time augmentation and any
set of outputs (:mod:`fastquilt.reductions`): each batch of windows is gathered once and run
through every member; the per-window state is accumulated in one ``(N, K, *S)`` float buffer
(``K = C_out`` without std/variance: the only full-size float buffer; labels, probability and
entropy come from it through the fused class epilogue)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import buffers, ops
from ._args import device_arg, float_dtype_arg
from .batches import predictions
from .ensemble import Predictor
from .quilt import Quilt
from .reductions import Reduction, outputs_arg
from .sliding import GridMean, check_input


def sliding_window_outputs(
    models,
    x: torch.Tensor,
    window: int | Sequence[int],
    step: int | Sequence[int],
    batch_size: int = 8,
    weight: str | torch.Tensor | None = "gaussian",
    *,
    outputs: Sequence[str] | str = ("mean",),
    tta: str = "none",
    activation: str | None = "none",
    border: int | Sequence[int] | None = None,
    border_weight: float = 0.1,
    device: torch.device | str | None = None,
    out_device: torch.device | str | None = None,
    out_dtype: torch.dtype | None = None,
    progress: bool = False,
    fill_value: float = 0.0,
    allow_gaps: bool = False,
) -> dict[str, torch.Tensor]:
    """``{name: (N, c, *S)}`` for the ``outputs`` of ``models`` (one or a list) under
    ``tta``; see :func:`fastquilt.sliding_window` for the arguments. Float outputs are in
    ``out_dtype`` (default float32), labels uint8/uint16."""
    names = outputs_arg(outputs)
    pred = Predictor(models, tta, activation, outputs=names)
    check_input(x)
    q = Quilt(x.shape[2:], window, step, border=border, border_weight=border_weight,
              weight=weight, allow_gaps=allow_gaps, fill_value=fill_value)
    device = device_arg(device) or x.device
    out_device = device_arg(out_device, "out_device") or x.device
    out_dtype = float_dtype_arg(out_dtype) or torch.float32
    N = x.shape[0]
    red = acc = wsum = mean = None
    with torch.no_grad():
        for lo, hi, y in predictions(lambda xb: pred(xb, q.window, device), x, q, batch_size,
                                     device, out_device, progress):
            if red is None:
                red = Reduction(names, pred.channels, fill_value)
                acc = buffers.empty((N, red.state_channels, *q.spatial_shape), torch.float32,
                                    out_device)
                weight_t = q.weight_for(torch.float32, out_device)
                out_origins = q.origins(N, out_device)
                # the moments keep their own weight sum; the weighted sums are the grid's mean
                if red.moments:
                    acc.zero_()
                    wsum = torch.zeros((N, *q.spatial_shape), device=out_device)
                else:
                    mean = GridMean(q, acc, out_origins, fill_value)
            if mean is None:
                red.add(acc, wsum, out_origins[lo:hi], y, weight_t)
            else:
                mean.add(lo, y)
    if not red.moments:
        mean.finish()
        if "entropy" in names and fill_value != 0:  # (which voxels nothing covers)
            wsum = ops.grid_weight_sum(weight_t, q.spatial_shape, q.step)
    result = red.finish(acc, wsum, normalised=not red.moments)
    return {n: (t if not t.is_floating_point() or t.dtype == out_dtype else t.to(out_dtype))
            for n, t in result.items()}
