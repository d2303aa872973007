"""Sliding-window inference in memory with bounded memory: gather ``batch_size`` windows at a
time, run the model, accumulate the weighted predictions, normalise once.

With the model on a GPU and the volume or the accumulator in RAM, the host works one batch
ahead of the device so that the model never waits for it: the next batch is gathered into one
of two pinned buffers and its copy queued while the model runs, and the predictions come back
into pinned memory and are summed on the CPU while the model runs on the next batch."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence

import torch

from . import buffers, ops
from ._args import device_arg, float_dtype_arg, positive_int_arg
from .quilt import Quilt
from .transfer import Reached, queued_copy, to_device


def check_model(model) -> None:
    """The model must be callable (a ``torch.nn.Module`` or a function)."""
    if not callable(model):
        raise TypeError("model must be callable (a torch.nn.Module or function)")


def check_model_output(y, batch: int, window: tuple[int, ...]) -> None:
    """A model's output for a batch of ``batch`` windows must be a floating tensor
    ``(batch, C_out, *window)``."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"model must return a tensor, got {type(y).__name__}")
    if y.dim() != len(window) + 2 or y.shape[0] != batch or tuple(y.shape[2:]) != window:
        raise ValueError(
            f"model output must have shape ({batch}, C_out, {', '.join(map(str, window))}) for "
            f"a batch of {batch} windows, got {tuple(y.shape)}; sliding-window inference needs "
            "a model that keeps the window size")
    if not y.is_floating_point():
        raise TypeError(f"model output must be floating point, got {y.dtype}")


def sliding_window_tensor(
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
) -> torch.Tensor:
    """Apply ``model`` to every window of the tensor ``x`` ``(N, C, *S)`` and stitch a weighted
    mean ``(N, C_out, *S)``; see :func:`fastquilt.sliding_window` for the arguments."""
    check_model(model)
    check_input(x)
    q = Quilt(x.shape[2:], window, step, border=border, border_weight=border_weight,
              weight=weight, allow_gaps=allow_gaps, fill_value=fill_value)
    device = device_arg(device) or x.device
    out_device = device_arg(out_device, "out_device") or x.device
    out_dtype = float_dtype_arg(out_dtype)
    N = x.shape[0]
    acc = None
    out_dt = out_dtype
    prefetch, defer = overlaps(x.device, device, out_device)
    pending = None  # (lo, hi, predictions on out_device, the point their copy completes)
    with torch.no_grad():
        for lo, hi, xb in device_batches(x, q, batch_size, device, prefetch, progress):
            y = model(xb)
            check_model_output(y, hi - lo, q.window)
            if acc is None:
                dt = ops.acc_dtype(y.dtype)
                # (a dropped output of an earlier call is reused: no page faults)
                acc = buffers.empty((N, y.shape[1], *q.spatial_shape), dt, out_device).zero_()
                weight_t = q.weight_for(dt, out_device)
                out_origins = q.origins(N, out_device)
                out_dt = out_dt or y.dtype
            yb = y if ops.acc_dtype(y.dtype) == dt else y.to(dt)
            if defer:  # the copy back is queued; these are summed after the next batch's model
                batch, pending = pending, (lo, hi, *queued_copy(yb, out_device))
            else:
                batch = (lo, hi, to_device(yb, out_device), None)
            if batch is not None:
                add_predictions(batch, acc, out_origins, weight_t)
        if pending is not None:
            add_predictions(pending, acc, out_origins, weight_t)
    ops.grid_normalize_(acc, weight_t, q.step, fill_value)  # fill where no weight covers
    return acc if acc.dtype == out_dt else acc.to(out_dt)


def add_predictions(batch, acc: torch.Tensor, origins: torch.Tensor,
                    weight: torch.Tensor) -> None:
    """Scatter-add the weighted predictions of windows ``lo..hi`` into ``acc`` once their copy
    has completed. Every window of the grid runs once, so the weight sum is the grid's (closed
    form): only the weighted predictions are scattered."""
    lo, hi, y, copied = batch
    if copied is not None:
        copied.wait()
    ops.scatter_add_windows_(y, origins[lo:hi], acc, None, weight=weight)


