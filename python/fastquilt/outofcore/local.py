"""The out-of-core run in one process, as a pipeline whose stages overlap: input blocks read
ahead on reader threads; batches of windows cut and stacked by a batcher thread; the model on
the main thread; the weighted predictions summed into the RAM slab on the model's device by an
accumulator thread; finished units normalised there, copied back and written by writer
threads. Memory stays bounded: one input block read ahead, at most the memory plan's queue
depths of batches of windows and of predictions waiting (:mod:`.budget`; ``QUEUE_DEPTH``
without a plan), at most one plane of finished units waiting to be written,
and the slab (about one plane of units) — or, where the memory plan says so (:mod:`.budget`),
the spilling slab (units up to a byte cap, the rest on disk: :mod:`.spill`), with the model
and the accumulator in step (no prediction waits in a queue)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Container, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from .. import buffers
from ..ensemble import Predictor
from ..reductions import Reduction
from .budget import MemoryPlan, release_free_memory
from .job import Job
from .reading import windows_by_row
from .slab import Slab
from .spill import SpillingSlab
from .unit_sums import Piece, UnitSums

QUEUE_DEPTH = 2  # batches of predictions between the model and the accumulator
_DONE = object()  # the last batch was sent: hand over every unit left
_ABORT = object()  # the run stops early: units not complete are dropped, never written


class _Accumulator(threading.Thread):
    """Adds batches of predictions to the slab in order and hands finished units to the
    writers; an error is kept for the main thread to raise."""

    def __init__(self, job: Job, done: Container[int], todo: list[int],
                 writer: ThreadPoolExecutor,
                 raw: Mapping[int, tuple[int, int]] | None = None) -> None:
        super().__init__(name="fastquilt-accumulator", daemon=True)
        self.job, self.done, self.todo, self.writer = job, done, todo, writer
        self.raw = raw  # units handed over unfinished (Slab), kept in pieces
        self.pieces: dict[int, Piece] = {}
        self.reduction: Reduction | None = None  # set by the main thread before a batch
        self.batches: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        self.writes: list[Future] = []
        self.max_pending = int(np.prod(job.layout.units.counts[1:]))  # one plane of units
        self.slab: Slab | SpillingSlab | None = None
        self.spill_cap: int | None = None  # set by the main thread: the spilling slab's cap
        self.in_step = False  # set by the main thread: put returns once the batch is added
        self.sent, self.added = 0, 0  # batches put, and added
        self.progress = threading.Condition()
        self.error: BaseException | None = None

    def run(self) -> None:
        ended = aborted = False  # the main thread has sent _DONE or _ABORT
        try:
            while True:
                item = self.batches.get()
                if item is _DONE or item is _ABORT:
                    ended, aborted = True, item is _ABORT
                    break
                ks, pred = item
                if self.slab is None:
                    self.slab = self._new_slab(pred.device)
                units = self.slab.add(ks, pred)
                del item, pred  # (in step, the model's next batch needs this memory)
                if isinstance(self.slab, SpillingSlab):  # a tight bound: free pages go back
                    release_free_memory()
                with self.progress:
                    self.added += 1
                    self.progress.notify_all()
                self._submit(units)
            if self.slab is not None and not aborted:
                self._submit(self.slab.flush_image())
            for f in self.writes:  # (units already handed over are complete: kept)
                f.result()
        except BaseException as e:  # raised again by the main thread
            with self.progress:
                self.error = e
                self.progress.notify_all()
            while not ended:  # take what the main thread still sends, until it stops
                item = self.batches.get()
                ended = item is _DONE or item is _ABORT
        finally:
            if isinstance(self.slab, SpillingSlab):
                self.slab.close()

    def _new_slab(self, device: torch.device) -> Slab | SpillingSlab:
        layout = self.job.layout
        if self.spill_cap is None:
            return Slab(layout, self.reduction, self.done, device=device, todo=self.todo,
                        raw=self.raw)
        cap = self.spill_cap
        if device.type == "cuda":  # (the cap comes from the host's bound: the pool is on the GPU)
            cap = min(cap, torch.cuda.mem_get_info(device)[0] // 2)
        return SpillingSlab(layout, self.reduction, self.done, device=device, todo=self.todo,
                            cap_bytes=cap, spill_dir=self.job.store.path.parent,
                            keep_region=not self.in_step, raw=self.raw)

    def _submit(self, units) -> None:
        for uid, outputs in units:
            if isinstance(outputs, Piece):
                self.pieces[uid] = outputs
                continue
            while len(self.writes) >= self.max_pending:  # back-pressure
                self.writes.pop(0).result()
            self.writes.append(self.writer.submit(
                self.job.store.write_unit, uid, {n: t.cpu() for n, t in outputs.items()}))
        for f in [f for f in self.writes if f.done()]:
            f.result()  # a failed write raises now
        self.writes = [f for f in self.writes if not f.done()]

    def put(self, item) -> None:
        """Queue a batch; in step, wait until it is added."""
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.batches.put(item, timeout=0.1)
                self.sent += 1
                break
            except queue.Full:
                continue
        if self.in_step:
            with self.progress:
                self.progress.wait_for(lambda: self.added >= self.sent or self.error is not None)
            if self.error is not None:
                raise self.error

    def finish(self) -> None:
        self.batches.put(_DONE)
        self.join()
        if self.error is not None:
            raise self.error


class _Batcher(threading.Thread):
    """Copies the windows to run into batches ``(ks, (B, C, *window))`` ahead of the model
    (in buffers reused once dropped: fresh memory costs a page fault per 4 KiB); an error is
    kept for the main thread to raise."""

    def __init__(self, job: Job, todo: list[int], batch_size: int,
                 reader: ThreadPoolExecutor) -> None:
        super().__init__(name="fastquilt-batcher", daemon=True)
        self.read_ahead = True  # the next input block (the main thread may stop it)
        self.windows = windows_by_row(job.x, job.layout, todo, reader,
                                      lambda: self.read_ahead)
        self.window = job.layout.window
        self.batch_size = batch_size
        self.batches: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            batch, windows = [], None
            for k, pieces in self.windows:
                if windows is None:  # a reused buffer once the model's side dropped it
                    first = pieces[0][1]
                    windows = buffers.empty((self.batch_size, first.shape[0], *self.window),
                                            first.dtype, first.device)
                for a, piece in pieces:  # the window's planes, from the blocks it spans
                    windows[len(batch), :, a:a + piece.shape[1]].copy_(piece)
                batch.append(k)
                if len(batch) == self.batch_size:
                    self._put((batch, windows))
                    batch, windows = [], None
                if self.stop.is_set():
                    return
            if batch:
                self._put((batch, windows[:len(batch)]))
        except BaseException as e:  # raised again by the main thread
            self.error = e
        finally:
            self._put(_DONE)

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.batches.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        while (item := self.batches.get()) is not _DONE:
            yield item
        if self.error is not None:
            raise self.error


def _apply(plan: MemoryPlan, acc: _Accumulator, batcher: _Batcher) -> None:
    """Set the queue depths, the slab's kind and the units waiting of ``plan``."""
    batcher.batches.maxsize = max(plan.queue_depth, 1)
    acc.batches.maxsize = plan.prediction_queue
    # in step (a tight bound): no input block read ahead, no row region kept
    acc.in_step = plan.queue_depth == 0
    batcher.read_ahead = not acc.in_step
    acc.spill_cap = plan.spill_cap
    acc.max_pending = min(acc.max_pending, plan.max_pending)


