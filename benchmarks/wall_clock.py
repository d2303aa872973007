"""The benchmarks' timers: ``torch.utils.benchmark`` (warm-up, block sizes that amortise the
timer, CUDA synchronisation, the current thread count) in place of a hand-written loop, and
the median of calls timed one by one where a call's spread matters (a training batch on a
shared machine), and the seconds spent inside chosen functions of a run (its stages)."""

import collections
import statistics
import threading
import time

import torch
from torch.utils import benchmark


def best_of(fn, reps: int = 5) -> float:
    """Seconds per call of ``fn``: the fastest block's mean of a
    ``torch.utils.benchmark.Timer.blocked_autorange`` run long enough for about ``reps``
    calls after its warm-up (a first call, timed, sets that length). Blocks of one call for
    anything slower than ~10 ms, so fresh-output contenders still pay their page faults on
    every timed call."""
    t0 = time.perf_counter()
    fn()  # warm-up: page faults of fresh buffers, JIT
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    first = time.perf_counter() - t0
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn},
                            num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=max(reps * first, 0.05))
    return min(m.times)


def median_of(fn, reps: int = 5) -> float:
    """Seconds per call of ``fn``: the median of ``reps`` calls timed one by one, after one
    untimed call (page faults of fresh buffers, JIT). (The caller synchronises a device.)"""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class StageSeconds:
    """Seconds spent inside functions, summed by name over every thread that calls them:
    ``f = stages.timed("name", f)``, then ``stages.seconds``."""

    def __init__(self) -> None:
        self.seconds: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def timed(self, name: str, fn):
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds[name] += time.perf_counter() - t0
        return call
