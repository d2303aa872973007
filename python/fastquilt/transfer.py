"""Copies between devices that never let anyone read or reuse bytes still in flight."""

from __future__ import annotations

import torch


def copy_is_async(t: torch.Tensor, device: torch.device) -> bool:
    """Whether ``to_device`` may queue the copy of ``t`` to ``device`` and return at once.

    Only to a CUDA device, and only from memory the caller cannot still be writing: a
    pageable CPU source is staged before the call returns, but a pinned one is read by the
    DMA later, so a caller that refills it right away (a reused pinned batch buffer) would
    corrupt the copy. Device-to-host copies wait, since the CPU kernels that read the result
    right after would race with it.
    """
    if device.type != "cuda":
        return False
    return not (t.device.type == "cpu" and t.is_pinned())


def staged_to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A CPU ``t`` on a CUDA ``device`` through a pinned copy of its own, queued on the
    device's stream (a truly asynchronous copy: the CPU goes on with the next batch while the
    DMA runs). Safe where :func:`copy_is_async` refuses a caller's pinned buffer: nobody else
    holds this copy, and torch's pinned-memory allocator keeps its block until the copy has
    completed. Anything else goes through :func:`to_device`."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return to_device(t, device)
    return t.pin_memory().to(device, non_blocking=True)


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device``; the copy is queued on the device's stream where that is safe
    (:func:`copy_is_async`), else it completes before the call returns."""
    device = torch.device(device)
    return t.to(device, non_blocking=copy_is_async(t, device))


class Reached:
    """The point the current stream of ``device`` has reached when this is made (everything
    queued on it so far): :meth:`wait` blocks the host until the device has passed it. Off
    CUDA every copy has completed when it returns, so there is nothing to wait for."""

    def __init__(self, device: torch.device) -> None:
        self.event = None
        if device.type == "cuda":
            self.event = torch.cuda.Event()
            self.event.record(torch.cuda.current_stream(device))

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()


def queued_copy(t: torch.Tensor, device: torch.device | str) -> tuple[torch.Tensor, Reached]:
    """``t`` on ``device`` with the copy queued on the stream of its CUDA side, and the point
    at which it has completed: until :meth:`Reached.wait` the caller neither reads the copy
    (a copy to the CPU lands in pinned memory later) nor writes ``t`` (a pinned source is
    read by the DMA later). Without CUDA on either side the copy is done on return."""
    device = torch.device(device)
    cuda = _cuda_side(device, t.device)
    if cuda is None:
        return t.to(device), Reached(device)
    return t.to(device, non_blocking=True), Reached(cuda)


def queued_copy_(dst: torch.Tensor, src: torch.Tensor) -> Reached:
    """``dst.copy_(src)`` queued on the stream of its CUDA side, and the point at which it has
    completed: until :meth:`Reached.wait` the caller neither reads ``dst`` nor writes ``src``
    (a pinned ``dst`` or source is reached by the DMA later). Without CUDA on either side the
    copy is done on return."""
    cuda = _cuda_side(dst.device, src.device)
    if cuda is None:
        dst.copy_(src)
        return Reached(dst.device)
    dst.copy_(src, non_blocking=True)
    return Reached(cuda)


def _cuda_side(to: torch.device, source: torch.device) -> torch.device | None:
    """The CUDA device of a copy from ``source`` to ``to`` (whose stream queues it), if any."""
    return to if to.type == "cuda" else source if source.type == "cuda" else None