# Runs the overlap of host and device on any device (tests: its ordering and its buffers on
# the CPU, where nothing is asynchronous).
_OVERLAP_EVERYWHERE = False


def overlaps(x_device: torch.device, device: torch.device,
             out_device: torch.device) -> tuple[bool, bool]:
    """``(prefetch, defer)``: whether the next batch is gathered into a second (pinned)
    buffer while the model runs, for a volume in RAM and a model on a GPU; whether a batch's
    predictions are summed after the next batch's model call, for a model on a GPU and an
    accumulator in RAM."""
    if _OVERLAP_EVERYWHERE:
        return True, True
    return (x_device.type == "cpu" and device.type == "cuda",
            device.type == "cuda" and out_device.type == "cpu")


def device_batches(x: torch.Tensor, q: Quilt, batch_size, device: torch.device,
                   prefetch: bool, progress: bool) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(lo, hi, patches on device)`` for every batch (:func:`window_batches`). With
    ``prefetch``, batches are gathered into two buffers in turn (pinned for a CUDA device),
    and their copies queued: a buffer is refilled once the copy that read it has completed,
    and a batch's patches stay valid until the batch after next is drawn."""
    if not prefetch:
        for lo, hi, patches in window_batches(x, q, batch_size, progress):
            yield lo, hi, to_device(patches, device)
        return
    pin = device.type == "cuda"
    ring = [window_batches(x, q, batch_size, progress, pin=pin, part=(k, 2)) for k in (0, 1)]
    copied: list[Reached | None] = [None, None]
    for i in itertools.count():
        if copied[i % 2] is not None:
            copied[i % 2].wait()
        batch = next(ring[i % 2], None)
        if batch is None:
            return
        lo, hi, patches = batch
        xb, copied[i % 2] = queued_copy(patches, device)
        yield lo, hi, xb


def check_input(x) -> None:
    """``x`` must be a tensor ``(N, C, Y, X)`` or ``(N, C, Z, Y, X)`` with ``N >= 1``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (4, 5):
        raise ValueError(f"x must be (N, C, Y, X) or (N, C, Z, Y, X), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:  # the output's channel count comes from running the model
        raise ValueError("x has no images (N = 0): there is nothing to run the model on")


def window_batches(x: torch.Tensor, q: Quilt, batch_size, progress: bool, *,
                   pin: bool = False,
                   part: tuple[int, int] = (0, 1)) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(lo, hi, patches (hi - lo, C, *window))``: windows ``lo..hi`` of every
    batch of ``batch_size`` windows of ``x`` in qlty order, gathered into one reused buffer
    (no page faults per batch, nor per call where the buffer cache holds it): a batch's
    patches are valid until the next one is drawn. ``part=(k, n)``: batches ``k, k + n, ...``
    only (the progress bar counts every window in part 0); ``pin``: a pinned buffer."""
    batch_size = positive_int_arg(batch_size, "batch_size")
    total = x.shape[0] * q.num_windows
    origins = q.origins(x.shape[0], x.device)
    k, n = part
    buf = None
    bar = None
    if progress and k == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="win", desc="sliding_window")
    try:
        for lo in range(k * batch_size, total, n * batch_size):
            hi = min(lo + batch_size, total)
            if buf is None or buf.shape[0] < hi - lo:
                shape = (hi - lo, x.shape[1], *q.window)
                # (a dropped batch buffer of an earlier call is reused: no page faults)
                buf = (torch.empty(shape, dtype=x.dtype, pin_memory=True) if pin
                       else buffers.empty(shape, x.dtype, x.device))
            yield lo, hi, ops.gather_windows_into(x, origins[lo:hi], buf[:hi - lo])
            if bar is not None:
                bar.update(min(total, lo + n * batch_size) - lo)
    finally:
        if bar is not None:
            bar.close()
