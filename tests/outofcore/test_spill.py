"""The spilling slab (unit sums under a byte cap, the rest in a scratch file): the slab's
results bit for bit at every cap, the cap held after every batch, done units never handed
over, and runs whose memory bound no slab fits equal to the in-memory result."""

import numpy as np
import pytest
import torch

import fastquilt as fq
from fastquilt.outofcore import budget, local
from fastquilt.outofcore import run as run_module
from fastquilt.outofcore.job import Layout
from fastquilt.outofcore.slab import Slab
from fastquilt.outofcore.spill import SpillingSlab
from fastquilt.reductions import Reduction

from ..conftest import requires_cuda

zarr = pytest.importorskip("zarr")

LAYOUTS = {  # (shape, window, step, unit)
    "3d": ((2, 1, 40, 24, 32), 8, 6, 8),
    "3d_units_unlike_windows": ((1, 1, 21, 19, 23), (7, 9, 5), (5, 4, 4), (4, 8, 6)),
    "2d": ((1, 1, 30, 26), (7, 5), (4, 3), (4, 6)),
}


def _run(slab, todo, preds, batch):
    got = {}
    for i in range(0, len(todo), batch):
        for uid, outputs in slab.add(todo[i:i + batch], preds[i:i + batch]):
            assert uid not in got, "a unit handed over twice"
            got[uid] = outputs
        if isinstance(slab, SpillingSlab):
            assert slab.held_bytes <= slab.cap
    for uid, outputs in slab.flush_image():
        assert uid not in got, "a unit handed over twice"
        got[uid] = outputs
    return got


@pytest.mark.parametrize("batch", [1, 5, 16])
@pytest.mark.parametrize("outputs", [("mean",), ("mean", "std")])
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_the_spilling_slab_gives_the_slabs_bits_at_every_cap(name, outputs, batch):
    shape, window, step, unit = LAYOUTS[name]
    layout = Layout(shape, window, step, "gaussian", None, 0.1, chunks=unit, unit=unit,
                    shards=None)
    todo = list(range(layout.origins.shape[0]))
    reduction = Reduction(outputs, 3)
    g = torch.Generator().manual_seed(batch)
    preds = torch.rand(len(todo), reduction.state_channels, *layout.window, generator=g)
    want = _run(Slab(layout, reduction, set(), todo=todo), todo, preds, batch)
    unit_bytes = (reduction.state_channels + 1) * int(np.prod(layout.units.unit)) * 4
    for cap in (0, unit_bytes, 5 * unit_bytes, 2**40):
        slab = SpillingSlab(layout, reduction, set(), todo=todo, cap_bytes=cap)
        got = _run(slab, todo, preds, batch)
        assert set(got) == set(want) == set(range(layout.units.total()))
        for uid, outputs_ in want.items():
            for out_name, t in outputs_.items():
                assert torch.equal(got[uid][out_name], t), (cap, uid, out_name)
        if cap == 0:  # every unit left waiting after a batch went to the scratch file
            assert slab.spilled_bytes > 0
        # the memory plan's row region bounds the ones met (and is one of them for one
        # window a batch; with more, a batch may not start where its row does)
        bound = budget._region_voxels(layout.spatial, layout.window, layout.q.step,
                                      layout.unit, batch)
        assert bound == slab.largest_region if batch == 1 else bound >= slab.largest_region
        if cap == 2**40:
            assert slab.spilled_bytes == 0


@requires_cuda
@pytest.mark.parametrize("outputs", [("mean",), ("labels", "std")])
def test_the_spilling_slab_on_a_gpu_equals_the_cpu_slab(outputs):
    # the pool and the region on the device, the scratch file through host staging; the
    # CUDA scatter-add may sum a voxel's windows in another order: equal to rounding
    shape, window, step, unit = LAYOUTS["3d_units_unlike_windows"]
    layout = Layout(shape, window, step, "gaussian", None, 0.1, chunks=unit, unit=unit,
                    shards=None)
    todo = list(range(layout.origins.shape[0]))
    reduction = Reduction(outputs, 4)
    preds = torch.rand(len(todo), reduction.state_channels, *layout.window,
                       generator=torch.Generator().manual_seed(3))
    want = _run(Slab(layout, reduction, set(), todo=todo), todo, preds, 5)
    unit_bytes = (reduction.state_channels + 1) * int(np.prod(layout.units.unit)) * 4
    for cap in (0, 3 * unit_bytes):
        slab = SpillingSlab(layout, reduction, set(), device="cuda", todo=todo, cap_bytes=cap)
        got = _run(slab, todo, preds.cuda(), 5)
        assert set(got) == set(want)
        for uid, outs in want.items():
            for name, t in outs.items():
                g = got[uid][name].cpu()
                if name == "labels":  # (ties aside, the same classes)
                    assert (g == t).float().mean() > 0.99
                else:
                    torch.testing.assert_close(g, t, rtol=1e-5, atol=1e-6)
        assert cap or slab.spilled_bytes > 0


