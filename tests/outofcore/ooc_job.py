"""Subprocess for the kill/resume tests: a slow deterministic model writing to zarr
(``python ooc_job.py SRC DST [SCALE]``; ``FQ_TEST_SLOW_WRITE=FLAG``: after a unit's chunks are
written, create FLAG and wait before marking it done, to be killed there;
``FQ_TEST_SLOW_LEVELS=FLAG``: the same between a unit's level 0 and its pyramid levels; a DST
named ``*.ome.zarr`` gets 2 pyramid levels; ``FQ_TEST_ENSEMBLE=1``: two members, flips,
softmax and four outputs). And models for the
cluster tests."""

import os
import sys
import time

import torch
import zarr

import fastquilt as fq


class Slow(torch.nn.Module):
    """p * scale + 1, slow enough to be killed mid-run."""

    delay = 0.1  # seconds per call

    def __init__(self, scale: float = 2.0) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(float(scale)), requires_grad=False)

    def forward(self, p):
        time.sleep(self.delay)
        return p * self.scale + 1.0


def export_model(net: torch.nn.Module, path, example_shape=(2, 1, 8, 8, 8)) -> None:
    """Save ``net`` as a torch.export ``.pt2`` with a dynamic batch dimension (the format
    fastquilt's docs recommend)."""
    x = torch.randn(example_shape)
    torch.export.save(torch.export.export(net.eval(), (x,),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)),
                      str(path))


def conv_1_to_2():
    """A Conv3d(1, 2, 3) with fixed weights (a factory for ``--weights``)."""
    return torch.nn.Conv3d(1, 2, 3, padding=1)


def _slow_writes(flag: str) -> None:
    from fastquilt.outofcore.store import Progress

    real_mark = Progress.mark

    def mark(self, uid):
        with open(flag, "w") as f:
            f.write(str(uid))
        time.sleep(60)
        real_mark(self, uid)

    Progress.mark = mark


def _slow_levels(flag: str) -> None:
    """After a unit's level 0 is written, create FLAG and wait before its pyramid levels."""
    from fastquilt.formats.ome_writer import OmeWriter

    real = OmeWriter.write_levels

    def write_levels(self, *args):
        with open(flag, "w") as f:
            f.write("levels")
        time.sleep(60)
        real(self, *args)

    OmeWriter.write_levels = write_levels


class SlowClasses(Slow):
    """Two class scores, p * scale + 1 and 1 - p * scale, slowly (an ensemble of two with
    flips calls each 8 times per batch)."""

    delay = 0.015

    def forward(self, p):
        y = super().forward(p)
        return torch.cat([y, 2.0 - y], 1)


# FQ_TEST_ENSEMBLE=1: two members, flips, softmax and several outputs into a group
ENSEMBLE = dict(outputs=("mean", "std", "labels", "entropy"), tta="flips", activation="softmax")


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    scale = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    if os.environ.get("FQ_TEST_SLOW_WRITE"):
        _slow_writes(os.environ["FQ_TEST_SLOW_WRITE"])
    if os.environ.get("FQ_TEST_SLOW_LEVELS"):
        _slow_levels(os.environ["FQ_TEST_SLOW_LEVELS"])
    if os.environ.get("FQ_TEST_SPILL") == "1":  # the spilling slab, nothing held in memory
        from fastquilt.outofcore import run

        plan = run.plan_run
        run.plan_run = lambda *a, **k: plan(*a, **k)._replace(spill_cap=0, queue_depth=0)
    ome = {"levels": 2} if dst.endswith(".ome.zarr") else {}  # (an OME-Zarr output: a pyramid)
    ensemble = os.environ.get("FQ_TEST_ENSEMBLE") == "1"
    model = [SlowClasses(scale), SlowClasses(scale + 1)] if ensemble else Slow(scale)
    fq.sliding_window(model, zarr.open_array(src, mode="r"), 16, 12, batch_size=4,
                      weight="gaussian", out=dst, chunks=16, unit=16,
                      **(ENSEMBLE if ensemble else {}), **ome)


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
    """Kills the worker process running it at its ``after``-th call (counted across
    processes in the flag file)."""

    def __init__(self, flag: str, after: int = 1) -> None:
        super().__init__(flag)
        self.after = after

    def forward(self, p):
        calls = int(open(self.flag).read() or 0) if os.path.exists(self.flag) else 0
        if calls < self.after:
            with open(self.flag, "w") as f:
                f.write(str(calls + 1))
            if calls + 1 == self.after:
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


def two_classes(scale: float = 1.0):
    """A model factory for the CLI tests: two class scores."""
    return lambda p: torch.cat([p * scale, 1.0 - p], 1)


def two_classes_b():
    return two_classes(2.0)


def ramp(p):
    """A model whose overlapping windows disagree: a ramp along every axis of the window (the
    mean then depends on every piece's weights)."""
    r = sum(torch.linspace(0.0, 1.0, w).view([-1 if a == d else 1 for a in range(p.dim() - 2)])
            for d, w in enumerate(p.shape[2:]))
    return p * 2.0 + 1.0 + r


def ramp_model():
    """A model factory: :func:`ramp`."""
    return ramp
