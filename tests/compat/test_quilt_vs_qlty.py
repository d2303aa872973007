"""Quilt against qlty 1.5.0 where qlty is right, and against a float64 reference where it is
wrong (see the README's compatibility table)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastquilt as fq

from .. import reference as ref

qlty = pytest.importorskip("qlty", reason="qlty 1.5.0 is a test dependency (pip install qlty)")
from qlty import NCYXQuilt, NCZYXQuilt  # noqa: E402


@pytest.mark.parametrize(
    ("Y", "X", "window", "step", "border", "bw"),
    [
        (128, 128, (32, 32), (16, 16), (4, 4), 0.1),
        (100, 77, (32, 16), (16, 10), 3, 1.0),
        (250, 250, (96, 96), (32, 32), 4, 0.1),
        (64, 64, (64, 64), (64, 64), None, 1.0),
        (65, 70, (64, 32), (64, 20), (0, 5), 0.0),
    ],
)
def test_2d_matches_qlty(Y, X, window, step, border, bw):
    ql = NCYXQuilt(Y, X, window, step, border, border_weight=bw)
    q = fq.Quilt((Y, X), window, step, border=border, border_weight=bw)
    assert q.counts == tuple(ql.get_times())
    assert torch.equal(q.weight, ql.weight)
    x = torch.randn(3, 2, Y, X)
    p_ql, pos = ql.unstitch(x, return_positions=True, include_n_position=True)
    p = q.unstitch(x)
    assert torch.equal(p, p_ql)
    assert torch.equal(q.positions(3), pos)
    y = torch.randn_like(p)
    mean_ql, norma = ql.stitch(y, use_numba=False)  # qlty's race-free torch path
    mean, ws = q.stitch(y)
    torch.testing.assert_close(mean, mean_ql, rtol=1e-5, atol=1e-5)
    for n in range(3):
        torch.testing.assert_close(ws[n], norma)


@pytest.mark.parametrize(
    ("shape", "window", "step", "border", "bw"),
    [
        ((64, 64, 64), (32, 32, 32), (16, 16, 16), (4, 4, 4), 0.1),
        ((40, 48, 36), (16, 24, 12), (8, 12, 6), 2, 0.3),
    ],
)
def test_3d_matches_qlty_where_qlty_works(shape, window, step, border, bw):
    ql = NCZYXQuilt(*shape, window, step, border, border_weight=bw)
    q = fq.Quilt(shape, window, step, border=border, border_weight=bw)
    assert q.counts == tuple(ql.get_times())
    x = torch.randn(2, 1, *shape)
    p = q.unstitch(x)
    assert torch.equal(p, ql.unstitch(x))
    y = torch.randn_like(p)
    mean_ql, norma = ql.stitch(y)
    mean, ws = q.stitch(y)
    torch.testing.assert_close(mean, mean_ql, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ws[1], norma)


def test_notes_example_two_constant_patches():
    q = fq.Quilt((8, 12), 8, 4, border=2, border_weight=0.1)
    assert q.num_windows == 2
    p = torch.stack([torch.full((1, 8, 8), 10.0), torch.full((1, 8, 8), 20.0)])
    mean, ws = q.stitch(p)
    want = [10, 10, 10, 10, 10.9091, 10.9091, 19.0909, 19.0909, 20, 20, 20, 20]
    assert mean[0, 0, 4].tolist() == pytest.approx(want, abs=1e-4)
    assert ws[0, 4].tolist() == pytest.approx([0.1, 0.1, 1, 1, 1.1, 1.1, 1.1, 1.1, 1, 1, 0.1, 0.1])


def test_qlty_numba_race_case_is_exact_here():
    """qlty's default numba stitch races on this grid; fastquilt equals the float64 reference."""
    q = fq.Quilt((250, 250), 96, 32, border=4, border_weight=0.1)
    gen = torch.Generator().manual_seed(0)
    p = torch.randn((q.num_windows, 1, 96, 96), generator=gen)
    w = q.weight.double().numpy()
    want, _ = ref.stitch(p.double().numpy(), (250, 250), (96, 96), (32, 32), w)
    for _ in range(5):
        mean, _ = q.stitch(p)
        np.testing.assert_allclose(mean.double().numpy(), want, rtol=1e-5, atol=1e-5)


