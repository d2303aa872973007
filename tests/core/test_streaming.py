"""Streaming accumulator and sliding-window inference."""

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastquilt as fq

from ..conftest import requires_cuda
from ..random_geometry import random_grid


def test_accumulator_any_order_equals_stitch():
    q = fq.Quilt((30, 33, 29), 12, 7, border=2, border_weight=0.2)
    x = torch.randn(2, 3, 30, 33, 29)
    p = q.unstitch(x)
    want, want_ws = q.stitch(p)
    acc = fq.StitchAccumulator(q, 2, 3)
    perm = torch.randperm(p.shape[0], generator=torch.Generator().manual_seed(0))
    for chunk in perm.split(7):
        acc.add(p[chunk].half().float(), chunk)  # any order, any batch size
    assert acc.windows_added == acc.total_windows
    mean, ws = acc.finalize()
    torch.testing.assert_close(ws, want_ws.float())
    torch.testing.assert_close(mean, q.stitch(p.half().float())[0], rtol=1e-5, atol=1e-5)
    mean2, _ = acc.finalize(dtype=torch.float16)  # callable again, other dtype
    assert mean2.dtype == torch.float16


def test_accumulator_partial_gives_fill_and_refuses_double_count():
    q = fq.Quilt((20, 20), 8, 4, fill_value=-7.0)
    acc = fq.StitchAccumulator(q, 1, 1)
    acc.add(torch.ones(2, 1, 8, 8), [0, 1])
    mean, ws = acc.finalize()
    assert (mean[0, 0, 12:, :] == -7.0).all() and (ws[0, 12:] == 0).all()
    assert not torch.isnan(mean).any()
    with pytest.raises(ValueError, match="counted twice"):
        acc.add(torch.ones(1, 1, 8, 8), [1])
    with pytest.raises(ValueError, match="counted twice"):
        acc.add(torch.ones(2, 1, 8, 8), [5, 5])
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 16\)"):
        acc.add(torch.ones(1, 1, 8, 8), [16])
    with pytest.raises(ValueError, match="patches must have shape"):
        acc.add(torch.ones(1, 2, 8, 8), [3])
    with pytest.raises(TypeError, match="accumulator dtype"):
        fq.StitchAccumulator(q, 1, 1, dtype=torch.float16)


def test_sliding_window_equals_unstitch_model_stitch():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(2, 3, 3, padding=1)  # channel count changes
    x = torch.randn(2, 2, 21, 26, 19)
    y = fq.sliding_window(net, x, window=(8, 10, 8), step=(5, 6, 4), batch_size=5,
                          weight="gaussian")
    q = fq.Quilt(x.shape[2:], (8, 10, 8), (5, 6, 4), weight="gaussian")
    with torch.no_grad():
        want, _ = q.stitch(net(q.unstitch(x)))
    assert y.shape == (2, 3, 21, 26, 19)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


def test_sliding_window_memory_is_bounded_by_batch():
    seen = []

    def model(p):
        seen.append(p.shape[0])
        return p * 2

    x = torch.randn(1, 1, 64, 64)
    y = fq.sliding_window(model, x, 16, 8, batch_size=4, weight="hann", progress=True)
    assert max(seen) == 4 and sum(seen) == 49
    torch.testing.assert_close(y, 2 * x)


def test_sliding_window_half_model_output_keeps_dtype():
    x = torch.randn(1, 1, 40, 40)
    y = fq.sliding_window(lambda p: p.half(), x, 16, 8, batch_size=16)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), x, rtol=1e-3, atol=1e-3)


