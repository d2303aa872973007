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

import numpy as np
import torch

from ._model_loading import ModelFactory, resolve_model  # noqa: F401  (public here)


def local_cluster(n_workers: int = 2, threads_per_worker: int = 1, **kwargs):
    """A ``LocalCluster`` of worker processes without ``MALLOC_TRIM_THRESHOLD_``."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                            processes=True, **kwargs)


def _check_env() -> None:
    if os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        warnings.warn(
            "this dask worker runs with MALLOC_TRIM_THRESHOLD_ set, which slows window "
            "production 2-3x; start workers with distributed.nanny.pre-spawn-environ."
            "MALLOC_TRIM_THRESHOLD_: null (fastquilt.distributed.local_cluster does)",
            RuntimeWarning, stacklevel=2)


def _produce(job, model, windows: list[int], dests: list[int], c_out: int, batch_size: int,
             device: str) -> dict:
    """Run ``windows`` once; return ``{unit: (slices in the unit, weighted-sum piece,
    weight-sum piece)}`` for the units ``dests`` their region reaches."""
    _check_env()
    model = resolve_model(model, device)
    starts = job.origins[windows, 1:]
    lo = starts.min(0).values.tolist()
    hi = (starts.max(0).values + torch.tensor(job.q.window)).tolist()
    shape = tuple(h - lo_ for lo_, h in zip(lo, hi))
    acc = np.zeros((1, c_out, *shape), np.float32)
    wsum = np.zeros((1, *shape), np.float32)
    n = int(job.origins[windows[0], 0])
    # one read of the region these windows cover, instead of one read per window
    from .outofcore import _spatial_read

    region = _spatial_read(job.x, n, tuple(slice(a, b) for a, b in zip(lo, hi)))

    def block(k):
        o = job.origins[k].tolist()
        return region[(slice(None), *(slice(s - a, s - a + w)
                                      for s, a, w in zip(o[1:], lo, job.q.window)))]

    for i in range(0, len(windows), batch_size):
        batch = windows[i:i + batch_size]
        pred = job.predict(model, [block(k) for k in batch], torch.device(device))
        job.scatter(acc, wsum, lo, batch, pred)  # whole windows: the region holds them all
    pieces = {}
    for uid in dests:
        un, box = job.units.box(uid)
        if un != n:
            continue
        src, dst = [], []
        for b, lo_, size in zip(box, lo, shape):
            a, e = max(b.start, lo_), min(b.stop, lo_ + size)
            if a >= e:
                break
            src.append(slice(a - lo_, e - lo_))
            dst.append(slice(a - b.start, e - b.start))
        else:
            pieces[uid] = (tuple(dst), acc[(0, slice(None), *src)].copy(),
                           wsum[(0, *src)].copy())
    return pieces


def _probe(job, model, k: int, device: str) -> int:
    """Output channels of the model, from one window."""
    return int(job.predict(resolve_model(model, device), [job.read_window(k)],
                           torch.device(device))
               .shape[1])


def _own(job, uid: int, c_out: int, *produced: dict) -> int:
    """Add the pieces reaching unit ``uid`` (fixed order), normalise, write once, mark done."""
    acc, wsum = job.new_unit_buffers(uid, c_out)
    for pieces in produced:
        if uid in pieces:
            dst, a, w = pieces[uid]
            acc[(slice(None), *dst)] += a
            wsum[dst] += w  # weight sums come from the geometry, never from storage
    job.finish(uid, acc, wsum)
    return uid


def run_distributed(client, job, model, batch_size: int, device, progress: bool):
    """Build and run the producer/owner graph for ``job`` on ``client``; returns the output."""
    from distributed import as_completed

    device = str(device)  # (sliding_window_zarr resolved it; a str pickles plainly)
    done = job.progress.done()
    todo, remaining = job.plan(done)
    if not todo:
        return job.arr
    model_f = (model if isinstance(model, ModelFactory)
               else client.scatter(model, broadcast=True, hash=False))
    # The output needs C_out: probe the model on one window, on a worker (the model may not
    # fit or run on the client).
    c_out = client.submit(_probe, job, model_f, todo[0], device, pure=False).result()
    job.ensure_output(c_out)
    job_f = client.scatter(job, broadcast=True, hash=False)  # with the output opened
    # producers: windows grouped by the unit holding their start
    groups: dict[int, list[int]] = {}
    feeds: dict[int, set[int]] = {}
    for k in todo:
        o = job.origins[k].tolist()
        start_unit = job.units.id(o[0], [s // u for s, u in zip(o[1:], job.unit)])
        groups.setdefault(start_unit, []).append(k)
        feeds.setdefault(start_unit, set()).update(
            u for u in job.units.touched(o, job.q.window) if u not in done)
    # Task keys unique to this call: dask hands a new task the result of a live one with the
    # same key, so keys named after the output alone mixed two runs (two `pred.zarr` in
    # different folders, or a run right after another).
    run = f"{job.out_path.name}-{uuid.uuid4().hex[:12]}"
    producers = {
        p: client.submit(_produce, job_f, model_f, ks, sorted(feeds[p]), c_out, batch_size,
                         device, key=f"fastquilt-produce-{run}-{p}", pure=False)
        for p, ks in sorted(groups.items())
    }
    fed_by: dict[int, list] = {}
    for p in sorted(producers):
        for uid in feeds[p]:
            fed_by.setdefault(uid, []).append(producers[p])
    owners = [client.submit(_own, job_f, uid, c_out, *fed_by[uid],
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
        client.cancel(list(producers.values()) + owners, force=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    return job.arr
