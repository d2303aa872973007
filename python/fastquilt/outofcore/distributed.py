"""Out-of-core sliding-window inference on a ``dask.distributed`` cluster.

The work is a static task graph, built once on the client:

* the volume is cut along axis 0 into **bands** of whole unit planes, one per worker thread,
  with about as many windows each; a band's windows are those whose start lies in it;
* one **band task** per band runs the one-process pipeline (:func:`.local.run_windows`:
  reading ahead, the model, the sums on the model's device, writer threads) over its windows
  and writes every unit that only its windows touch;
* the units that windows of two bands touch (the first unit plane of each band but the first)
  are handed back unfinished: each band returns its piece of their sums (only the planes its
  windows reach), and one **owner** per such unit adds the pieces in band order, normalises,
  writes the unit once and marks it done.

Each worker thus reads, runs and sums its band as one process would, and only one plane of
units per band boundary crosses between tasks (dask runs an owner where its larger piece
is). No locks and no shared state: a band task writes only its own units, and every write
and marker is idempotent, so dask may retry any task (a killed worker's tasks simply run again
elsewhere, rewriting the same values). The model is sent to, or built on, each worker once. A
band task's memory is that of a run in one process: the slab of one plane of units, or under a
tight bound the spilling slab (``max_memory``, else the worker's memory limit per thread: see
:mod:`.budget`). Worker processes started by :func:`local_cluster` do not get distributed's
default ``MALLOC_TRIM_THRESHOLD_=65536`` (it made window production 2-3x slower in our
measurements); for your own cluster set
``distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_: null`` in the dask config.
"""

from __future__ import annotations

import math
import os
import time
import uuid
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
from .fingerprints import model_fingerprint
from .job import Job, Layout
from .local import run_windows, write_untouched
from .models import ModelFactory, resolve_model
from .reading import read_window
from .slab import touch_pairs
from .unit_sums import Piece, UnitSums

try:  # dask moves a task's result by its size: a piece is its tensors' bytes (not 80)
    from dask.sizeof import sizeof

    @sizeof.register(Piece)
    def _sizeof_piece(piece: Piece) -> int:
        return piece.acc.nbytes + piece.wsum.nbytes + 200
except ImportError:  # (no dask here: no cluster run either)
    pass


