"""Sliding-window inference in memory with several models, test-time augmentation and any
set of outputs (:mod:`fastquilt.reductions`): each batch of windows is gathered once and run
through every member; the per-window state is accumulated in one ``(N, K, *S)`` float buffer
(``K = C_out`` without std/variance: the only full-size float buffer; labels, probability and
entropy come from it through the fused class epilogue)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import buffers, ops
from ._args import device_arg, float_dtype_arg, positive_int_arg
from .ensemble import Predictor
from .quilt import Quilt
from .reductions import Reduction, outputs_arg


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
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (4, 5) or x.shape[0] == 0:
        raise ValueError(f"x must be (N, C, Y, X) or (N, C, Z, Y, X) with N >= 1, got shape "
                         f"{tuple(x.shape)}")
    batch_size = positive_int_arg(batch_size, "batch_size")
    q = Quilt(x.shape[2:], window, step, border=border, border_weight=border_weight,
              weight=weight, allow_gaps=allow_gaps, fill_value=fill_value)
    device = device_arg(device) or x.device
    out_device = device_arg(out_device, "out_device") or x.device
    out_dtype = float_dtype_arg(out_dtype) or torch.float32
    N, total = x.shape[0], x.shape[0] * q.num_windows
    origins = q.origins(N, x.device)
    red = acc = wsum = buf = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="win", desc="sliding_window")
    with torch.no_grad():
        for lo in range(0, total, batch_size):
            hi = min(lo + batch_size, total)
            if buf is None or buf.shape[0] < hi - lo:
                buf = torch.empty((hi - lo, x.shape[1], *q.window), dtype=x.dtype,
                                  device=x.device)
            patches = ops.gather_windows_into(x, origins[lo:hi], buf[:hi - lo])
            y = pred(patches, q.window, device)
            if red is None:
                red = Reduction(names, pred.channels, fill_value)
                acc = buffers.empty((N, red.state_channels, *q.spatial_shape), torch.float32,
                                    out_device).zero_()
                # the weight sum: a buffer for the moments, the grid's closed form otherwise
                wsum = torch.zeros((N, *q.spatial_shape), device=out_device) \
                    if red.moments else None
                weight_t = q.weight_for(torch.float32, out_device)
                out_origins = origins.to(out_device)
            red.add(acc, wsum, out_origins[lo:hi], y.to(out_device), weight_t)
            if bar is not None:
                bar.update(hi - lo)
    if bar is not None:
        bar.close()
    if not red.moments:
        ops.grid_normalize_(acc, weight_t, q.step, fill_value)
    result = red.finish(acc, wsum, normalised=not red.moments)
    return {n: (t if not t.is_floating_point() or t.dtype == out_dtype else t.to(out_dtype))
            for n, t in result.items()}
