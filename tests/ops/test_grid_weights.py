"""Grid planning and weights: qlty's exact numbers, fastquilt's validation."""

import pytest
import torch

import fastquilt as fq

from .. import reference as ref


@pytest.mark.parametrize(
    ("S", "w", "s", "n", "starts"),
    [
        (100, 32, 16, 6, [0, 16, 32, 48, 64, 68]),
        (10, 3, 3, 4, [0, 3, 6, 7]),
        (64, 64, 64, 1, [0]),
        (65, 64, 64, 2, [0, 1]),
        (101, 10, 30, 5, [0, 30, 60, 90, 91]),
    ],
)
def test_axis_grid_matches_the_notes(S, w, s, n, starts):
    assert fq.axis_count(S, w, s) == n
    assert fq.axis_starts(S, w, s) == starts
    assert ref.starts_1d(S, w, s) == starts


def test_grid_origins_order_and_subset():
    g = fq.Grid((10, 12), (4, 5), (3, 4))
    assert g.counts == (3, 3) and g.num_windows == 9
    o = g.origins(2)
    assert o.shape == (18, 3) and o.dtype == torch.int64
    assert o[:9, 0].eq(0).all() and o[9:, 0].eq(1).all()
    assert o[:3].tolist() == [[0, 0, 0], [0, 0, 4], [0, 0, 7]]  # x fastest
    assert g.origins(2, indices=[10, 3]).tolist() == [o[10].tolist(), o[3].tolist()]
    with pytest.raises(ValueError, match=r"window indices must lie in \[0, 18\)"):
        g.origins(2, indices=[18])


def test_grid_validation_messages():
    with pytest.raises(ValueError, match=r"larger than the image .* axis 1 \(64 > 50\); pad"):
        fq.Grid((100, 50), 64, 32)
    with pytest.raises(ValueError, match=r"step must be >= 1 on every axis"):
        fq.Grid((100, 50), 16, (0, 4))
    with pytest.raises(ValueError, match="allow_gaps=True"):
        fq.Grid((100, 50), 16, (8, 20))
    assert fq.Grid((100, 50), 16, (8, 20), allow_gaps=True).counts == (12, 3)
    with pytest.raises(TypeError, match="window must be an int or a tuple"):
        fq.Grid((100, 50), 16.0, 8)
    with pytest.raises(ValueError, match=r"window must have one entry per spatial axis \(2\)"):
        fq.Grid((100, 50), (16, 16, 16), 8)
    with pytest.raises(ValueError, match="spatial_shape must have 2"):
        fq.Grid((100,), 16, 8)


def test_border_weight_exact_numbers():
    w = fq.border_weight((8, 8), 2, 0.3)
    assert w[2].tolist() == pytest.approx([0.3, 0.3, 1, 1, 1, 1, 0.3, 0.3])
    assert w[0].tolist() == pytest.approx([0.3] * 8) and w[1].tolist() == pytest.approx([0.3] * 8)
    assert fq.border_weight((8, 8), 2, 0.0).min().item() == pytest.approx(1e-8)
    assert torch.equal(fq.border_weight((8, 8), None, 0.3), torch.ones(8, 8))
    assert torch.equal(fq.border_weight((8, 8), (0, 0), 0.3), torch.ones(8, 8))
    w = fq.border_weight((8, 6), (2, 0), 0.5)  # no frame along x
    assert w[:, 0].tolist() == [0.5, 0.5, 1, 1, 1, 1, 0.5, 0.5]
    assert w[3].tolist() == [1.0] * 6
    with pytest.raises(ValueError, match="at least half the window"):
        fq.border_weight((8, 8), 4, 0.1)
    with pytest.raises(ValueError, match=r"border_weight must be in \[0, 1\]"):
        fq.border_weight((8, 8), 2, 1.5)


