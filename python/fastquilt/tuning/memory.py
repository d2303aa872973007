"""Peak memory of one call, and out-of-memory errors told apart from other failures.

CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before the call. CPU:
the process's peak resident set (``VmHWM`` in ``/proc/self/status``) above its resident set
before the call, after resetting the peak (``5 > /proc/self/clear_refs``). The allocator may
keep memory freed by an earlier call, so the CPU number is a lower bound; where the peak
cannot be reset, the bytes of the batch's input and output tensors are reported instead."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import torch

OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is a device or host allocation failure."""
    if isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(e, RuntimeError) and any(m in str(e).lower() for m in OOM_MARKERS)


def release(device: torch.device) -> None:
    """Give back what a failed call left: Python garbage and the CUDA cache."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory(fn: Callable[[], object], device: torch.device,
                tensor_bytes: int) -> tuple[int, str]:
    """``(bytes, method)``: the memory one call of ``fn`` needs above what was in use before
    it; ``tensor_bytes`` is the fallback estimate."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, "cuda max_memory_allocated"
    base = _status_kib("VmRSS")
    if base is None or not _reset_peak_rss():
        fn()
        return tensor_bytes, "input + output tensor bytes"
    fn()
    peak = _status_kib("VmHWM") or base
    return max(0, peak - base) * 1024, "peak RSS growth (VmHWM)"