def write_untouched(job: Job, done: set[int], outputs: tuple[str, ...],
                     fill_value: float) -> None:
    """The units not in ``done`` at the fill value: with no window left to run (or every
    window run), the units no window touches (``allow_gaps``) that are not marked yet (a
    killed run's, or those of images no window of this run reached)."""
    store, units = job.store, job.layout.units
    if store.arr is None or len(done) == units.total():
        return
    reduction = Reduction(outputs, dict(store.arr.attrs)["fastquilt"]["out_channels"],
                          fill_value)
    nothing = UnitSums(units, reduction.state_channels, reduction)  # (gives the fill value)
    for uid in sorted(set(range(units.total())) - done):
        store.write_unit(uid, nothing.pop_outputs(uid))


def run_local(job: Job, predictor: Predictor, outputs: tuple[str, ...], batch_size: int,
              device: torch.device, fill_value: float, progress: bool, *,
              reader_threads: int = 2, writer_threads: int = 2,
              memory: MemoryPlan | Callable[[int], MemoryPlan] | None = None):
    """Run every window of ``job`` that touches an unfinished unit through ``predictor``,
    reading input blocks on ``reader_threads`` and writing the finished units' ``outputs`` on
    ``writer_threads``; returns the output. ``memory`` is the
    :class:`~.budget.MemoryPlan` (queue depths, the slab's kind, units waiting), or a function
    of the models' channel count, called once the first batch has run, that gives it or
    raises when the run cannot fit."""
    layout, store = job.layout, job.store
    done = store.verified_done()
    todo, _ = layout.plan(done)
    if not todo:
        write_untouched(job, done, outputs, fill_value)
        return store.open_finished()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="win", desc="sliding_window -> zarr")
    try:
        run_windows(job, predictor, todo, done, outputs, batch_size, device, fill_value,
                    reader_threads=reader_threads, writer_threads=writer_threads,
                    memory=memory, bar=bar)
    finally:
        if bar is not None:
            bar.close()
    if layout.q.grid.allow_gaps:  # (the slab hands over only the images it sees)
        write_untouched(job, store.progress.done(), outputs, fill_value)
    return store.open_finished()


