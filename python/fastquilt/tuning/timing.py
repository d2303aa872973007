"""One way to time a call: ``torch.utils.benchmark`` (warm-up, block sizes that amortise the
timer, CUDA synchronisation, a fixed thread count, median and IQR)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils import benchmark


@dataclass
class Timing:
    """Seconds per call: ``median`` and ``iqr`` over the measured blocks, ``best`` the fastest
    block's mean; ``calls`` timed calls (warm-up excluded)."""

    median: float
    iqr: float
    best: float
    calls: int

    def as_dict(self) -> dict:
        return {"median_s": self.median, "iqr_s": self.iqr, "best_s": self.best,
                "calls": self.calls}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], *, threads: int | None = None,
            min_run_time: float = 0.2, label: str = "", sub_label: str = "",
            description: str = "") -> tuple[Timing, benchmark.Measurement]:
    """Time ``fn()`` with :class:`torch.utils.benchmark.Timer` ``.blocked_autorange``: it warms
    up, picks a block size, synchronises CUDA around each block, and runs under ``threads``
    intra-op threads (default: the current count) for at least ``min_run_time`` seconds.
    Returns the summary and the Measurement (for :class:`torch.utils.benchmark.Compare`)."""
    threads = threads or torch.get_num_threads()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads, label=label,
                            sub_label=sub_label, description=description)
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return Timing(m.median, m.iqr, min(m.times), len(m.times) * m.number_per_run), m


def single_call(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one synchronised call: for work that cannot repeat (a run that writes a
    store) or whose first call is the point (fresh buffers)."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0
