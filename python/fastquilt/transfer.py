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


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device``; the copy is queued on the device's stream where that is safe
    (:func:`copy_is_async`), else it completes before the call returns."""
    device = torch.device(device)
    return t.to(device, non_blocking=copy_is_async(t, device))