def test_done_units_are_summed_but_never_handed_over():
    shape, window, step, unit = LAYOUTS["3d"]
    layout = Layout(shape, window, step, "flat", None, 0.1, chunks=unit, unit=unit, shards=None)
    done = set(range(0, layout.units.total(), 3))
    todo, _ = layout.plan(done)
    reduction = Reduction(("mean",), 2)
    preds = torch.rand(len(todo), 2, *layout.window, generator=torch.Generator().manual_seed(1))
    want = _run(Slab(layout, reduction, done, todo=todo), todo, preds, 4)
    got = _run(SpillingSlab(layout, reduction, done, todo=todo, cap_bytes=0), todo, preds, 4)
    assert set(got) == set(want) and not set(got) & done
    for uid in want:
        assert torch.equal(got[uid]["mean"], want[uid]["mean"])


def test_a_resume_with_gaps_in_a_row_keeps_the_region_to_the_plan():
    # units 2..29 done: the row's windows left are at both ends; one region over both would
    # span the whole row (10x the plan's estimate)
    layout = Layout((1, 1, 8, 256), (8, 8), (8, 4), "gaussian", None, 0.1, chunks=8, unit=8,
                    shards=None)
    done = set(range(2, 30))
    todo, _ = layout.plan(done)
    reduction = Reduction(("mean",), 1)
    preds = torch.rand(len(todo), 1, 8, 8, generator=torch.Generator().manual_seed(0))
    slab = SpillingSlab(layout, reduction, done, todo=todo, cap_bytes=0)
    got = _run(slab, todo, preds, 3)
    want = _run(Slab(layout, reduction, done, todo=todo), todo, preds, 3)
    assert set(got) == set(want)
    for uid in want:
        assert torch.equal(got[uid]["mean"], want[uid]["mean"])
    assert slab.largest_region <= budget._region_voxels(layout.spatial, layout.window,
                                                        layout.q.step, layout.unit, 3)


def test_windows_out_of_order_are_refused():
    shape, window, step, unit = LAYOUTS["2d"]
    layout = Layout(shape, window, step, "flat", None, 0.1, chunks=unit, unit=unit, shards=None)
    todo = list(range(layout.origins.shape[0]))
    slab = SpillingSlab(layout, Reduction(("mean",), 1), set(), todo=todo, cap_bytes=0)
    with pytest.raises(RuntimeError, match="not the next ones"):
        slab.add(todo[1:2], torch.zeros(1, 1, *layout.window))


def _record_spilling_slabs(monkeypatch) -> list:
    """The spilling slabs the runs in this process make, as they are made."""
    made = []

    class Recorded(SpillingSlab):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(local, "SpillingSlab", Recorded)
    return made


@pytest.fixture
def spills(monkeypatch):
    """Every run in this process spills (cap 0, model and accumulator in step); the slabs
    made are recorded."""
    plan = run_module.plan_run
    monkeypatch.setattr(run_module, "plan_run", lambda *a, **k: plan(*a, **k)._replace(
        spill_cap=0, queue_depth=0))
    return _record_spilling_slabs(monkeypatch)


@pytest.mark.parametrize("shape,window,step,unit", [
    ((1, 1, 6, 7), (2, 6), (5, 6), (1, 2)),  # a unit plane no window touches
    ((1, 1, 10, 4), (2, 4), (7, 4), (3, 4)),
    ((2, 1, 23, 9, 5), (3, 9, 5), (9, 1, 1), (2, 3, 5)),
])
def test_gaps_spilled_equal_in_memory(shape, window, step, unit, tmp_path, spills):
    x = torch.randn(shape)
    want = fq.sliding_window(lambda p: p * 2, x, window, step, 3, "flat", allow_gaps=True,
                             fill_value=-7.0)
    y = fq.sliding_window(lambda p: p * 2, x.numpy(), window, step, 1, "flat",
                          allow_gaps=True, fill_value=-7.0, out=tmp_path / "o.zarr",
                          chunks=unit, unit=unit)  # (one window a batch: units wait, spilled)
    np.testing.assert_allclose(y[...], want.numpy(), rtol=1e-6, atol=1e-6)
    assert len(spills) == 1 and spills[0].spilled_bytes > 0