def test_sliding_window_errors():
    x = torch.randn(1, 1, 40, 40)
    with pytest.raises(ValueError, match="model output must have shape"):
        fq.sliding_window(lambda p: p[..., :8], x, 16, 8)
    with pytest.raises(TypeError, match="model must return a tensor"):
        fq.sliding_window(lambda p: p.numpy(), x, 16, 8)
    with pytest.raises(TypeError, match="floating point"):
        fq.sliding_window(lambda p: p.int(), x, 16, 8)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        fq.sliding_window(lambda p: p, x, 16, 8, batch_size=0)
    with pytest.raises(ValueError, match="larger than the image"):
        fq.sliding_window(lambda p: p, x, 64, 8)
    with pytest.raises(TypeError, match="model must be callable"):
        fq.sliding_window(None, x, 16, 8)


def test_sliding_window_gaps_and_zero_weights_get_fill_value():
    x = torch.randn(1, 1, 50, 50)
    y = fq.sliding_window(lambda p: p, x, 8, 12, allow_gaps=True, fill_value=-2.0, weight="flat")
    q = fq.Quilt((50, 50), 8, 12, allow_gaps=True, fill_value=-2.0, weight="flat")
    torch.testing.assert_close(y, q.stitch(q.unstitch(x))[0])
    w = torch.ones(8, 8)
    w[:, :2] = 0  # a user weight with zeros: voxels covered only there get fill_value,
    with pytest.raises(ValueError, match="weight tensor is 0"):  # when asked for
        fq.sliding_window(lambda p: p, x, 8, 8, weight=w, fill_value=5.0)
    y = fq.sliding_window(lambda p: p, x, 8, 8, weight=w, fill_value=5.0, allow_gaps=True)
    q = fq.Quilt((50, 50), 8, 8, weight=w, fill_value=5.0, allow_gaps=True)
    torch.testing.assert_close(y, q.stitch(q.unstitch(x))[0])
    assert (y[0, 0, :, :2] == 5.0).all() and not torch.isnan(y).any()


@settings(max_examples=min(settings().max_examples, 40))
@given(seed=st.integers(0, 2**31 - 1))
def test_accumulator_and_sliding_window_equal_stitch_for_random_geometries(seed):
    # Random 2D/3D shapes, windows, steps (gaps too), borders, weights, batch sizes and orders.
    rng = np.random.default_rng(seed)
    S, W, step, border = random_grid(rng, 40, 14, gaps=2)
    weight = ["flat", "gaussian", "hann", "linear", None][int(rng.integers(0, 5))]
    q = fq.Quilt(S, W, step, border=border, weight=weight, allow_gaps=True, fill_value=-2.0)
    N, C = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    x = torch.from_numpy(rng.standard_normal((N, C, *S)).astype(np.float32))
    p = q.unstitch(x)
    want, want_ws = q.stitch(p)
    acc = fq.StitchAccumulator(q, N, C)
    order = torch.from_numpy(rng.permutation(p.shape[0]))
    for chunk in order.split(int(rng.integers(1, 10))):
        acc.add(p[chunk], chunk)
    mean, ws = acc.finalize()
    torch.testing.assert_close(ws, want_ws)
    torch.testing.assert_close(mean, want, rtol=1e-5, atol=1e-5)
    y = fq.sliding_window(lambda t: t, x, W, step, int(rng.integers(1, 10)), weight,
                          border=border, allow_gaps=True, fill_value=-2.0)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


