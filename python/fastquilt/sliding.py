"""Sliding-window inference with bounded memory: gather ``batch_size`` windows at a time, run
the model, accumulate the weighted predictions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import _ops
from ._args import device_arg, float_dtype_arg
from ._transfer import to_device
from .quilt import Quilt


def sliding_window(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    window: int | Sequence[int],
    step: int | Sequence[int],
    batch_size: int = 8,
    weight: str | torch.Tensor | None = "gaussian",
    *,
    border: int | Sequence[int] | None = None,
    border_weight: float = 0.1,
    device: torch.device | str | None = None,
    out_device: torch.device | str | None = None,
    out_dtype: torch.dtype | None = None,
    progress: bool = False,
    fill_value: float = 0.0,
    allow_gaps: bool = False,
    out=None,
    **zarr_options,
) -> torch.Tensor | Any:
    """Apply ``model`` to every window of ``x`` ``(N, C, *S)`` and stitch a weighted mean.

    Only ``batch_size`` windows exist at a time: peak memory is O(batch + output), not
    O(all patches). The model runs on ``device`` (default: ``x``'s); predictions
    ``(B, C_out, *window)`` (``C_out`` may differ from ``C``) are accumulated in float32 on
    ``out_device`` (default: ``x``'s device). Returns ``(N, C_out, *S)`` in ``out_dtype`` (a
    floating dtype or its name; default: the model output's dtype). Runs under
    ``torch.no_grad()``.

    Out of core: with ``out=`` a path, or when ``x`` is a zarr / numpy memmap / dask array, the
    result is written to a zarr v3 array at ``out`` by
    :func:`fastquilt.outofcore.sliding_window_zarr` (bounded memory, resumable; extra keyword
    arguments such as ``chunks``, ``unit``, ``shards``, ``compressors`` and ``client`` (a
    ``dask.distributed.Client``) go there) and the opened zarr array is returned.
    """
    if out is not None or not isinstance(x, torch.Tensor):
        if out is None:
            raise ValueError(
                "x is not a torch.Tensor: give out= (a path for the zarr v3 output) to run out "
                "of core, or pass a tensor")
        from .outofcore import sliding_window_zarr

        if out_dtype is not None:
            zarr_options["out_dtype"] = out_dtype
        return sliding_window_zarr(model, x, out, window, step, batch_size, weight,
                                   border=border, border_weight=border_weight, device=device,
                                   fill_value=fill_value, progress=progress, **zarr_options)
    if zarr_options:
        raise TypeError(f"unexpected arguments {sorted(zarr_options)} (only with out=)")
    if not callable(model):
        raise TypeError("model must be callable (a torch.nn.Module or function)")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (4, 5):
        raise ValueError(f"x must be (N, C, Y, X) or (N, C, Z, Y, X), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:  # the output's channel count comes from running the model
        raise ValueError("x has no images (N = 0): there is nothing to run the model on")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    q = Quilt(x.shape[2:], window, step, border=border, border_weight=border_weight,
              weight=weight, allow_gaps=allow_gaps, fill_value=fill_value)
    device = device_arg(device) or x.device
    out_device = device_arg(out_device, "out_device") or x.device
    out_dtype = float_dtype_arg(out_dtype)
    N = x.shape[0]
    total = N * q.num_windows
    origins = q._origins(N, x.device)
    acc = buf = None
    out_dt = out_dtype
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="win", desc="sliding_window")
    with torch.no_grad():
        for lo in range(0, total, batch_size):
            hi = min(lo + batch_size, total)
            if buf is None or buf.shape[0] < hi - lo:  # reused: no page faults per batch
                buf = torch.empty((hi - lo, x.shape[1], *q.window), dtype=x.dtype,
                                  device=x.device)
            patches = _ops.gather_windows_into(x, origins[lo:hi], buf[:hi - lo])
            y = model(to_device(patches, device))
            if not isinstance(y, torch.Tensor):
                raise TypeError(f"model must return a tensor, got {type(y).__name__}")
            if y.dim() != x.dim() or y.shape[0] != hi - lo or tuple(y.shape[2:]) != q.window:
                raise ValueError(
                    f"model output must have shape ({hi - lo}, C_out, "
                    f"{', '.join(map(str, q.window))}) for a batch of {hi - lo} windows, got "
                    f"{tuple(y.shape)}; sliding_window needs a model that keeps the window size"
                )
            if not y.is_floating_point():
                raise TypeError(f"model output must be floating point, got {y.dtype}")
            if acc is None:
                dt = torch.float64 if y.dtype == torch.float64 else torch.float32
                acc = torch.zeros((N, y.shape[1], *q.spatial_shape), dtype=dt,
                                  device=out_device)
                weight_t = q.weight_for(dt, out_device)
                out_origins = origins.to(out_device)
                out_dt = out_dt or y.dtype
            yb = y if _ops.acc_dtype(y.dtype) == dt else y.to(dt)
            # Every window of the grid runs once, so the weight sum is the grid's (computed
            # in closed form and cached): only the weighted predictions are scattered.
            _ops.scatter_add_windows_(to_device(yb, out_device), out_origins[lo:hi],
                                      acc, None, weight=weight_t)
            if bar is not None:
                bar.update(hi - lo)
    if bar is not None:
        bar.close()
    _ops.grid_normalize_(acc, weight_t, q.step, fill_value)  # fill where no weight covers
    return acc if acc.dtype == out_dt else acc.to(out_dt)
