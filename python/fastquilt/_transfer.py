"""Copies between devices that never let the host read bytes that have not arrived."""

from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device``. A copy to a CUDA device is queued on its stream (``non_blocking``:
    the host goes on, and kernels on that stream run after the copy; a pageable source is
    staged before the call returns, so it may be reused at once). A copy to the CPU waits:
    a ``non_blocking`` device-to-host copy returns before the bytes arrive, and the CPU
    kernels that read the result right after would race with it."""
    device = torch.device(device)
    return t.to(device, non_blocking=device.type == "cuda")