def test_accumulators_on_another_device_than_the_patches(device):
    q = fq.Quilt((40, 41, 39), 16, 8, border=2)
    x = torch.randn(2, 2, 40, 41, 39, device=device)
    p = q.unstitch(x)
    want, _ = q.stitch(p)
    for acc_dev in (device, "cpu"):
        acc = fq.StitchAccumulator(q, 2, 2, device=acc_dev)
        for chunk in torch.arange(p.shape[0]).flip(0).split(13):
            acc.add(p[chunk.to(device)], chunk)
        mean, _ = acc.finalize()
        torch.testing.assert_close(mean.to(device), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(want, x, rtol=1e-5, atol=1e-5)


def test_sliding_window_model_on_the_device_output_on_the_input_device(device):
    x = torch.randn(1, 1, 48, 50, 46)
    net = torch.nn.Conv3d(1, 2, 3, padding=1)
    y_cpu = fq.sliding_window(net, x, 16, 12, batch_size=4)
    y_dev = fq.sliding_window(net.to(device), x, 16, 12, batch_size=4, device=device)
    assert y_dev.device.type == "cpu"
    torch.testing.assert_close(y_dev, y_cpu, rtol=1e-4, atol=1e-4)


def test_overlap_of_host_and_device_by_placement():
    from fastquilt.batches import overlaps

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert overlaps(cpu, cpu, cpu) == (False, False)  # nothing asynchronous: no extra buffer
    assert overlaps(cpu, gpu, cpu) == (True, True)  # volume and sums in RAM, model on the GPU
    assert overlaps(cpu, gpu, gpu) == (True, False)  # volume in RAM, sums on the GPU
    assert overlaps(gpu, gpu, cpu) == (False, True)  # volume on the GPU, sums in RAM
    assert overlaps(gpu, gpu, gpu) == (False, False)  # one stream does it all in order


@pytest.fixture(params=[(True, True), (True, False), (False, True)],
                ids=["prefetch+defer", "prefetch", "defer"])
def overlap_on_cpu(request, monkeypatch):
    """The overlap of host and device, run on the CPU with each of its parts (where nothing
    is asynchronous: its order and its buffers are what is tested)."""
    from fastquilt import batches

    monkeypatch.setattr(batches, "_OVERLAP_EVERYWHERE", request.param)
    return request.param


class _Bar:
    """tqdm's stand-in: records the windows counted."""

    bars: list = []

    def __init__(self, total, **kwargs):
        self.total, self.n, self.closed = total, 0, False
        _Bar.bars.append(self)

    def update(self, n):
        self.n += n

    def close(self):
        self.closed = True


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 100])
def test_overlap_works_one_batch_ahead_and_sums_what_the_model_gave(
        overlap_on_cpu, monkeypatch, batch_size):
    import tqdm.auto

    from fastquilt import batches

    x = torch.randn(2, 2, 30, 33, 29)
    log, seen = [], []

    def model(p):  # in place on its input (the gather buffer), then returned: the worst case
        log.append("model")
        seen.append(p.clone() * 2)
        return p.mul_(2)

    def checked(add):  # what is summed is what the model gave for that batch
        def add_checked(y, *a, **k):
            assert torch.equal(y, seen[log.count("add")])
            log.append("add")
            return add(y, *a, **k)
        return add_checked

    adds = {name: getattr(fq.ops, name)  # (the CPU sums zero and normalise plane by plane)
            for name in ("scatter_add_windows_", "scatter_add_grid_batch_")}
    for name, add in adds.items():
        monkeypatch.setattr(fq.ops, name, checked(add))
    monkeypatch.setattr(tqdm.auto, "tqdm", _Bar)
    _Bar.bars.clear()
    y = fq.sliding_window(model, x, (12, 14, 11), (7, 8, 6), batch_size, weight="hann",
                          border=2, progress=True)
    n = len(seen)
    q = fq.Quilt(x.shape[2:], (12, 14, 11), (7, 8, 6), weight="hann", border=2)
    assert n == -(-2 * q.num_windows // batch_size)
    if overlap_on_cpu[1]:  # the model one batch ahead of the sums
        assert log == ["model"] + ["model", "add"] * (n - 1) + ["add"]
    else:
        assert log == ["model", "add"] * n
    (bar,) = _Bar.bars  # every window counted, odd and even numbers of batches alike
    assert bar.closed and bar.n == bar.total == 2 * q.num_windows
    monkeypatch.setattr(batches, "_OVERLAP_EVERYWHERE", (False, False))
    for name, add in adds.items():
        monkeypatch.setattr(fq.ops, name, add)
    assert torch.equal(y, fq.sliding_window(lambda p: 2 * p, x, (12, 14, 11), (7, 8, 6),
                                            batch_size, weight="hann", border=2))
    want, _ = q.stitch(2 * q.unstitch(x))
    torch.testing.assert_close(y, want, rtol=1e-6, atol=1e-6)


def test_overlap_gives_the_same_bits_for_nets_half_outputs_and_ensembles(overlap_on_cpu,
                                                                         monkeypatch):
    from fastquilt import batches

    torch.manual_seed(0)
    nets = [torch.nn.Conv2d(3, 4, 3, padding=1) for _ in range(2)]
    x = torch.randn(3, 3, 70, 61)
    calls = [lambda m: fq.sliding_window(m, x, 24, 16, 5),
             lambda m: fq.sliding_window(lambda p: m(p).half(), x, 24, 16, 5),
             lambda m: fq.sliding_window([m, nets[1]], x, 24, 16, 5, tta="flips",
                                         activation="softmax",
                                         outputs=("mean", "std", "labels", "entropy"))]
    for call in calls:
        monkeypatch.setattr(batches, "_OVERLAP_EVERYWHERE", overlap_on_cpu)
        a = call(nets[0])
        monkeypatch.setattr(batches, "_OVERLAP_EVERYWHERE", (False, False))
        b = call(nets[0])
        for u, v in zip(*(r.values() if isinstance(r, dict) else [r] for r in (a, b))):
            assert u.dtype == v.dtype and torch.equal(u, v)


@requires_cuda
@pytest.mark.parametrize("x_dev,out_dev", [("cpu", "cpu"), ("cpu", "cuda"), ("cuda", "cpu")])
@pytest.mark.parametrize("in_place", [False, True])
def test_overlap_on_the_gpu_with_a_slow_model(monkeypatch, x_dev, out_dev, in_place):
    # The model keeps the GPU busy for a while before its result, and each sum on the host
    # takes a while too: a copy read before it has landed, a buffer refilled before its copy
    # has read it, or a copy landing in a buffer still being summed shows as wrong sums.
    x = torch.randn(2, 2, 40, 37, 35)
    def slow(add):
        def slow_add(*a, **k):
            time.sleep(0.003)
            return add(*a, **k)
        return slow_add

    def model(p):
        torch.cuda._sleep(1_000_000)  # ~0.5 ms of GPU time on the model's stream
        return p.mul_(2) if in_place else p * 2

    want = fq.sliding_window(lambda p: 2 * p, x, 16, 9, 3)
    for name in ("scatter_add_windows_", "scatter_add_grid_batch_"):  # (CPU sums: the latter)
        monkeypatch.setattr(fq.ops, name, slow(getattr(fq.ops, name)))
    y = fq.sliding_window(model, x.to(x_dev), 16, 9, 3, device="cuda", out_device=out_dev)
    torch.testing.assert_close(y.cpu(), want, rtol=1e-5, atol=1e-5)


def test_a_strided_volume_is_made_contiguous_once_not_per_batch(monkeypatch):
    # The gather would copy a volume it cannot read in place whole for every batch: a crop
    # (rows contiguous) is read in place, a permuted volume made contiguous once
    base = torch.randn(2, 2, 30, 28, 52)
    views = [base[..., :26], base[..., :26].permute(0, 1, 4, 3, 2)]
    gathered = []
    gather = fq.ops.gather_windows_into

    def seen(x, *a, **k):
        gathered.append(fq.ops.gather_reads_in_place(x))
        return gather(x, *a, **k)

    monkeypatch.setattr(fq.ops, "gather_windows_into", seen)
    for x in views:
        for call in (lambda v: fq.sliding_window(lambda p: p * 2, v, 12, 8, 3),
                     lambda v: fq.sliding_window([lambda p: p * 2], v, 12, 8, 3,
                                                 outputs="mean")):
            assert torch.equal(call(x), call(x.contiguous()))
    assert len(gathered) > 8 and all(gathered)
