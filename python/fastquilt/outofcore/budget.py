"""The memory bound of an out-of-core run in one process (``max_memory=``): an estimate of
fastquilt's own buffers and the choice of the unit depth (along axis 0), the queue depth and
the number of finished units waiting to be written that keep it under the bound.

What is counted, in bytes (``P``: voxels of one plane ``S_1 x S_2``; ``K``: state channels,
``C_out`` or ``2 C_out`` with std/variance; ``V_w``: voxels of a window; ``B``: batch size):

* the slab: ``(K + 1) x H x P x 4`` with ``H = min(S_0, unit_0 + window_0)`` planes;
* finished units waiting for the writers: their outputs, plus one unit's state being finished;
* batches: windows in the queues (``depth + 2`` batches of ``C_in`` channels), predictions
  (``depth + 1`` batches of ``K`` channels) and the ensemble's temporaries (4 batches of
  ``C_out`` channels);
* input blocks: three blocks of whole input planes (read ahead; windows are copied from them
  straight into a batch).

The estimate may fill ``HEADROOM`` (80%) of the bound; the model's own working memory
(activations) should fit in the rest. The unit depth is the largest
multiple of the chunk depth (up to the default, or exactly the ``unit`` given) that fits;
then the queue depth (2, then 1) and the units waiting (a plane of them, then 1).
"""

from __future__ import annotations

import math
import os
import re
from typing import NamedTuple

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
# The share of max_memory the estimated buffers may fill: the rest is left for what the
# estimate does not count (the allocator's slack, the model's workspace, short temporaries);
# measured at 256^3, 32 classes: peaks 0.90-1.03 of the estimate.
HEADROOM = 0.8


def memory_arg(value, name: str = "max_memory") -> int | None:
    """Bytes from an int or a string such as ``"4G"``, ``"500MiB"``, ``"1.5GB"`` (binary
    units); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number of bytes or a size like '4G', got {value!r}")
    if isinstance(value, (int, float)):
        n = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(value))
        if m is None:
            raise ValueError(f"{name} must be a number of bytes or a size like '4G' or "
                             f"'500MiB', got {value!r}")
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(n) or n <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return int(n)


def default_max_memory() -> int:
    """Half of the machine's physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


class MemoryPlan(NamedTuple):
    unit0: int
    queue_depth: int
    max_pending: int
    parts: dict

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def estimate(*, spatial, window, unit, c_in: int, in_itemsize: int, in_depth: int,
             state_channels: int, out_bytes: int, c_out: int, batch_size: int,
             queue_depth: int, max_pending: int) -> dict:
    """The parts of the memory estimate (bytes) of one configuration (module docstring)."""
    P = math.prod(spatial[1:])
    H = min(spatial[0], unit[0] + window[0])
    Vw = math.prod(window)
    unit_vox = math.prod(min(u, s) for u, s in zip(unit, spatial))
    B = batch_size
    return {
        "slab": (state_channels + 1) * H * P * 4,
        "units waiting": max_pending * unit_vox * out_bytes + unit_vox * state_channels * 4,
        "batches": ((queue_depth + 2) * B * c_in * Vw * in_itemsize
                    + (queue_depth + 1) * B * state_channels * Vw * 4 + 4 * B * c_out * Vw * 4),
        "input blocks": 3 * max(in_depth, window[0]) * P * c_in * in_itemsize,
    }


def plan_memory(max_memory: int, *, spatial, window, chunk0: int, unit, unit_given: bool,
                plane_units: int, **sizes) -> MemoryPlan:
    """The first configuration (module docstring) whose estimate fits ``max_memory``; a
    ``ValueError`` naming the parts of the smallest one when none does."""
    u0 = unit[0]
    depths = [u0] if unit_given else sorted(
        {min(d, spatial[0]) for d in range(chunk0, max(u0, chunk0) + 1, chunk0)}, reverse=True)
    best = None
    for d in depths:
        for q in (2, 1):
            for pending in sorted({plane_units, 1}, reverse=True):
                parts = estimate(spatial=spatial, window=window, unit=(d, *unit[1:]),
                                 queue_depth=q, max_pending=pending, **sizes)
                plan = MemoryPlan(d, q, pending, parts)
                if plan.total <= HEADROOM * max_memory:
                    return plan
                best = plan if best is None or plan.total < best.total else best
    detail = ", ".join(f"{k} {_gib(v)}" for k, v in best.parts.items())
    raise ValueError(
        f"max_memory {_gib(max_memory)} is too small for this run: its smallest configuration "
        f"(unit depth {best.unit0}, one batch in each queue) needs {_gib(best.total)} ({detail}), "
        f"and {100 - round(100 * HEADROOM)}% of the bound is kept for the model and the "
        "allocator. "
        "Give more memory, smaller chunks along the first spatial axis, a smaller batch_size "
        "or window, or fewer outputs (std and variance keep two values per channel)")
