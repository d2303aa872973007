"""The out-of-core run in one process: windows read in raster order (ahead of time, on reader
threads), the model on batches, their weighted predictions summed in the RAM slab, finished
units written on writer threads while the next windows run."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from .job import Job
from .models import predict
from .reading import windows_by_row
from .slab import Slab


def run_local(job: Job, model, batch_size: int, device: torch.device, fill_value: float,
              progress: bool):
    """Run every window of ``job`` that touches an unfinished unit; returns the output."""
    layout, store = job.layout, job.store
    done = store.verified_done()
    todo, _ = layout.plan(done)
    writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fastquilt-writer")
    reader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fastquilt-reader")
    writes: list[Future] = []
    slab = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="win", desc="sliding_window -> zarr")

    max_pending = int(np.prod(layout.units.counts[1:]))  # one plane of units

    def submit(units):
        for uid, mean in units:
            while len(writes) >= max_pending:  # back-pressure: memory stays bounded
                writes.pop(0).result()
            writes.append(writer.submit(store.write_unit, uid, mean))

    try:
        windows = windows_by_row(job.x, layout, todo, reader)
        while True:
            batch, blocks = [], []
            for k, block in windows:
                batch.append(k)
                blocks.append(block)
                if len(batch) == batch_size:
                    break
            if not batch:
                break
            pred = predict(model, blocks, layout.window, device)
            store.ensure(pred.shape[1])
            if slab is None:
                slab = Slab(layout, pred.shape[1], done, fill_value)
            submit(slab.add(batch, pred))
            for f in [f for f in writes if f.done()]:
                f.result()  # raise a failed write now
            writes = [f for f in writes if not f.done()]
            if bar is not None:
                bar.update(len(batch))
                bar.set_postfix(units_written=slab.flushed)
        if slab is not None:
            submit(slab.flush_image())
        for f in writes:
            f.result()
    finally:
        writer.shutdown(wait=True)
        reader.shutdown(wait=False, cancel_futures=True)
        if bar is not None:
            bar.close()
    return store.open_finished()