def test_smooth_weights():
    g = fq.gaussian_weight((16, 16, 16))
    assert g.max().item() == pytest.approx(1.0, abs=1e-3) and g.min().item() >= 1e-3
    h = fq.hann_weight((9, 9))
    assert h.min().item() > 0 and h[4, 4].item() == pytest.approx(1.0)
    lin = fq.linear_weight((7,))
    assert lin.tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25])
    with pytest.raises(ValueError, match="weight must be one of"):
        fq.make_weight("triangle", (4, 4))
    with pytest.raises(ValueError, match="finite and >= 0"):
        fq.make_weight(torch.full((4, 4), -1.0), (4, 4))
    for bad in (float("nan"), float("inf"), -float("inf"), -1e-30):  # one voxel among ones
        w = torch.ones(4, 4)
        w[1, 2] = bad
        with pytest.raises(ValueError, match="finite and >= 0"):
            fq.make_weight(w, (4, 4))
    with pytest.raises(ValueError, match="positive sum"):
        fq.make_weight(torch.zeros(4, 4), (4, 4))
    with pytest.raises(ValueError, match="window's shape"):
        fq.make_weight(torch.ones(4, 5), (4, 4))
    # The public builders check their window (were: RuntimeErrors from torch, a string split
    # into characters, a 3.5 truncated) and parameters (min_value 0 gave zero weights).
    for make in (fq.gaussian_weight, fq.hann_weight, fq.linear_weight,
                 lambda w: fq.border_weight(w, 1), lambda w: fq.border_mask(w, 1)):
        with pytest.raises(ValueError, match=r"window must be >= 1 on every axis"):
            make((0, 4))
        with pytest.raises(TypeError, match="window must contain ints"):
            make((3.5, 4))
        with pytest.raises(TypeError, match="window must be a tuple of ints"):
            make("88")
    with pytest.raises(ValueError, match=r"min_value must be in \(0, 1\]"):
        fq.gaussian_weight((8, 8), min_value=0.0)
    with pytest.raises(ValueError, match="sigma_scale must be > 0"):
        fq.gaussian_weight((8, 8), sigma_scale=0.0)
    with pytest.raises(TypeError, match=r"got ndarray \(use torch.from_numpy\)"):
        fq.Quilt((16, 16), 4, 2, weight=torch.ones(4, 4).numpy())
    with pytest.raises(TypeError, match="meta tensor"):
        fq.make_weight(torch.ones(4, 4, device="meta"), (4, 4))
    with pytest.raises(ValueError, match="step must be an int >= 1"):
        fq.axis_count(10, 4, 0)  # was a ZeroDivisionError
    with pytest.raises(ValueError, match="window 4 is larger than the axis size 3"):
        fq.axis_starts(3, 4, 1)  # was [-1], a negative start
    for top in (1e-40, 2.0**-65, 2.0**65):  # float32 products would underflow / overflow
        with pytest.raises(ValueError, match=r"weight / weight.max\(\)"):
            fq.make_weight(torch.full((4, 4), top), (4, 4))
    for top in (2.0**-64, 2.0**64):  # the range's ends are accepted
        assert fq.make_weight(torch.full((4, 4), top), (4, 4)).max().item() == top


@pytest.mark.parametrize("weight", [None, "flat", "gaussian", "hann", "linear", "tensor"])
@pytest.mark.parametrize("shape", [(37, 41), (19, 23, 21)])
def test_every_weighting_round_trips_identity(weight, shape):
    D = len(shape)
    window = (8,) * D
    if weight == "tensor":
        weight = torch.rand(window, generator=torch.Generator().manual_seed(0)) + 0.01
    q = fq.Quilt(shape, window, 5, border=2, border_weight=0.2, weight=weight)
    x = torch.randn(2, 3, *shape)
    mean, ws = q.stitch(q.unstitch(x))
    assert (mean - x).abs().max().item() <= 1e-6 * max(1.0, x.abs().max().item())
    assert ws.shape == (2, *shape) and (ws > 0).all()


@pytest.mark.parametrize("S, W, step", [
    ((60, 70, 30), (8, 8, 8), (4, 4, 4)),     # many rows per (z, y) class: one summed per class
    ((61, 47, 33), (9, 10, 7), (4, 3, 5)),    # stepped-back last windows along every axis
    ((40, 45, 20), (6, 5, 4), (8, 7, 4)),     # gaps (step > window): uncovered rows
    ((3, 4, 5), (2, 3, 5), (1, 1, 1)),        # few rows: the unhinted stitch sums each
    ((1, 90, 70), (1, 12, 10), (1, 5, 6)),    # 2D
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_weight_sums_are_the_rows_summed_one_by_one(S, W, step, dtype):
    """The CPU kernels sum one row per class of output rows (rows covered at the same
    offsets) and reuse it: grid_weight_sum, the inverse, grid_normalize_ and the stitch
    without a hint must equal, bit for bit, every row summed in the kernels' order."""
    gen = torch.Generator().manual_seed(sum(S))
    w = torch.rand(W, generator=gen, dtype=dtype) + 0.05
    if S[0] == 1:  # 2D
        S, W, step, w = S[1:], W[1:], step[1:], w[0]
    for inverse in (False, True):
        want = torch.from_numpy(ref.grid_weight_sum_rows(w.numpy(), S, step, inverse))
        assert torch.equal(fq.grid_weight_sum(w, S, step, inverse=inverse), want)
    p = torch.randn(len(ref.origins(S, tuple(w.shape), step, 1)), 2, *w.shape, generator=gen,
                    dtype=dtype)
    hinted = fq.stitch_grid(p, S, step, weight=w, inv_weight_sum=want)
    assert torch.equal(fq.stitch_grid(p, S, step, weight=w), hinted)
    acc = torch.randn(2, 2, *S, generator=gen, dtype=dtype)
    assert torch.equal(fq.grid_normalize_(acc.clone(), w, step),
                       torch.where(want == 0, 0, acc * want))