def run_windows(job: Job, predictor: Predictor, todo: list[int], done: Container[int],
                outputs: tuple[str, ...], batch_size: int, device: torch.device,
                fill_value: float, *, reader_threads: int = 2, writer_threads: int = 2,
                memory: MemoryPlan | Callable[[int], MemoryPlan] | None = None,
                raw: Mapping[int, tuple[int, int]] | None = None,
                stop: Callable[[], bool] | None = None, bar=None) -> dict[int, Piece]:
    """The pipeline over the windows ``todo`` (raster order): every unit they touch that is
    not in ``done`` is written once its last window is added, except the units of ``raw``,
    whose unfinished sums (the part between the planes ``raw[uid]``) are returned as
    :class:`~.unit_sums.Piece` s, ``{uid: piece}``; ``bar`` (tqdm) counts the windows.
    ``stop()``, asked after each batch, ends the run early with a ``RuntimeError`` (the
    units not complete are not written)."""
    layout, store = job.layout, job.store
    writer = ThreadPoolExecutor(max_workers=writer_threads, thread_name_prefix="fastquilt-writer")
    reader = ThreadPoolExecutor(max_workers=reader_threads, thread_name_prefix="fastquilt-reader")
    acc = _Accumulator(job, done, todo, writer, raw)
    batcher = _Batcher(job, todo, batch_size, reader)
    if isinstance(memory, MemoryPlan):
        _apply(memory, acc, batcher)
        memory = None
    acc.start()
    batcher.start()
    finished = False
    try:
        for batch, windows in batcher:
            pred = predictor(windows, layout.window, device)
            if acc.reduction is None:
                if memory is not None:
                    _apply(memory(predictor.channels), acc, batcher)
                store.ensure(predictor.channels)
                acc.reduction = Reduction(outputs, predictor.channels, fill_value)
            acc.put((batch, pred))
            del pred, windows  # (the accumulator holds them as long as it needs them)
            if bar is not None:
                bar.update(len(batch))
            if stop is not None and stop():
                raise RuntimeError("the run was stopped (its call failed or was interrupted); "
                                   "the units not complete are not written")
        acc.finish()
        finished = True
    finally:
        batcher.stop.set()
        if not finished and acc.is_alive():
            # (not _DONE: that hands over every unit left, complete or not, and marks it done)
            acc.batches.put(_ABORT)
            acc.join()
        writer.shutdown(wait=True)
        reader.shutdown(wait=False, cancel_futures=True)
    return acc.pieces
