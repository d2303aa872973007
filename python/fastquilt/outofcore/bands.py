"""A cluster run's bands (:mod:`.distributed`): the windows cut into bands of whole unit
planes along axis 0, the band task that runs one band through the one-process pipeline and
hands back the pieces of the units it shares, and the owner task that merges those pieces and
writes the shared units."""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple
from urllib.parse import urlsplit

import numpy as np
import torch

from ..ensemble import Predictor
from ..reductions import Reduction
from .budget import MemoryPlan, default_max_memory, plan_run
from .job import Job, Layout
from .local import run_windows
from .slab import touch_pairs
from .unit_sums import Piece, UnitSums, piece_slices


def check_worker_env() -> None:
    """Warn where this worker runs with ``MALLOC_TRIM_THRESHOLD_`` set (see
    :func:`~.distributed.local_cluster`)."""
    if os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        warnings.warn(
            "this dask worker runs with MALLOC_TRIM_THRESHOLD_ set, which slows window "
            "production 2-3x; start workers with distributed.nanny.pre-spawn-environ."
            "MALLOC_TRIM_THRESHOLD_: null (fastquilt.distributed.local_cluster does)",
            RuntimeWarning, stacklevel=2)


class _Outside:
    """The units a band task must not hand over (a ``done`` set for the slabs): all but
    ``mine``."""

    def __init__(self, mine: frozenset[int]) -> None:
        self.mine = mine

    def __contains__(self, uid: object) -> bool:
        return uid not in self.mine


def worker_budget(threads_on_host: dict[str, int]) -> int:
    """A band task's share of its worker's memory limit, or, for a worker without one, of
    half the machine's memory shared by every worker thread on the machine
    (``threads_on_host``: by host name)."""
    try:
        from distributed import get_worker

        worker = get_worker()
        limit = worker.memory_manager.memory_limit
        if limit:
            return int(limit) // max(int(worker.state.nthreads), 1)
        threads = threads_on_host.get(host_of(worker.address), int(worker.state.nthreads))
        return default_max_memory() // max(threads, 1)
    except (ImportError, ValueError, AttributeError):
        return default_max_memory()


def host_of(address: str) -> str:
    """The host of a dask address (``tcp://10.0.0.1:4242`` -> ``10.0.0.1``)."""
    return urlsplit(address).hostname or address


STOP_CHECK_S = 0.5  # how often a band asks whether its run was stopped


def stop_signal(name: str) -> Callable[[], bool]:
    """Whether the run's stop event (``name``) is set, asked of the scheduler at most every
    ``STOP_CHECK_S`` (dask cannot stop a running task: a band of a failed or interrupted run
    would go on writing units after its call has returned)."""
    from distributed import Event

    event = Event(name)
    last = time.monotonic()

    def stopped() -> bool:
        nonlocal last
        if time.monotonic() - last < STOP_CHECK_S:
            return False
        last = time.monotonic()
        try:
            return event.is_set()
        except Exception:  # (the scheduler is unreachable for now: keep going)
            return False

    return stopped


def run_band(job: Job, predictor: Predictor, windows: list[int], mine: frozenset[int],
              raw: dict[int, tuple[int, int]], outputs: tuple[str, ...], fill_value: float,
              batch_size: int, device: str, max_memory: int | None, sizes: dict | None,
              threads: tuple[int, int], threads_on_host: dict[str, int], stop: str,
              ready: list) -> dict[int, Piece]:
    """Run the band's ``windows`` through the one-process pipeline; write its units of
    ``mine`` but those of ``raw``, and return the pieces of those, ``{uid: piece}``
    (``stop``: the run's stop event; ``ready``: the results of the tasks it waits for; see
    :func:`~.distributed.run_distributed`)."""
    check_worker_env()
    budget = max_memory if max_memory is not None else worker_budget(threads_on_host)
    voxels = sum(math.prod(s.stop - s.start for s in piece_slices(job.layout.units, uid, span))
                 for uid, span in raw.items())

    def plan(channels: int) -> MemoryPlan:
        # the pieces handed back are held until the band ends: the rest is the pipeline's
        held = (Reduction(outputs, channels).state_channels + 1) * voxels * 4
        what = (f"max_memory: a band's pieces for the units it shares take {held} bytes of its "
                f"bound of {budget} bytes")
        advice = ("give more memory (max_memory, or the workers' memory limit), or fewer "
                  "worker threads (fewer, thicker bands)")
        if held >= budget:
            raise ValueError(f"{what}; {advice}")
        try:
            return plan_run(budget - held, channels, **sizes)
        except ValueError as e:
            raise ValueError(f"{what}, and the rest is too small for its pipeline ({e}); "
                             f"{advice}") from None

    return run_windows(job, predictor, windows, _Outside(mine), outputs, batch_size,
                       torch.device(device), fill_value, reader_threads=threads[0],
                       writer_threads=threads[1], raw=raw, stop=stop_signal(stop),
                       memory=plan if sizes else None)


def pick(pieces: dict[int, Piece], uids: list[int]) -> dict[int, Piece]:
    """The pieces of ``uids`` in a band's result (a small task where the band ran)."""
    return {uid: pieces[uid] for uid in uids}


