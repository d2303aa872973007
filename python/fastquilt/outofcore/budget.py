"""The memory bound of an out-of-core run in one process (``max_memory=``): an estimate of
fastquilt's own buffers and the choice of the configuration that keeps it under the bound.

What is counted, in bytes (``P``: voxels of one plane ``S_1 x S_2``; ``K``: state channels,
``C_out`` or ``2 C_out`` with std/variance; ``V_w``: voxels of a window; ``B``: batch size):

* the sums: the slab ``(K + 1) x H x P x 4`` with ``H = min(S_0, unit_0 + window_0)`` planes
  (:mod:`.slab`), or, where no slab fits, the spilling slab (:mod:`.spill`): a pool of units
  up to a cap, the rest in a scratch file, plus one row region ``(K + 1) x R x 4`` (``R``:
  the units that ``B`` windows in a row touch);
* finished units waiting for the writers: their outputs, plus one unit's state being finished;
* batches: windows in the queues (``depth + 2`` batches of ``C_in`` channels), predictions
  (``prediction depth + 1`` batches of ``K`` channels) and the models' temporaries (2
  batches of ``C_out`` channels for one model without augmentation: its output and the
  activation's; 4 for an ensemble or augmentations);
* input blocks: three blocks of whole input planes (read ahead; windows are copied from them
  straight into a batch);
* the window order: the (window, unit) pairs the slabs look units' windows up in.

The estimate may fill ``HEADROOM`` (80%) of the bound; the model's own working memory
(activations) should fit in the rest. The slab comes first: the unit depth is the largest
multiple of the chunk depth (up to the default, or exactly the ``unit`` given) that fits, then
the queue depth (2, then 1), and the units waiting with the prediction queue's depth: a plane
of units with the deep queue (up to ``PREDICTION_QUEUE_BYTES`` of predictions, at most
``PREDICTION_QUEUE_MAX`` batches), a plane with the queue depth, then 1 unit. The deep
prediction queue lets the model run on while the accumulator hands over a plane of finished
units (their normalisation and the writes take both cores of a small machine for a few
tenths of a second). Where no slab fits, units are one write block (chunk or shard) on every
axis (unless ``unit`` is given) and the queue depth 2, 1 or 0 (0: the model waits while the
accumulator adds its batch), the prediction queue as deep as the other; the first
configuration whose cap holds a row's units is taken, else the one with the largest cap. A
bound that not even the spilling slab with no cap fits is refused with the parts named.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
from typing import NamedTuple

import numpy as np

from ..grid import axis_count, axis_starts
from ..reductions import Reduction

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
# The share of max_memory the estimated buffers may fill: the rest is left for what the
# estimate does not count (the allocator's slack, the model's workspace, short temporaries);
# measured at 256^3, 32 classes: peaks 0.90-1.03 of the estimate.
HEADROOM = 0.8
# Predictions the model may queue ahead of the accumulator where the slab fits: enough to keep
# the model running while the accumulator finishes a plane of units (measured on 2 cores,
# 512^3, batches of 8 MiB, a model as long as the I/O: the model's idle time 0.64-0.94 s at 2
# batches, 0.49-0.59 s at 16).
PREDICTION_QUEUE_BYTES = 128 * 2**20
PREDICTION_QUEUE_MAX = 16


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


def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # (the process's own C library)
    except (OSError, AttributeError, TypeError):  # not glibc
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; nothing
    elsewhere). glibc keeps freed blocks of up to 32 MiB in each thread's heap once blocks
    that size have been freed (its sliding mmap threshold): in a bounded run that is memory
    the plan does not count (measured at 256^3, 32 classes, a 250 MiB bound: peak 323 MiB
    without trimming after each batch, 241 MiB with)."""
    if _TRIM is not None:
        _TRIM(0)


