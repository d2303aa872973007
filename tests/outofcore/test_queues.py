"""The prediction queue between the model and the accumulator: the memory plan makes it deep
where the slab fits (up to ``PREDICTION_QUEUE_BYTES`` of predictions), so the model runs on
while the accumulator finishes a plane of units; the plan counts it, and a tight bound or the
model and accumulator in step keep it short."""

import threading

import numpy as np
import pytest

import fastquilt as fq
from fastquilt.outofcore import budget, local

SIZES = dict(spatial=(256, 256, 256), window=(64, 64, 64), chunk=(64, 64, 64),
             unit=(128, 128, 128), unit_given=False, c_in=1, in_itemsize=4, in_depth=64,
             state_channels=1, out_bytes=4, c_out=1, temporaries=2)


@pytest.mark.parametrize("batch,depth", [(8, 16), (4, 16), (64, 2), (256, 2)])
def test_the_prediction_queue_holds_up_to_its_bytes(batch, depth):
    plan = budget.plan_memory(2**40, batch_size=batch, **SIZES)
    assert plan.prediction_depth == depth and plan.queue_depth == 2
    pred = batch * 64**3 * 4
    assert depth == 2 or depth * pred <= budget.PREDICTION_QUEUE_BYTES
    est = {k: v for k, v in SIZES.items() if k not in ("chunk", "unit_given", "unit")}
    shallow = budget.estimate(**est, unit=plan.unit, batch_size=batch, queue_depth=2,
                              max_pending=plan.max_pending)
    assert plan.total - sum(shallow.values()) == (depth - 2) * pred  # counted in the plan


@pytest.mark.parametrize("size", [256, 512])
def test_a_bound_the_deep_queue_does_not_fit_keeps_it_short(size):
    # the deep queue gives way first: the unit depth, the queue depth and a plane of units
    # waiting to be written stay as they were without it
    sizes = {**SIZES, "spatial": (size,) * 3}
    est = {k: v for k, v in sizes.items() if k not in ("chunk", "unit_given", "unit")}
    deep = budget.plan_memory(2**40, batch_size=8, **sizes)
    shallow = sum(budget.estimate(**est, unit=deep.unit, batch_size=8, queue_depth=2,
                                  max_pending=deep.max_pending).values())
    plan = budget.plan_memory(int(shallow / budget.HEADROOM) + 1, batch_size=8, **sizes)
    assert plan.unit == deep.unit and plan.queue_depth == 2 and plan.prediction_depth == 2
    assert plan.max_pending == deep.max_pending > 1


def test_the_model_runs_ahead_while_the_accumulator_is_busy(tmp_path, monkeypatch):
    # The accumulator's first batch is held until the model has run 10 batches (or 20 s):
    # with a queue of 2 the model would wait after its fourth
    calls, ahead, held = [0], threading.Event(), []

    class Busy(local.Slab):
        def add(self, ks, pred):
            if not held:
                held.append(ahead.wait(timeout=20))
            return super().add(ks, pred)

    monkeypatch.setattr(local, "Slab", Busy)

    def model(p):
        calls[0] += 1
        if calls[0] >= 10:
            ahead.set()
        return p * 2

    x = np.random.default_rng(0).standard_normal((1, 1, 24, 24, 24)).astype(np.float32)
    y = fq.sliding_window(model, x, 8, 4, 1, "flat", out=tmp_path / "o.zarr")
    assert held == [True], "the model waited for the accumulator"
    np.testing.assert_allclose(y[...], 2 * x, rtol=1e-6)


def test_in_step_the_prediction_queue_holds_one_batch():
    class Q:
        def __init__(self):
            self.batches = type("B", (), {"maxsize": 0})()
            self.read_ahead = True

    plan = budget.MemoryPlan((8, 8, 8), 0, 1, {}, 0, prediction_depth=16)
    acc, batcher = Q(), Q()
    acc.max_pending = 4
    local._apply(plan, acc, batcher)
    assert acc.batches.maxsize == 1 and acc.in_step and batcher.read_ahead is False