def band_count(client, layout: Layout, todo: list[int]) -> int:
    """How many bands a run cuts its windows into: one per worker thread, but each band at
    least twice as thick as the unit planes a window reaches beyond its own (thinner bands
    would share most of their units)."""
    org = layout.origins[todo]
    planes = len({(n, s // layout.unit[0]) for n, s in org[:, :2].tolist()})
    reach = max(-(-(layout.window[0] - 1) // layout.unit[0]), 1)
    return max(min(sum(client.nthreads().values()), planes // (2 * reach)), 1)


class Bands(NamedTuple):
    windows: list[list[int]]  # per band, its windows (raster order)
    mine: list[frozenset[int]]  # per band, the unfinished units its windows touch
    raw: list[dict[int, tuple[int, int]]]  # per band, its shared units: the planes it reaches
    shared: list[int]  # the units windows of two bands touch


def cut_bands(layout: Layout, todo: list[int], done: set[int], count: int) -> Bands:
    """The windows ``todo`` (raster order) in at most ``count`` bands of whole unit planes
    along axis 0 (of one image, or several), with about as many windows each, and who sums
    which of the units not in ``done``."""
    org = layout.origins[todo].numpy()
    counts0, u0, w0 = layout.units.counts[0], layout.unit[0], layout.window[0]
    planes = org[:, 0] * counts0 + org[:, 1] // u0
    if (np.diff(planes) < 0).any():
        raise RuntimeError("cut_bands: the windows are not in raster order")
    changes = np.flatnonzero(np.diff(planes)) + 1  # where a band may start
    cuts = sorted({int(changes[np.abs(changes - i * len(todo) / count).argmin()])
                   for i in range(1, count)} if len(changes) else set())
    band_of = np.searchsorted(cuts, np.arange(len(todo)), side="right")
    n_bands = len(cuts) + 1
    uids, positions = touch_pairs(layout, todo)
    pairs = np.unique(uids * n_bands + band_of[positions])
    pair_uid, pair_band = pairs // n_bands, pairs % n_bands
    keep = ~np.isin(pair_uid, np.fromiter(done, np.int64, len(done)))
    pair_uid, pair_band = pair_uid[keep], pair_band[keep]
    shared_uids = np.unique(pair_uid[np.bincount(pair_uid, minlength=layout.units.total())
                                     [pair_uid] > 1])
    shared = set(shared_uids.tolist())
    bounds = [0, *cuts, len(todo)]
    windows = [todo[a:b] for a, b in zip(bounds, bounds[1:])]
    mine = [frozenset(pair_uid[pair_band == b].tolist()) for b in range(n_bands)]
    raw = []
    for b in range(n_bands):
        o = org[bounds[b]:bounds[b + 1]]
        span = {int(n): (int(o[o[:, 0] == n, 1].min()), int(o[o[:, 0] == n, 1].max()) + w0)
                for n in np.unique(o[:, 0])}
        raw.append({uid: span[layout.units.box(uid)[0]] for uid in sorted(mine[b] & shared)})
    return Bands(windows, mine, raw, sorted(shared))


def owner_groups(bands: Bands) -> list[tuple[list[int], list[int], int]]:
    """The owners of the shared units, ``[(uids, sharing bands in band order, home band)]``:
    the units that the same bands share, split into as many runs as those bands (in unit
    order), each run owned where one of them ran."""
    by_sharing: dict[tuple[int, ...], list[int]] = {}
    for uid in bands.shared:
        sharing = tuple(b for b, raw in enumerate(bands.raw) if uid in raw)
        by_sharing.setdefault(sharing, []).append(uid)
    owners = []
    for sharing, uids in by_sharing.items():
        for home, run in zip(sharing, np.array_split(np.asarray(uids), len(sharing))):
            if len(run):
                owners.append((run.tolist(), list(sharing), home))
    return owners


def band_workers(client, bands: int) -> list[str | None]:
    """The worker each of ``bands`` bands is hinted to: the workers' threads in a row, each
    worker's together (``[a, a, b, b]`` for two workers of two threads), cut into ``bands``
    equal shares, each band on the thread in the middle of its share; so neighbouring bands
    share a worker where they can (their shared units' pieces stay on it), and fewer bands
    than threads still spread over the workers. None where the cluster has no worker now (no
    hint)."""
    slots = [w for w, n in sorted(client.nthreads().items()) for _ in range(n)]
    if not slots:
        return [None] * bands
    return [slots[(2 * b + 1) * len(slots) // (2 * bands)] for b in range(bands)]


def threads_by_host(client) -> dict[str, int]:
    """The cluster's worker threads by host name."""
    threads: dict[str, int] = {}
    for address, n in client.nthreads().items():
        threads[host_of(address)] = threads.get(host_of(address), 0) + n
    return threads


def own(job: Job, reduction: Reduction, uids: list[int], writer_threads: int,
         *parts: dict[int, Piece]) -> int:
    """Merge the pieces of units ``uids`` from the bands' ``parts`` (in band order), finish
    their outputs and write each unit once, marking it done, on ``writer_threads``
    threads; returns how many units were written."""
    units = job.layout.units

    def write(uid: int) -> None:
        sums = UnitSums(units, reduction.state_channels, reduction)
        for part in parts:
            if uid in part:
                sums.add(uid, *part[uid])
        job.store.write_unit(uid, sums.pop_outputs(uid))

    with ThreadPoolExecutor(max_workers=writer_threads,
                            thread_name_prefix="fastquilt-owner") as pool:
        for _ in pool.map(write, uids):  # (raises a unit's error)
            pass
    return len(uids)