def default_max_memory() -> int:
    """Half of the machine's physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


class MemoryPlan(NamedTuple):
    unit: tuple[int, ...]
    queue_depth: int
    max_pending: int
    parts: dict
    spill_cap: int | None = None  # bytes of unit sums held in memory; None: the slab
    prediction_depth: int | None = None  # batches of predictions queued; None: queue_depth

    @property
    def prediction_queue(self) -> int:
        """Batches of predictions the accumulator's queue holds (1 in step)."""
        if self.queue_depth == 0:
            return 1
        return max(self.queue_depth if self.prediction_depth is None else self.prediction_depth,
                   1)

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _region_voxels(spatial, window, step, unit, batch_size: int) -> int:
    """Voxels of the largest row region of the spilling slab: the units that ``batch_size``
    windows in a row along the last axis touch, over the grid's starts."""
    vox = 1
    for d, (S, w, s, u) in enumerate(zip(spatial, window, step, unit)):
        starts = axis_starts(S, w, s)
        n = len(starts)
        b = batch_size if d == len(spatial) - 1 else 1
        vox *= max(min(((starts[min(i + b, n) - 1] + w - 1) // u + 1) * u, S)
                   - (starts[i] // u) * u for i in range(n))
    return vox


def _window_unit_pairs(spatial, window, step, unit, images: int) -> int:
    """How many (window, unit it touches) pairs the run has, at most."""
    n = 1
    for S, w, s, u in zip(spatial, window, step, unit):
        n *= axis_count(S, w, s) * min(-(-(w - 1) // u) + 1, -(-S // u))
    return images * n


def estimate(*, spatial, window, unit, c_in: int, in_itemsize: int, in_depth: int,
             state_channels: int, out_bytes: int, c_out: int, batch_size: int,
             queue_depth: int, max_pending: int, temporaries: int = 4, step=None,
             images: int = 1, spill_cap: int | None = None,
             prediction_depth: int | None = None) -> dict:
    """The parts of the memory estimate (bytes) of one configuration (module docstring)."""
    step = step or window
    pd = queue_depth if prediction_depth is None else prediction_depth
    P = math.prod(spatial[1:])
    Vw = math.prod(window)
    unit_vox = math.prod(min(u, s) for u, s in zip(unit, spatial))
    B = batch_size
    if spill_cap is None:
        H = min(spatial[0], unit[0] + window[0])
        sums = {"slab": (state_channels + 1) * H * P * 4}
    else:
        region = _region_voxels(spatial, window, step, unit, B)
        # (with the outputs of the units a row finishes, cut from it before it is freed)
        sums = {"unit sums held": spill_cap,
                "row region": ((state_channels + 1) * 4 + out_bytes) * region}
    return {
        **sums,
        "units waiting": max_pending * unit_vox * out_bytes + unit_vox * state_channels * 4,
        # (in step the queues hold one batch each, and the batcher fills a third)
        "batches": ((max(queue_depth, 1) + 2) * B * c_in * Vw * in_itemsize
                    + (pd + 1) * B * state_channels * Vw * 4
                    + temporaries * B * c_out * Vw * 4),
        "input blocks": 3 * max(in_depth, window[0]) * P * c_in * in_itemsize,
        # the order of the units' windows: 8 bytes a pair kept, about 5 times that while made
        "window order": 40 * _window_unit_pairs(spatial, window, step, unit, images),
    }


def _plane_units(spatial, unit) -> int:
    """Units in one plane of units (along axis 0)."""
    return math.prod(-(-S // u) for S, u in zip(spatial[1:], unit[1:]))


def plan_run(max_memory: int, channels: int, *, names: tuple[str, ...], out_dtype: str,
             **sizes) -> MemoryPlan:
    """:func:`plan_memory` for a run with ``channels`` model outputs and the reduction
    ``names`` written as ``out_dtype`` (``sizes``: the run's other sizes)."""
    red = Reduction(names, channels)
    out_bytes = sum(c * np.dtype(dt).itemsize for c, dt in red.specs(out_dtype).values())
    return plan_memory(max_memory, state_channels=red.state_channels, out_bytes=out_bytes,
                       c_out=channels, **sizes)


def plan_memory(max_memory: int, *, spatial, window, chunk, unit, unit_given: bool,
                **sizes) -> MemoryPlan:
    """The first configuration (module docstring) whose estimate fits ``max_memory``; a
    ``ValueError`` naming the parts of the smallest one when none does."""
    allowed = HEADROOM * max_memory
    u0 = unit[0]
    depths = [u0] if unit_given else sorted(
        {min(d, spatial[0]) for d in range(chunk[0], max(u0, chunk[0]) + 1, chunk[0])},
        reverse=True)
    batch = sizes["batch_size"] * math.prod(window) * sizes["state_channels"] * 4
    deep = max(2, min(PREDICTION_QUEUE_MAX, PREDICTION_QUEUE_BYTES // max(batch, 1)))
    for d in depths:
        u = (d, *unit[1:])
        plane = _plane_units(spatial, u)
        for q in (2, 1):
            # the deep prediction queue only with a plane of units waiting (units written one
            # at a time would stall the accumulator more than a shallow queue does)
            for pending, pd in dict.fromkeys([(plane, deep), (plane, q), (1, q)]):
                parts = estimate(spatial=spatial, window=window, unit=u, queue_depth=q,
                                 max_pending=pending, prediction_depth=pd, **sizes)
                if sum(parts.values()) <= allowed:
                    return MemoryPlan(u, q, pending, parts, prediction_depth=pd)
    # no slab fits: unit sums in memory up to a cap, the rest spilled to disk; units of one
    # write block (finest), and the cap from what the rest leaves (module docstring)
    u = tuple(unit) if unit_given else tuple(min(c, S) for c, S in zip(chunk, spatial))
    plans = []
    for q in (2, 1, 0):
        for pending in sorted({_plane_units(spatial, u), 1}, reverse=True):
            parts = estimate(spatial=spatial, window=window, unit=u, queue_depth=q,
                             max_pending=pending, spill_cap=0, **sizes)
            plans.append(MemoryPlan(u, q, pending, parts, 0))
    # the first whose cap holds a row's units; else the model and the accumulator in step,
    # with as many units waiting to be written as fit (writes overlap with the next batch)
    for plan in plans:
        cap = int(allowed - plan.total)
        if cap >= plan.parts["row region"] or (plan.queue_depth == 0 and cap >= 0):
            return plan._replace(spill_cap=cap, parts={**plan.parts, "unit sums held": cap})
    best = plans[-1]
    detail = ", ".join(f"{k} {_gib(v)}" for k, v in best.parts.items() if k != "unit sums held")
    raise ValueError(
        f"max_memory {_gib(max_memory)} is too small for this run: its smallest configuration "
        f"(units of {'x'.join(map(str, u))} spilled to disk, the model and the accumulator "
        f"in step) needs {_gib(best.total)} ({detail}), "
        f"and {100 - round(100 * HEADROOM)}% of the bound is kept for the model and the "
        "allocator. "
        "Give more memory, a smaller batch_size or window, smaller chunks, or fewer outputs "
        "(std and variance keep two values per channel)")
