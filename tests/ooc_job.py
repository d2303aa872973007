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


class KillOnce(torch.nn.Module):
    """Kills the worker process running it the first time (a flag file makes it once)."""

    def __init__(self, flag: str) -> None:
        super().__init__()
        self.flag = flag

    def forward(self, p):
        if not os.path.exists(self.flag):
            with open(self.flag, "w") as f:
                f.write("killed")
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


class FailOnWindowsFrom(torch.nn.Module):
    """Identity, but raises for batches after the first (the probe), once a flag file exists;
    the others sleep, so that some tasks are still running when the error comes back."""

    def __init__(self, flag: str) -> None:
        super().__init__()
        self.flag = flag

    def forward(self, p):
        if not os.path.exists(self.flag):
            with open(self.flag, "w") as f:
                f.write("probed")
            return p
        if float(p.sum()) > 0:
            raise RuntimeError("model failed on this batch")
        time.sleep(0.5)
        return p
