"""The CPU benchmarks' timer."""

import time


def best_of(fn, reps: int = 5) -> float:
    """Fastest of `reps` calls of fn, in seconds, after one warm-up call (page faults of fresh
    buffers, JIT)."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
