"""Batches of windows for in-memory inference: gathered ``batch_size`` at a time into reused
buffers, run on the model's device, their predictions handed back on the accumulator's device,
in order.

With the model on a GPU and the volume or the accumulator in RAM, the host works one batch
ahead of the GPU, so that the model does not wait for it: the next batch is gathered into one
of two pinned buffers and its copy queued while the model runs, and a batch's predictions come
back into pinned memory and are summed on the CPU while the model runs on the next batch."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import torch

from . import buffers, ops
from ._args import positive_int_arg
from .quilt import Quilt
from .transfer import Reached, queued_copy, to_device


def predictions(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, q: Quilt,
                batch_size, device: torch.device, out_device: torch.device,
                progress: bool) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(lo, hi, model(patches of windows lo..hi on device) on out_device)`` for every batch
    of ``x``'s windows in qlty order. Where :func:`overlaps` says so, a batch's predictions are
    handed back after the next batch's model call (their copy queued meanwhile)."""
    prefetch, defer = overlaps(x.device, device, out_device)
    pending = None  # (lo, hi, predictions on out_device, the point their copy completes)
    for lo, hi, xb in device_batches(x, q, batch_size, device, prefetch, progress):
        y = model(xb)
        if defer:
            ready, pending = pending, (lo, hi, *queued_copy(y, out_device))
        else:
            ready = (lo, hi, to_device(y, out_device), None)
        if ready is not None:
            yield arrived(ready)
    if pending is not None:
        yield arrived(pending)


def arrived(batch) -> tuple[int, int, torch.Tensor]:
    """``(lo, hi, predictions)`` once their copy has completed."""
    lo, hi, y, copied = batch
    if copied is not None:
        copied.wait()
    return lo, hi, y


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