def local_cluster(n_workers: int = 2, threads_per_worker: int = 1, **kwargs):
    """A ``LocalCluster`` of worker processes without ``MALLOC_TRIM_THRESHOLD_``."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                            processes=True, **kwargs)


def local_gpu_cluster(devices=None, **kwargs):
    """One single-threaded worker process per GPU of this machine, each with its own
    ``CUDA_VISIBLE_DEVICES`` so that it sees its GPU as ``cuda:0`` (run with
    ``device="cuda"``); started like :func:`local_cluster`, without ``MALLOC_TRIM_THRESHOLD_``.

    ``devices``: the GPUs, as ``CUDA_VISIBLE_DEVICES`` names them (indices or UUIDs; default:
    this process's ``CUDA_VISIBLE_DEVICES``, else every GPU torch sees). ``kwargs`` go to
    ``distributed.SpecCluster`` (e.g. ``asynchronous``); ``memory_limit`` and
    ``dashboard_address`` are understood too. dask-cuda's ``LocalCUDACluster`` does the same
    where it is installed."""
    import dask
    from distributed import Nanny, Scheduler, SpecCluster

    if devices is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = ([d.strip() for d in visible.split(",") if d.strip()] if visible is not None
                   else [str(i) for i in range(torch.cuda.device_count())])
    devices = [str(d).strip() for d in devices]
    if not devices:
        raise ValueError("devices: no GPU to start a worker for (none visible); pass the "
                         "GPUs' indices, or use local_cluster() for CPU workers")
    if len(set(devices)) != len(devices) or any(not d for d in devices):
        raise ValueError(f"devices must name distinct GPUs, got {devices}")
    worker = {"nthreads": 1, "memory_limit": kwargs.pop("memory_limit", "auto")}
    dashboard = kwargs.pop("dashboard_address", ":0")
    # (without a dashboard the scheduler's HTTP server still starts: on any free port, not
    # 8787, which another cluster on the machine may hold)
    scheduler = ({"dashboard": False, "dashboard_address": ":0"} if dashboard is None
                 else {"dashboard_address": dashboard})
    workers = {f"gpu-{d}": {"cls": Nanny,
                            "options": {**worker, "env": {"CUDA_VISIBLE_DEVICES": d}}}
               for d in devices}
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": scheduler},
                           **kwargs)


def _check_env() -> None:
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


def _worker_budget(threads_on_host: dict[str, int]) -> int:
    """A band task's share of its worker's memory limit, or, for a worker without one, of
    half the machine's memory shared by every worker thread on the machine
    (``threads_on_host``: by host name)."""
    try:
        from distributed import get_worker

        worker = get_worker()
        limit = worker.memory_manager.memory_limit
        if limit:
            return int(limit) // max(int(worker.state.nthreads), 1)
        threads = threads_on_host.get(_host(worker.address), int(worker.state.nthreads))
        return default_max_memory() // max(threads, 1)
    except (ImportError, ValueError, AttributeError):
        return default_max_memory()


def _host(address: str) -> str:
    """The host of a dask address (``tcp://10.0.0.1:4242`` -> ``10.0.0.1``)."""
    return urlsplit(address).hostname or address


STOP_CHECK_S = 0.5  # how often a band asks whether its run was stopped


def _stop_signal(name: str) -> Callable[[], bool]:
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


def _run_band(job: Job, predictor: Predictor, windows: list[int], mine: frozenset[int],
              raw: dict[int, tuple[int, int]], outputs: tuple[str, ...], fill_value: float,
              batch_size: int, device: str, max_memory: int | None, sizes: dict | None,
              threads: tuple[int, int], threads_on_host: dict[str, int], stop: str,
              anchor: int) -> dict[int, Piece]:
    """Run the band's ``windows`` through the one-process pipeline; write its units of
    ``mine`` but those of ``raw``, and return the pieces of those, ``{uid: piece}``
    (``stop``: the run's stop event; ``anchor``: the band's placing task; see
    :func:`run_distributed`)."""
    _check_env()
    budget = max_memory if max_memory is not None else _worker_budget(threads_on_host)
    units = job.layout.units
    voxels = sum(math.prod(units.shape(uid)[1:]) * (min(b, box[0].stop) - max(a, box[0].start))
                 for uid, (a, b) in raw.items() for box in [units.box(uid)[1]])

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
                       writer_threads=threads[1], raw=raw, stop=_stop_signal(stop),
                       memory=plan if sizes else None)


def _pick(pieces: dict[int, Piece], uids: list[int]) -> dict[int, Piece]:
    """The pieces of ``uids`` in a band's result (a small task where the band ran)."""
    return {uid: pieces[uid] for uid in uids}


def _band_count(client, layout: Layout, todo: list[int]) -> int:
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
    band_of = np.zeros(len(todo), np.int64)
    for c in cuts:
        band_of[c:] += 1
    n_bands = len(cuts) + 1
    uids, positions = touch_pairs(layout, todo)
    pairs = np.unique(uids * n_bands + band_of[positions])
    pair_uid, pair_band = pairs // n_bands, pairs % n_bands
    keep = np.array([u not in done for u in pair_uid.tolist()], dtype=bool)
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


def _hold(value):
    """A task whose result is ``value``: data a task graph needs on its workers, which dask
    recomputes (from the graph) when the worker holding it dies."""
    return value


def model_fingerprint_on_a_worker(client, factory: ModelFactory, device) -> str | None:
    """The fingerprint of the model ``factory`` builds, built on a worker (the model may not
    fit or run here): the same as a local run's with that model."""
    return client.submit(_worker_fingerprint, factory, str(device), pure=False).result()


def _worker_fingerprint(factory: ModelFactory, device: str) -> str | None:
    return model_fingerprint(resolve_model(factory, device))


def _probe(job: Job, predictor: Predictor, k: int, device: str) -> int:
    """Output channels of the models, from one window."""
    window = read_window(job.x, job.layout, k)
    predictor(window[None], job.layout.window, torch.device(device))
    return int(predictor.channels)


def _own(job: Job, reduction: Reduction, uids: list[int], writer_threads: int,
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


def run_distributed(client, job: Job, predictor: Predictor, outputs: tuple[str, ...],
                    batch_size: int, device, fill_value: float, progress: bool, *,
                    max_memory: int | None = None, sizes: dict | None = None,
                    reader_threads: int = 2, writer_threads: int = 2):
    """Build and run the band/owner graph for ``job`` on ``client`` (``predictor``'s models
    may be recipes, built on the workers); returns the output. ``max_memory`` bounds each
    band task (default: its worker's memory limit per thread); ``sizes`` are the run's sizes
    for the memory plan (:func:`~.budget.plan_run`)."""
    from distributed import Event, as_completed

    layout, store = job.layout, job.store
    device = str(device)  # (sliding_window_zarr resolved it; a str pickles plainly)
    done = store.verified_done()
    todo, remaining = layout.plan(done)
    if not todo:
        return store.result()
    # Task keys unique to this call (run, below): dask hands a new task the result of a live
    # one with the same key, so keys named after the output alone would mix two runs.
    run = f"{store.path.name}-{uuid.uuid4().hex[:12]}"
    # The job and the model reach the workers as tasks, not scattered data: when a worker
    # dies, dask recomputes them on another one (or on its restarted self) from the graph.
    model_f = client.submit(_hold, predictor, key=f"fastquilt-model-{run}", pure=False)
    # The output needs C_out: probe the model on one window, on a worker (the model may not
    # fit or run on the client).
    c_out = client.submit(_probe, job, model_f, todo[0], device, pure=False).result()
    store.ensure(c_out)
    reduction = Reduction(outputs, c_out, fill_value)
    job_f = client.submit(_hold, job, key=f"fastquilt-job-{run}", pure=False)
    bands = cut_bands(layout, todo, done, _band_count(client, layout, todo))
    threads_on_host: dict[str, int] = {}
    for address, n in client.nthreads().items():
        threads_on_host[_host(address)] = threads_on_host.get(_host(address), 0) + n
    # Set when the call ends, however it ends: a band still running (one of a failed run, or
    # one dask started again after its result was lost) stops at its next batch.
    stop = Event(f"fastquilt-stop-{run}", client=client)
    # Each band also depends on a trivial task of its own, which dask places on the least busy
    # worker: dask runs a task only where its inputs are, and the job and the model are on
    # one worker, where every band would start (and be moved off only later). (Not dask's
    # workers= hints: a hinted task whose worker leaves waits for ever when no other worker
    # runs.)
    anchors = [client.submit(_hold, b, key=f"fastquilt-anchor-{run}-{b}", pure=False)
               for b in range(len(bands.windows))]
    band_fs = {b: client.submit(_run_band, job_f, model_f, ks, mine, raw, outputs, fill_value,
                                batch_size, device, max_memory, sizes,
                                (reader_threads, writer_threads), threads_on_host, stop.name,
                                anchor, key=f"fastquilt-band-{run}-{b}", pure=False)
               for b, (ks, mine, raw, anchor) in enumerate(zip(*bands[:3], anchors))}
    # The shared units in groups, each owned by one task that merges and writes them on
    # writer threads, where their band ran (the last band sharing them: it holds all their
    # planes; dask runs a task where most of its inputs' bytes are). The earlier bands' pieces
    # of a group are taken out of their results where those are, by a small task each (else
    # dask would move a whole band's result to the owner).
    sharers = {uid: [b for b, raw in enumerate(bands.raw) if uid in raw] for uid in bands.shared}
    groups: dict[int, list[int]] = {}
    for uid in bands.shared:
        groups.setdefault(sharers[uid][-1], []).append(uid)
    owners, picks = {}, {}
    group_bands = {g: sorted({b for uid in uids for b in sharers[uid]})  # (band order)
                   for g, uids in groups.items()}
    uses = {b: 0 for b in band_fs}  # owners still to finish that need a band's result
    for g, uids in groups.items():
        parts = []
        for b in group_bands[g]:
            uses[b] += 1
            if b == g:
                parts.append(band_fs[g])
                continue
            picks[(g, b)] = client.submit(
                _pick, band_fs[b], [u for u in uids if b in sharers[u]],
                key=f"fastquilt-pick-{run}-{g}-{b}", pure=False)
            parts.append(picks[(g, b)])
        owners[g] = client.submit(_own, job_f, reduction, uids, writer_threads, *parts,
                                  key=f"fastquilt-own-{run}-{g}", pure=False)
    task = {f.key: ("band", b) for b, f in band_fs.items()}
    task.update({f.key: ("own", g) for g, f in owners.items()})
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(remaining), unit="unit", desc="units written")
    try:
        for fut in as_completed([*band_fs.values(), *owners.values()]):
            if fut.status != "finished":  # (a band's result stays on its worker)
                fut.result()  # raises the task's error (after dask's retries)
            kind, i = task[fut.key]
            if kind == "band":
                freed = [i]
                if bar is not None:
                    bar.update(len(bands.mine[i]) - len(bands.raw[i]))
            else:
                del owners[i]
                for b in group_bands[i]:
                    picks.pop((i, b), None)
                    uses[b] -= 1
                freed = group_bands[i]
                if bar is not None:
                    bar.update(len(groups[i]))
            # A result no owner needs any more is let go: dask would compute it again (a whole
            # band) if the worker holding it died while the run goes on.
            for b in freed:
                if uses[b] == 0 and b in band_fs and band_fs[b].done():
                    del band_fs[b]
    except BaseException:
        # A failed task or Ctrl-C: stop the rest of the graph instead of leaving it running
        # (and writing) on the cluster; what finished stays marked done for the next run.
        _set(stop)
        client.cancel([model_f, job_f, *anchors, *band_fs.values(), *picks.values(),
                       *owners.values()], force=True)
        raise
    finally:
        _set(stop)
        if bar is not None:
            bar.close()
    store.check_written(remaining)  # never report success for output that is not there
    if layout.q.grid.allow_gaps:  # the units no window touches, at the fill value
        write_untouched(job, store.progress.done(), outputs, fill_value)
    return store.result()


def _set(event) -> None:
    """Set a dask ``Event``, unless the scheduler is gone (then no task runs either)."""
    try:
        event.set()
    except Exception:
        pass
