"""The time budget of a tuning run, split into phases, with a progress bar of the seconds
spent.

Each phase gets a share of the time still left (a phase that finishes early leaves its time to
the next ones); each measurement in a phase gets a slice of the phase's remaining time; a
measurement whose estimated cost exceeds what the phase has left is skipped and reported."""

from __future__ import annotations

import time


class Budget:
    """``seconds`` of wall time for the whole search; :meth:`phase` starts the next phase."""

    def __init__(self, seconds: float, shares: dict[str, float], progress: bool = True,
                 clock=time.perf_counter) -> None:
        self.clock = clock  # (a test passes a fake one)
        self.seconds, self.start = float(seconds), clock()
        self.shares = dict(shares)  # phases still to run, with their weights
        self.phase_name, self.phase_end = "", self.start
        self.skipped: list[str] = []
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=round(self.seconds, 1), unit="s", desc="tune",
                            bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.1f}/{total} s "
                                       "of the budget")

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        """Seconds left of the whole budget."""
        return max(0.0, self.seconds - self.elapsed())

    def phase(self, name: str) -> None:
        """Start phase ``name``: its share of the time left."""
        total = sum(self.shares.values())
        share = self.shares.pop(name, 0.0)
        self.phase_name = name
        self.phase_end = self.clock() + self.left() * (share / total if total else 0)
        self.tick()

    def phase_left(self) -> float:
        return max(0.0, min(self.phase_end - self.clock(), self.left()))

    def slice(self, measurements_left: int, lo: float = 0.02, hi: float = 2.0) -> float:
        """The ``min_run_time`` of the next measurement: an equal part of the phase's time."""
        return min(hi, max(lo, self.phase_left() / max(1, measurements_left) / 2))

    def affords(self, estimate: float, what: str) -> bool:
        """Whether a measurement estimated to take ``estimate`` seconds fits the phase; if not,
        it is recorded as skipped."""
        if estimate <= self.phase_left():
            return True
        self.skipped.append(f"{self.phase_name}: {what} (about {estimate:.2f} s, "
                            f"{self.phase_left():.2f} s left)")
        return False

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.set_description(f"tune {self.phase_name}")
            self.bar.n = round(min(self.elapsed(), self.seconds), 1)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.tick()
            self.bar.close()
