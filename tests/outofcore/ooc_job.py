"""Subprocess for the kill/resume test: a slow deterministic model writing to zarr."""

import os
import sys
import time

import torch
import zarr

import fastquilt as fq


def model(p):
    time.sleep(0.1)  # slow enough to be killed mid-run
    return p * 2.0 + 1.0


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    fq.sliding_window(model, zarr.open_array(src, mode="r"), 16, 12, batch_size=4,
                      weight="gaussian", out=dst, chunks=16, unit=16)


class _FirstCallAnywhere(torch.nn.Module):
    """A model that knows its first call across all worker processes (a flag file)."""

    def __init__(self, flag: str) -> None:
        super().__init__()
        self.flag = flag

    def first_call(self) -> bool:
        if os.path.exists(self.flag):
            return False
        with open(self.flag, "w") as f:
            f.write("called")
        return True


class KillOnce(_FirstCallAnywhere):
    """Kills the worker process running it the first time."""

    def forward(self, p):
        if self.first_call():
            os._exit(1)
        return p * 2.0 + 1.0


def counted_factory(log: str):
    """A model factory that records each build (to prove one build per worker)."""
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    return lambda p: p * 2.0 + 1.0


def double_plus_one():
    """A model factory with no arguments, for the command line's module:function form."""
    return lambda p: p * 2.0 + 1.0


class FailOnWindowsFrom(_FirstCallAnywhere):
    """Identity on the first call (the probe); after it, raises for batches of positive sum
    and sleeps on the others, so that some tasks still run when the error comes back."""

    def forward(self, p):
        if self.first_call():
            return p
        if float(p.sum()) > 0:
            raise RuntimeError("model failed on this batch")
        time.sleep(0.5)
        return p
