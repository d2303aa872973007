"""Out-of-core sliding-window inference on a ``dask.distributed`` cluster (the graph; its
tasks are in :mod:`.bands`).

The work is a static task graph, built once on the client:

* the volume is cut along axis 0 into **bands** of whole unit planes, one per worker thread,
  with about as many windows each; a band's windows are those whose start lies in it;
* one **band task** per band runs the one-process pipeline (:func:`.local.run_windows`:
  reading ahead, the model, the sums on the model's device, writer threads) over its windows
  and writes every unit that only its windows touch;
* the units that windows of two bands touch (the first unit plane of each band but the first)
  are handed back unfinished: each band returns its piece of their sums (only the planes its
  windows reach), and **owners** (the units the same bands share, split into one run per
  sharing band) add the pieces in band order, normalise, write each unit once and mark it
  done.

Each worker thus reads, runs and sums its band as one process would, and only one plane of
units per band boundary crosses between tasks. The bands are hinted to the workers' threads,
spread evenly, each worker's bands neighbours (:func:`.bands.band_workers`), and the units two
bands share are split between two owners, one hinted to each band's worker; the hints are loose
(a task whose worker leaves runs on another). The bands start once every worker given a band
has the job and the model. No locks and no shared state: a band task writes only its own units,
and every write and marker is idempotent, so dask may retry any task (a killed worker's tasks
simply run again elsewhere, rewriting the same values). The model is sent to, or built on, each
worker once. A band task's memory is that of a run in one process: the slab of one plane of
units, or under a tight bound the spilling slab (``max_memory``, else the worker's memory limit
per thread: see :mod:`.budget`). Worker processes started by :func:`local_cluster` do not get
distributed's default ``MALLOC_TRIM_THRESHOLD_=65536`` (it made window production 2-3x slower
in our measurements); for your own cluster set
``distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_: null`` in the dask config.
"""

from __future__ import annotations

import os
import uuid

import torch

from ..ensemble import Predictor
from ..reductions import Reduction
from . import bands as band_tasks
from .fingerprints import model_fingerprint
from .job import Job
from .local import write_untouched
from .models import ModelFactory, resolve_model
from .reading import read_window
from .unit_sums import Piece

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


def _hold(value):
    """A task whose result is ``value``: data a task graph needs on its workers, which dask
    recomputes (from the graph) when the worker holding it dies."""
    return value


def _hint(worker: str | None) -> list[str] | None:
    """dask's ``workers=`` for one worker's address (None: no hint)."""
    return None if worker is None else [worker]


def _ready(*inputs) -> None:
    """A task that needs ``inputs`` on its worker (the bands wait for one on each worker)."""
    return None


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
    bands = band_tasks.cut_bands(layout, todo, done,
                                 band_tasks.band_count(client, layout, todo))
    # Set when the call fails or is interrupted: a band still running stops at its next
    # batch (dask cannot stop a running task).
    stop = Event(f"fastquilt-stop-{run}", client=client)
    # The bands go one per worker thread, spread over the workers, each worker's together
    # (band_workers; dask would run them all where the job and the model are). The hints are
    # loose: a band whose worker leaves runs on another (a strict hint would wait for ever
    # where no other worker runs). Every band first waits until each worker given a band has
    # the job and the model ("ready" tasks): a worker running its band serves the others'
    # fetches late (0.2-0.7 s measured on 2 cores).
    hints = band_tasks.band_workers(client, len(bands.windows))
    threads_on_host = band_tasks.threads_by_host(client)  # (once: every band's the same)
    ready = [client.submit(_ready, job_f, model_f, key=f"fastquilt-ready-{run}-{w}", pure=False,
                           workers=[w], allow_other_workers=True)
             for w in dict.fromkeys(hints) if w is not None]
    band_fs = {b: client.submit(band_tasks.run_band, job_f, model_f, ks, mine, raw, outputs,
                                fill_value, batch_size, device, max_memory, sizes,
                                (reader_threads, writer_threads),
                                threads_on_host, stop.name, ready,
                                key=f"fastquilt-band-{run}-{b}", pure=False,
                                workers=_hint(hints[b]), allow_other_workers=True)
               for b, (ks, mine, raw) in enumerate(zip(*bands[:3]))}
    # The shared units' owners: each merges and writes its units on writer threads. The units
    # that the same bands share are split among those bands' workers (hinted, loosely), so
    # the merges after the last bands run on all their workers. Each band's pieces of an
    # owner's units are taken out of its result where that lies, by a small task (else dask
    # would move a whole band's result to the owner).
    groups = dict(enumerate(band_tasks.owner_groups(bands)))
    owners, picks = {}, {}
    uses = {b: 0 for b in band_fs}  # owners still to finish that need a band's result
    for g, (uids, sharing, home) in groups.items():
        parts = []
        for b in sharing:
            uses[b] += 1
            picks[(g, b)] = client.submit(
                band_tasks.pick, band_fs[b], [u for u in uids if u in bands.raw[b]],
                key=f"fastquilt-pick-{run}-{g}-{b}", pure=False)
            parts.append(picks[(g, b)])
        owners[g] = client.submit(band_tasks.own, job_f, reduction, uids, writer_threads,
                                  *parts, key=f"fastquilt-own-{run}-{g}", pure=False,
                                  workers=_hint(hints[home]), allow_other_workers=True)
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
                uids, freed, _ = groups[i]
                for b in freed:
                    picks.pop((i, b), None)
                    uses[b] -= 1
                if bar is not None:
                    bar.update(len(uids))
            # A result no owner needs any more is let go: dask would compute it again (a whole
            # band) if the worker holding it died while the run goes on. (A band is done before
            # its owners, so it is let go once: when it ends, or with its last owner.)
            for b in freed:
                if uses[b] == 0:
                    del band_fs[b]
    except BaseException:
        # A failed task or Ctrl-C: stop the rest of the graph instead of leaving it running
        # (and writing) on the cluster; what finished stays marked done for the next run.
        _signal(stop, True)
        client.cancel([model_f, job_f, *ready, *band_fs.values(), *picks.values(),
                       *owners.values()], force=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    # Every task has ended: nothing is left to stop (and a cleared event is deleted on the
    # scheduler; a failed run's stays set, for its bands still running).
    _signal(stop, False)
    store.check_written(remaining)  # never report success for output that is not there
    if layout.q.grid.allow_gaps:  # the units no window touches, at the fill value
        write_untouched(job, store.progress.done(), outputs, fill_value)
    return store.result()


def _signal(event, stop: bool) -> None:
    """Set (``stop``) or clear a dask ``Event``, unless the scheduler is gone (then no task
    runs either)."""
    try:
        event.set() if stop else event.clear()
    except Exception:
        pass
