"""The one weight-sum division rule (fastquilt.normalize) equals the compiled grid ops' rule bit
for bit, and every path uses it: the accumulator, the trainable-weight stitch."""

import pytest
import torch

import fastquilt as fq
from fastquilt.normalize import divide_by_weight_sum_, inverse_weight_sum, weighted_mean

CASES = [((20, 23), (8, 6), (4, 5)), ((9, 10, 11), (4, 5, 3), (3, 2, 3)),
         ((40, 33), (8, 6), (10, 9))]  # the last one leaves gaps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES)
def test_rule_equals_the_grid_ops_bit_for_bit(case, dtype, device):
    spatial, window, step = case
    gen = torch.Generator().manual_seed(0)
    w = (torch.rand(window, generator=gen, dtype=dtype) + 0.05).to(device)
    ws = fq.grid_weight_sum(w, spatial, step)
    assert torch.equal(inverse_weight_sum(ws), fq.grid_weight_sum(w, spatial, step, inverse=True))
    acc = torch.randn((2, 3, *spatial), generator=gen, dtype=dtype).to(device)
    want = fq.grid_normalize_(acc.clone(), w, step, fill_value=-2.5)
    got = divide_by_weight_sum_(acc.clone(), ws.expand(2, *spatial), fill_value=-2.5)
    assert torch.equal(got, want)
    assert torch.equal(weighted_mean(acc, ws.expand(2, *spatial), -2.5), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_subnormal_and_nan_sums(dtype):
    tiny = torch.finfo(dtype).tiny
    ws = torch.tensor([0.0, tiny / 4, tiny, 2.0, float("nan"), -1.0], dtype=dtype)
    inv = inverse_weight_sum(ws)
    assert torch.equal(inv, torch.tensor([0.0, 1 / tiny, 1 / tiny, 0.5, 0.0, 0.0], dtype=dtype))
    acc = torch.ones(1, 1, 6, dtype=dtype)
    mean = divide_by_weight_sum_(acc, ws[None], fill_value=7.0)[0]
    assert torch.isfinite(mean).all()  # a subnormal sum never gives inf
    assert mean[0, 0] == 7.0 and mean[0, 4] == 7.0 and mean[0, 5] == 7.0 and mean[0, 3] == 0.5


def test_weighted_mean_is_differentiable_and_leaves_acc():
    acc = torch.rand(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    ws = (torch.rand(2, 5, 6, dtype=torch.float64) + 0.1).requires_grad_()
    before = acc.detach().clone()
    assert torch.autograd.gradcheck(lambda a, w: weighted_mean(a, w, 1.5), (acc, ws))
    assert torch.equal(acc.detach(), before)


def test_shape_and_dtype_errors():
    with pytest.raises(ValueError, match="does not match acc"):
        divide_by_weight_sum_(torch.zeros(2, 3, 4, 5), torch.ones(2, 4, 6))
    # (C, *S) with (*S) is refused, not guessed: with C equal to the first spatial size it
    # would read as (N, C, ...) and divide by the wrong sums
    with pytest.raises(ValueError, match="does not match acc"):
        divide_by_weight_sum_(torch.zeros(3, 5, 4), torch.ones(5, 4))
    with pytest.raises(TypeError, match="floating point"):
        divide_by_weight_sum_(torch.zeros(1, 3, 4, 5, dtype=torch.int32), torch.ones(1, 4, 5))


def test_accumulator_and_trainable_stitch_use_the_rule():
    q = fq.Quilt((20, 23), (8, 6), (4, 5), weight="hann")
    x = torch.randn(2, 3, 20, 23)
    p = q.unstitch(x)
    acc = fq.StitchAccumulator(q, 2, 3)
    acc.add(p, torch.arange(p.shape[0]))
    mean, ws = acc.finalize()
    assert torch.equal(mean, weighted_mean(acc.acc, acc.weight_sum, q.fill_value))
    trainable = fq.Quilt((20, 23), (8, 6), (4, 5), weight=q.weight.clone().requires_grad_())
    m2, ws2 = trainable.stitch(p)
    acc2, _ = fq.scatter_add_windows(p, q.origins(2), (20, 23), 2, weight=q.weight)
    assert torch.equal(m2.detach(), weighted_mean(acc2, ws2.detach(), 0.0))


def test_remembered_inverse_rows_serve_only_an_equal_weight(monkeypatch):
    """Tables are reused across calls for an equal weight (counted builds), rebuilt for a
    weight changed in place or another grid, and the oldest dropped past the byte bound."""
    from fastquilt import normalize, ops

    builds = []
    real = ops.grid_inverse_rows
    monkeypatch.setattr(ops, "grid_inverse_rows",
                        lambda *a: builds.append(a[1:]) or real(*a))
    monkeypatch.setattr(normalize, "_remembered", type(normalize._remembered)())
    w = torch.rand(4, 5, 3, dtype=torch.float64) + 0.1
    S, step = (9, 10, 11), (3, 2, 3)
    first = normalize.remembered_inverse_rows(w, S, step)
    want = real(w, S, step)
    assert all(torch.equal(a, b) for a, b in zip(first, want))
    again = normalize.remembered_inverse_rows(w.clone(), S, step)
    assert len(builds) == 1 and again[0] is first[0]
    w[0, 0, 0] += 1.0  # the caller changes the weight in place: not the remembered one
    changed = normalize.remembered_inverse_rows(w, S, step)
    assert len(builds) == 2 and torch.equal(changed[0], real(w, S, step)[0])
    normalize.remembered_inverse_rows(w, (9, 10, 12), step)  # another grid: its own entry
    assert len(builds) == 3 and len(normalize._remembered) == 2
    a, b = (normalize._entry_bytes(e) for e in normalize._remembered.values())
    monkeypatch.setattr(normalize, "REMEMBERED_BYTES", a + b - 1)
    normalize.remembered_inverse_rows(w, S, step)  # a hit: S is now the most recent
    assert len(builds) == 3
    normalize.remembered_inverse_rows(w * 2, (9, 10, 12), step)  # replaces (9, 10, 12)'s entry
    assert len(builds) == 4 and [k[0] for k in normalize._remembered] == [(9, 10, 12)]
    monkeypatch.setattr(normalize, "REMEMBERED_BYTES", 0)  # nothing is kept
    normalize.remembered_inverse_rows(w, S, step)
    assert len(builds) == 5 and not normalize._remembered
