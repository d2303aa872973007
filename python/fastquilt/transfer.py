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
