"""The output-buffer cache: a buffer is reused only once nothing but the cache holds its
memory, never while the caller keeps a tensor, a view, a numpy array or an autograd graph of
it; bounded; off with set_buffer_cache(0). Results are the same with and without it."""

import numpy as np
import pytest
import torch

import fastquilt as fq
from fastquilt import buffers

BIG = (1 << 22,)  # 16 MiB of float32: the smallest size the cache takes


@pytest.fixture(autouse=True)
def fresh_cache():
    buffers.set_buffer_cache(0)
    buffers.set_buffer_cache(1 << 30)
    yield
    buffers.set_buffer_cache(buffers._default_limit())


def test_reused_only_once_dropped():
    a = buffers.empty(BIG, torch.float32)
    ptr = a.data_ptr()
    b = buffers.empty(BIG, torch.float32)
    assert b.data_ptr() != ptr  # a is held
    del a
    assert buffers.empty(BIG, torch.float32).data_ptr() == ptr  # (b is still held)


def _holding(t, holder):
    if holder == "view":
        return t[5:]
    if holder == "numpy":
        return t.numpy()
    if holder == "reshape":
        return t.reshape(4, -1)
    return (t * torch.ones(1, requires_grad=True)).grad_fn  # the graph saves t


@pytest.mark.parametrize("holder", ["view", "numpy", "autograd", "reshape"])
def test_never_reused_while_anything_holds_the_memory(holder):
    a = buffers.empty(BIG, torch.float32)
    ptr = a.data_ptr()
    keep = _holding(a, holder)
    del a
    for _ in range(3):
        b = buffers.empty(BIG, torch.float32)
        assert b.data_ptr() != ptr
    assert keep is not None


def test_bounded_and_off_switch():
    buffers.set_buffer_cache(3 * (16 << 20))
    held = [buffers.empty(BIG, torch.float32) for _ in range(5)]
    assert buffers.buffer_cache_bytes() <= 3 * (16 << 20)
    del held
    buffers.set_buffer_cache(0)
    assert buffers.buffer_cache_bytes() == 0
    a = buffers.empty(BIG, torch.float32)
    ptr = a.data_ptr()
    del a
    b = buffers.empty(BIG, torch.float32)  # not cached: a new allocation (maybe the same
    assert buffers.buffer_cache_bytes() == 0 and b.numel() == BIG[0]  # address, from malloc)
    assert ptr is not None
    with pytest.raises(ValueError, match="max_bytes must be an int >= 0"):
        buffers.set_buffer_cache(-1)


def test_small_and_non_cpu_buffers_are_not_cached():
    buffers.empty((10,), torch.float32)
    assert buffers.buffer_cache_bytes() == 0


def test_quilt_outputs_are_the_same_with_and_without_the_cache():
    q = fq.Quilt((128, 160), 32, 16, border=4)
    x = torch.randn(8, 3, 128, 160)
    runs = []
    for limit in (0, 1 << 30):
        buffers.set_buffer_cache(limit)
        p = q.unstitch(x)
        m, ws = q.stitch(p * 2)
        runs.append((p.clone(), m.clone(), ws.clone()))
        p2 = q.unstitch(x + 1)  # p is held: p2 must not overwrite it
        assert p2.data_ptr() != p.data_ptr() and torch.equal(p, runs[-1][0])
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    np.testing.assert_allclose(runs[0][1].numpy(), (2 * x).numpy(), rtol=1e-5, atol=1e-5)


def test_outputs_that_record_autograd_are_never_cached_buffers():
    q = fq.Quilt((128, 160), 32, 16)
    x = torch.randn(8, 3, 128, 160, requires_grad=True)
    p = q.unstitch(x)
    assert p.grad_fn is not None
    m, _ = q.stitch(p)
    m.sum().backward()
    assert x.grad is not None


def test_sliding_window_reuses_its_batch_buffer_once_dropped():
    # batches of 16 windows of 64^3 float32: 16 MiB, the smallest size the cache takes
    x = torch.randn(1, 1, 128, 128, 128)
    n_batches = 27 // 16 + 1  # 3^3 windows of 64 at step 32
    seen, kept = [], []

    def model(t):  # records where each batch lies; keeps the second call's first batch
        seen.append(t.data_ptr())
        if len(seen) == 1 + n_batches:
            kept.append(t)
        return t * 2

    first = fq.sliding_window(model, x, 64, 32, batch_size=16)
    second = fq.sliding_window(model, x, 64, 32, batch_size=16)
    assert len(seen) == 2 * n_batches and len(set(seen[:n_batches])) == 1
    assert seen[n_batches] == seen[0]  # the first call's dropped buffer, reused
    held = kept[0].clone()  # the second call's last batch: the caller holds the buffer now
    third = fq.sliding_window(model, x, 64, 32, batch_size=16)
    assert seen[-1] != seen[0] and torch.equal(kept[0], held)
    for out in (first, second, third):
        np.testing.assert_allclose(out.numpy(), (2 * x).numpy(), rtol=1e-5, atol=1e-5)
    buffers.set_buffer_cache(0)  # off: the same numbers
    assert torch.equal(fq.sliding_window(model, x, 64, 32, batch_size=16), first)