def test_3d_non_divisible_shape_qlty_raises_fastquilt_steps_back():
    with pytest.raises(RuntimeError):  # qlty: no step-back in 3D
        ql = NCZYXQuilt(100, 40, 40, (32, 32, 32), (16, 16, 16), None)
        ql.unstitch(torch.randn(1, 1, 100, 40, 40))
    q = fq.Quilt((100, 40, 40), 32, 16, border=4)
    x = torch.randn(2, 1, 100, 40, 40, dtype=torch.float64)
    p = q.unstitch(x)
    org = ref.origins((100, 40, 40), (32,) * 3, (16,) * 3, 2)
    np.testing.assert_array_equal(p.numpy(), ref.gather(x.numpy(), org, (32,) * 3))
    y = torch.randn_like(p)
    mean, ws = q.stitch(y)
    want, want_ws = ref.stitch(y.numpy(), (100, 40, 40), (32,) * 3, (16,) * 3,
                               q.weight.double().numpy())
    np.testing.assert_allclose(mean.numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ws.numpy(), want_ws, rtol=1e-12)


def test_weight_sum_is_per_image_and_dtype_device_kept():
    q = fq.Quilt((40, 40), 16, 8, border=2)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = torch.randn(3, 2, 40, 40).to(dtype)
        mean, ws = q.stitch(q.unstitch(x))
        assert mean.dtype == dtype and mean.device == x.device
        assert ws.shape == (3, 40, 40)
        tol = {torch.float16: 1e-3, torch.bfloat16: 8e-3}.get(dtype, 1e-6)
        torch.testing.assert_close(mean.float(), x.float(), rtol=tol, atol=tol)


def test_gaps_get_fill_value_and_zero_weight_never_nan():
    # qlty: step > window gives NaN in its stitch; fastquilt refuses unless allow_gaps=True
    with pytest.raises(ValueError, match="allow_gaps"):
        fq.Quilt((50, 50), 8, 12)
    q = fq.Quilt((50, 50), 8, 12, allow_gaps=True, fill_value=-1.0)
    x = torch.randn(1, 1, 50, 50)
    mean, ws = q.stitch(q.unstitch(x))
    covered = ws[0] > 0
    assert not torch.isnan(mean).any()
    assert torch.equal(mean[0, 0][covered], x[0, 0][covered])
    assert (mean[0, 0][~covered] == -1.0).all() and (~covered).any()


@given(
    Y=st.integers(8, 70), X=st.integers(8, 70), wy=st.integers(2, 8), wx=st.integers(2, 8),
    sy=st.integers(1, 8), sx=st.integers(1, 8), b=st.integers(0, 3),
    bw=st.sampled_from([0.0, 0.1, 0.5, 1.0]), N=st.integers(1, 3),
)
def test_hypothesis_2d_unstitch_stitch_equal_qlty(Y, X, wy, wx, sy, sx, b, bw, N):
    sy, sx = min(sy, wy), min(sx, wx)
    b = b if 2 * b < min(wy, wx) else 0
    ql = NCYXQuilt(Y, X, (wy, wx), (sy, sx), b, border_weight=bw)
    q = fq.Quilt((Y, X), (wy, wx), (sy, sx), border=b, border_weight=bw)
    x = torch.randn(N, 2, Y, X)
    p = q.unstitch(x)
    assert torch.equal(p, ql.unstitch(x))
    mean_ql, _ = ql.stitch(p, use_numba=False)
    torch.testing.assert_close(q.stitch(p)[0], mean_ql, rtol=1e-4, atol=1e-4)