def test_a_bound_no_slab_fits_spills_and_equals_in_memory(tmp_path, monkeypatch):
    # 8 classes, labels and std (two state values per class): the smallest slab does not fit
    # the bound, the spilling slab does; every output equals the in-memory one
    x = np.random.default_rng(0).standard_normal((1, 1, 48, 40, 40)).astype(np.float32)
    models = [torch.nn.Conv3d(1, 8, 3, padding=1).eval() for _ in range(2)]
    kw = dict(outputs=("labels", "std"), activation="softmax", batch_size=2)
    sizes = dict(spatial=(48, 40, 40), window=(12, 12, 12), step=(9, 9, 9), chunk=(8, 8, 8),
                 unit=(16, 16, 16), unit_given=False, c_in=1, in_itemsize=4, in_depth=12,
                 state_channels=16, out_bytes=1 + 8 * 4, c_out=8, batch_size=2, temporaries=4)
    est = {k: v for k, v in sizes.items() if k not in ("chunk", "unit_given")}
    smallest_slab = sum(budget.estimate(**{**est, "unit": (8, 16, 16)}, queue_depth=1,
                                        max_pending=1).values())
    bound = int(smallest_slab / budget.HEADROOM) - 1
    plan = budget.plan_memory(bound, **sizes)
    assert plan.spill_cap is not None and plan.unit == (8, 8, 8) and plan.total <= bound
    made = _record_spilling_slabs(monkeypatch)
    g = fq.sliding_window(models, x, 12, 9, out=tmp_path / "o.zarr", chunks=8,
                          max_memory=bound, **kw)
    want = fq.sliding_window(models, torch.from_numpy(x), 12, 9, **kw)
    np.testing.assert_array_equal(g["labels"][...], want["labels"].numpy())
    np.testing.assert_allclose(g["std"][...], want["std"].numpy(), rtol=1e-5, atol=1e-6)
    assert len(made) == 1 and dict(g.attrs)["fastquilt"]["unit"] == [8, 8, 8]
    # a resume under another bound keeps the output's units (a roomy bound alone would
    # choose deeper ones, and the output's geometry would not match)
    assert budget.plan_memory(2**30, **sizes).unit != (8, 8, 8)
    g = fq.sliding_window(models, x, 12, 9, out=tmp_path / "o.zarr", chunks=8,
                          max_memory="1G", **kw)
    np.testing.assert_array_equal(g["labels"][...], want["labels"].numpy())
    g = fq.sliding_window(models, x, 12, 9, out=tmp_path / "o.zarr", **kw)  # no bound at all
    np.testing.assert_array_equal(g["labels"][...], want["labels"].numpy())


def test_a_full_disk_while_spilling_says_where_and_the_run_resumes(tmp_path, monkeypatch,
                                                                  spills):
    import errno

    from fastquilt.outofcore import spill as spill_module

    x = np.random.default_rng(0).standard_normal((1, 1, 24, 20, 20)).astype(np.float32)
    real = spill_module._write_exactly
    calls = []

    def full(*a):
        calls.append(1)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(*a)

    monkeypatch.setattr(spill_module, "_write_exactly", full)
    out = tmp_path / "o.zarr"
    kw = dict(out=out, chunks=4, unit=4, batch_size=2, weight="flat")
    with pytest.raises(RuntimeError, match="spilling partial sums .* No space left .* re-run"):
        fq.sliding_window(lambda p: p * 2, x, 8, 6, **kw)
    monkeypatch.setattr(spill_module, "_write_exactly", real)
    y = fq.sliding_window(lambda p: p * 2, x, 8, 6, **kw)
    want = fq.sliding_window(lambda p: p * 2, torch.from_numpy(x), 8, 6, weight="flat")
    np.testing.assert_allclose(y[...], want.numpy(), rtol=1e-6, atol=1e-6)
