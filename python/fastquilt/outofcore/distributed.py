"""Out-of-core sliding-window inference on a ``dask.distributed`` cluster.

The work is a static task graph, built once on the client:

* one **producer** per output unit: runs the model once on every window whose start lies in
  that unit (skipping windows that only touch finished units) and returns its weighted sums cut
  into pieces, one per unit the windows reach (at most 2^D, because a window is never longer
  than a unit plus the step);
* one **owner** per unfinished unit: adds the pieces that reach it, in a fixed order,
  normalises by the weight sum, writes the unit once, then writes its done-marker.

No locks and no shared state: producers are pure and owners idempotent, so dask may retry any
task (a killed worker's tasks simply run again elsewhere) and spill results to disk. The model
is sent to, or built on, each worker once. Worker processes started by :func:`local_cluster`
do not get distributed's default ``MALLOC_TRIM_THRESHOLD_=65536`` (it made window production
2-3x slower in our measurements); for your own cluster set
``distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_: null`` in the dask config.
"""

from __future__ import annotations

import os
import uuid
import warnings

import torch

from ..ensemble import Predictor
from ..reductions import Reduction
from .fingerprints import model_fingerprint
from .job import Job
from .models import ModelFactory, resolve_model
from .reading import read_region, read_window
from .slab import scatter_windows
from .unit_sums import UnitSums


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


def _produce(job: Job, predictor: Predictor, windows: list[int], dests: list[int],
             reduction: Reduction, batch_size: int, device: str) -> dict:
    """Run ``windows`` once; return ``{unit: (slices in the unit, state piece, weight-sum
    piece)}`` for the units ``dests`` their region reaches."""
    _check_env()
    layout = job.layout
    c_out = reduction.state_channels
    starts = layout.origins[windows, 1:]
    lo = starts.min(0).values.tolist()
    hi = (starts.max(0).values + torch.tensor(layout.window)).tolist()
    n = int(layout.origins[windows[0], 0])
    shape = tuple(h - a for a, h in zip(lo, hi))
    acc = torch.zeros((1, c_out, *shape), device=device)  # summed on the model's device
    wsum = torch.zeros((1, *shape), device=device)
    # one read of the region these windows cover, instead of one read per window
    region = read_region(job.x, n, lo, hi)

    def block(k):
        o = layout.origins[k].tolist()
        return region[(slice(None), *(slice(s - a, s - a + w)
                                      for s, a, w in zip(o[1:], lo, layout.window)))]

    for i in range(0, len(windows), batch_size):
        batch = windows[i:i + batch_size]
        pred = predictor(torch.stack([block(k) for k in batch]), layout.window,
                         torch.device(device))
        # the region holds them all
        scatter_windows(layout, acc, wsum, lo, batch, pred, reduction)
    pieces = {}
    for uid in dests:
        if layout.units.box(uid)[0] != n:
            continue
        part = layout.units.clip(uid, lo, shape)
        if part is not None:
            src, dst = part
            pieces[uid] = (dst, acc[(0, slice(None), *src)].to("cpu", copy=True),
                           wsum[(0, *src)].to("cpu", copy=True))
    return pieces


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


def _own(job: Job, uid: int, reduction: Reduction, *produced: dict) -> int:
    """Merge the pieces reaching unit ``uid`` (fixed order), finish its outputs, write them
    once, mark the unit done."""
    sums = UnitSums(job.layout.units, reduction.state_channels, reduction)
    for pieces in produced:
        if uid in pieces:
            sums.add(uid, *pieces[uid])
    job.store.write_unit(uid, sums.pop_outputs(uid))
    return uid


def run_distributed(client, job: Job, predictor: Predictor, outputs: tuple[str, ...],
                    batch_size: int, device, fill_value: float, progress: bool):
    """Build and run the producer/owner graph for ``job`` on ``client`` (``predictor``'s
    models may be recipes, built on the workers); returns the output."""
    from distributed import as_completed

    layout, store = job.layout, job.store
    device = str(device)  # (sliding_window_zarr resolved it; a str pickles plainly)
    done = store.verified_done()
    todo, remaining = layout.plan(done)
    # Task keys unique to this call (run, below): dask hands a new task the result of a live
    # one with the same key, so keys named after the output alone would mix two runs.
    if not todo:
        return store.result()
    # The job and the model reach the workers as tasks, not scattered data: when a worker
    # dies, dask recomputes them on another one (or on its restarted self) from the graph.
    run = f"{store.path.name}-{uuid.uuid4().hex[:12]}"
    model_f = client.submit(_hold, predictor, key=f"fastquilt-model-{run}", pure=False)
    # The output needs C_out: probe the model on one window, on a worker (the model may not
    # fit or run on the client).
    c_out = client.submit(_probe, job, model_f, todo[0], device, pure=False).result()
    store.ensure(c_out)
    reduction = Reduction(outputs, c_out, fill_value)
    job_f = client.submit(_hold, job, key=f"fastquilt-job-{run}", pure=False)
    # producers: windows grouped by the unit holding their start
    groups: dict[int, list[int]] = {}
    feeds: dict[int, set[int]] = {}
    for k in todo:
        o = layout.origins[k].tolist()
        start_unit = layout.units.start_unit(o)
        groups.setdefault(start_unit, []).append(k)
        feeds.setdefault(start_unit, set()).update(
            u for u in layout.units.touched(o, layout.window) if u not in done)
    producers = {
        p: client.submit(_produce, job_f, model_f, ks, sorted(feeds[p]), reduction, batch_size,
                         device, key=f"fastquilt-produce-{run}-{p}", pure=False)
        for p, ks in sorted(groups.items())
    }
    fed_by: dict[int, list] = {}
    for p in sorted(producers):
        for uid in feeds[p]:
            fed_by.setdefault(uid, []).append(producers[p])
    owners = [client.submit(_own, job_f, uid, reduction, *fed_by[uid],
                            key=f"fastquilt-own-{run}-{uid}", pure=False)
              for uid in sorted(remaining)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(owners), unit="unit", desc="units written")
    try:
        for fut in as_completed(owners):
            fut.result()  # raises the task's error (after dask's retries)
            if bar is not None:
                bar.update(1)
    except BaseException:
        # A failed task or Ctrl-C: stop the rest of the graph instead of leaving it running
        # (and writing) on the cluster; what finished stays marked done for the next run.
        client.cancel([model_f, job_f, *producers.values(), *owners], force=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    store.check_written(remaining)  # never report success for output that is not there
    return store.result()
