"""Batches of windows for in-memory inference: gathered ``batch_size`` at a time into reused
buffers, run on the model's device, their predictions handed back on the accumulator's device,
in order.

With the model on a GPU and the volume or the accumulator in RAM, the host works one batch
ahead of the GPU, so that the model does not wait for the host's gathers and sums: the next
batch is gathered into one of two pinned buffers and its copy queued while the model runs, and
a batch's predictions come back into one of two pinned buffers and are summed on the CPU while
the model runs on the next batch. The copies themselves run on the model's stream, between its
calls. Pinned memory: two input and two output batches, which torch's pinned-memory cache
rounds up to powers of two and keeps for later calls (``torch._C._host_emptyCache()`` gives it
back); where memory cannot be pinned, pageable buffers give the same results without the
overlap of the copies."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import torch

from . import buffers, ops
from ._args import positive_int_arg
from .quilt import Quilt
from .transfer import Reached, queued_copy, queued_copy_, to_device

Batch = tuple[int, int, torch.Tensor]  # (lo, hi, a tensor of windows lo..hi)


def predictions(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, q: Quilt,
                batch_size, device: torch.device, out_device: torch.device,
                progress: bool) -> Iterator[Batch]:
    """``(lo, hi, model(patches of windows lo..hi on device) on out_device)`` for every batch
    of ``x``'s windows in qlty order. Where :func:`overlaps` says so, a batch's predictions are
    handed back after the next batch's model call (their copy queued meanwhile) in one of two
    reused buffers: valid until the next batch is drawn."""
    prefetch, defer = overlaps(x.device, device, out_device)
    ring = PinnedRing(out_device) if defer else None
    pending = None  # (lo, hi, predictions on out_device, the point their copy completes)
    for lo, hi, xb in device_batches(x, q, batch_size, device, prefetch, progress):
        y = model(xb)
        if ring is not None:
            ready, pending = pending, (lo, hi, *ring.queue(y))
        else:
            ready = (lo, hi, to_device(y, out_device), None)
        if ready is not None:
            yield arrived(ready)
            ready = None  # (the buffer is refilled two batches on)
    if pending is not None:
        yield arrived(pending)


def arrived(batch) -> Batch:
    """``(lo, hi, predictions)`` once their copy has completed."""
    lo, hi, y, copied = batch
    if copied is not None:
        copied.wait()
    return lo, hi, y


class PinnedRing:
    """Two buffers on ``device`` (pinned on the CPU where CUDA runs) filled in turn by queued
    copies: the caller reads a copy once it is reached and is done with it before the copy
    after next is queued."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.bufs: list[torch.Tensor | None] = [None, None]
        self.turn = 0

    def queue(self, t: torch.Tensor) -> tuple[torch.Tensor, Reached]:
        """``(a copy of t in the next buffer, the point its copy completes)``."""
        k, self.turn = self.turn, 1 - self.turn
        buf = self.bufs[k]
        if buf is None or buf.dtype != t.dtype or buf.shape[1:] != t.shape[1:] \
                or buf.shape[0] < t.shape[0]:
            buf = self.bufs[k] = empty_pinned(t.shape, t.dtype, self.device,
                                              pin=t.device.type == "cuda")
        dst = buf[:t.shape[0]]
        return dst, queued_copy_(dst, t)


def empty_pinned(shape, dtype: torch.dtype, device: torch.device, pin: bool) -> torch.Tensor:
    """An empty tensor on ``device``: pinned where ``pin`` and ``device`` is the CPU and the
    memory can be pinned, else from the output-buffer cache."""
    if pin and device.type == "cpu":
        try:
            return torch.empty(shape, dtype=dtype, pin_memory=True)
        except RuntimeError:  # (no pinnable memory left, or a host without it)
            pass
    return buffers.empty(shape, dtype, device)


# Runs the overlap of host and device on any device, prefetch and defer as given (tests: its
# ordering and its buffers on the CPU, where nothing is asynchronous).
_OVERLAP_EVERYWHERE: tuple[bool, bool] | None = None


def overlaps(x_device: torch.device, device: torch.device,
             out_device: torch.device) -> tuple[bool, bool]:
    """``(prefetch, defer)``: whether the next batch is gathered into a second (pinned)
    buffer while the model runs, for a volume in RAM and a model on a GPU; whether a batch's
    predictions are summed after the next batch's model call, for a model on a GPU and an
    accumulator in RAM."""
    if _OVERLAP_EVERYWHERE is not None:
        return _OVERLAP_EVERYWHERE
    return (x_device.type == "cpu" and device.type == "cuda",
            device.type == "cuda" and out_device.type == "cpu")


def device_batches(x: torch.Tensor, q: Quilt, batch_size, device: torch.device,
                   prefetch: bool, progress: bool) -> Iterator[Batch]:
    """``(lo, hi, patches on device)`` for every batch (:func:`window_batches`); ``progress``
    counts the windows handed on. With ``prefetch``, batches are gathered into two buffers in
    turn (pinned for a CUDA device) and their copies queued: a buffer is refilled once the copy
    that read it has completed."""
    batch_size = positive_int_arg(batch_size, "batch_size")  # (before any bar is drawn)
    # A volume the gather cannot read in place is made contiguous once: the gather would copy
    # it whole for every batch (the same peak memory, one copy instead of one per batch).
    x = x if ops.gather_reads_in_place(x) else x.contiguous()
    origins = q.origins(x.shape[0], x.device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=x.shape[0] * q.num_windows, unit="win", desc="sliding_window")
    try:
        if not prefetch:
            for lo, hi, patches in window_batches(x, q, batch_size, origins):
                yield lo, hi, to_device(patches, device)
                if bar is not None:
                    bar.update(hi - lo)
            return
        pin = device.type == "cuda"
        parts = [window_batches(x, q, batch_size, origins, pin=pin, part=(k, 2))
                 for k in (0, 1)]
        copied: list[Reached | None] = [None, None]
        for i in itertools.count():
            if copied[i % 2] is not None:
                copied[i % 2].wait()
            batch = next(parts[i % 2], None)
            if batch is None:
                return
            lo, hi, patches = batch
            xb, copied[i % 2] = queued_copy(patches, device)
            yield lo, hi, xb
            if bar is not None:
                bar.update(hi - lo)
    finally:
        if bar is not None:
            bar.close()


def window_batches(x: torch.Tensor, q: Quilt, batch_size: int, origins: torch.Tensor, *,
                   pin: bool = False, part: tuple[int, int] = (0, 1)) -> Iterator[Batch]:
    """``(lo, hi, patches (hi - lo, C, *window))``: windows ``lo..hi`` (``origins``, the
    grid's in qlty order) of every batch of ``batch_size`` windows of ``x``, gathered into one
    reused buffer (no page faults per batch, nor per call where the buffer cache holds it): a
    batch's patches are valid until the next one is drawn. ``part=(k, n)``: batches
    ``k, k + n, ...`` only; ``pin``: a pinned buffer."""
    total = origins.shape[0]
    k, n = part
    buf = None
    for lo in range(k * batch_size, total, n * batch_size):
        hi = min(lo + batch_size, total)
        if buf is None or buf.shape[0] < hi - lo:
            # (a dropped batch buffer of an earlier call is reused: no page faults)
            buf = empty_pinned((hi - lo, x.shape[1], *q.window), x.dtype, x.device, pin)
        yield lo, hi, ops.gather_windows_into(x, origins[lo:hi], buf[:hi - lo])
