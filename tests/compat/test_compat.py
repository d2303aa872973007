"""fastquilt.compat against qlty 1.5.0 on many random configurations, 2D and 3D."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastquilt.compat as fc

qlty = pytest.importorskip("qlty", reason="qlty 1.5.0 is a test dependency")


@st.composite
def config_2d(draw):
    Y, X = draw(st.integers(8, 60)), draw(st.integers(8, 60))
    wy, wx = draw(st.integers(2, min(Y, 16))), draw(st.integers(2, min(X, 16)))
    sy, sx = draw(st.integers(1, wy)), draw(st.integers(1, wx))
    border = draw(st.sampled_from([None, 0, 1, (1, 0), (2, 1)]))
    if isinstance(border, int) and border and 2 * border >= min(wy, wx):
        border = None
    if isinstance(border, tuple) and (2 * border[0] >= wy or 2 * border[1] >= wx):
        border = None
    bw = draw(st.sampled_from([None, 0.0, 0.1, 1.0]))
    return Y, X, (wy, wx), (sy, sx), border, bw


@given(cfg=config_2d(), N=st.integers(1, 3), seed=st.integers(0, 100))
def test_ncyx_quilt_matches_qlty(cfg, N, seed):
    Y, X, window, step, border, bw = cfg
    kw = {} if bw is None else {"border_weight": bw}  # None: qlty's default (1.0)
    A, B = qlty.NCYXQuilt(Y, X, window, step, border, **kw), fc.NCYXQuilt(Y, X, window, step,
                                                                           border, **kw)
    assert B.get_times() == tuple(A.get_times()) and (B.nY, B.nX) == (A.nY, A.nX)
    assert torch.equal(B.border_tensor(), A.border_tensor()) and torch.equal(B.weight, A.weight)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 2, Y, X, generator=g)
    lab = torch.randint(-1, 3, (N, Y, X), generator=g)
    for n_pos in (False, True):
        p1, pos1 = A.unstitch(x, return_positions=True, include_n_position=n_pos)
        p2, pos2 = B.unstitch(x, return_positions=True, include_n_position=n_pos)
        assert torch.equal(p1, p2) and torch.equal(pos1, pos2)
    i1, o1 = A.unstitch_data_pair(x, lab, missing_label=-1)
    i2, o2 = B.unstitch_data_pair(x, lab, missing_label=-1)
    assert torch.equal(i1, i2) and torch.equal(o1, o2)
    m1, n1 = A.stitch(p1, use_numba=False)
    m2, n2 = B.stitch(p2)
    torch.testing.assert_close(m2, m1, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(n2, n1)
    w1 = qlty.weed_sparse_classification_training_pairs_2D(i1, o1, -1, A.border_tensor())
    w2 = fc.weed_sparse_classification_training_pairs_2D(i2, o2, -1, B.border_tensor())
    assert all(torch.equal(a, b) for a, b in zip(w1, w2))
    r1 = A.unstitch(x, add_positional_channels=True, position_mode="relative")
    r2 = B.unstitch(x, add_positional_channels=True, position_mode="relative")
    torch.testing.assert_close(r2, r1)


@given(
    n=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
    w=st.integers(2, 8), s_div=st.sampled_from([1, 2]), border=st.sampled_from([None, 1]),
    bw=st.sampled_from([None, 0.1, 0.5]), seed=st.integers(0, 100),
)
def test_nczyx_quilt_matches_qlty_on_divisible_shapes(n, w, s_div, border, bw, seed):
    s = max(1, w // s_div)
    shape = tuple(w + (k - 1) * s for k in n)  # (S - w) % s == 0: where qlty 3D works
    if border and 2 * border >= w:
        border = None
    kw = {} if bw is None else {"border_weight": bw}  # None: qlty's default (0.1)
    A = qlty.NCZYXQuilt(*shape, (w,) * 3, (s,) * 3, border, **kw)
    B = fc.NCZYXQuilt(*shape, (w,) * 3, (s,) * 3, border, **kw)
    assert B.get_times() == tuple(A.get_times())
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1, *shape, generator=g)
    p = B.unstitch(x)
    assert torch.equal(p, A.unstitch(x))
    m1, n1 = A.stitch(p)
    m2, n2 = B.stitch(p)
    torch.testing.assert_close(m2, m1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(n2, n1)
    lab = torch.randint(-1, 2, (2, *shape), generator=g).float()
    a, b = A.unstitch_data_pair(x, lab)
    c, d = B.unstitch_data_pair(x, lab)
    assert torch.equal(a, c) and torch.equal(b, d)
    bt = A.border_tensor()
    w1 = qlty.weed_sparse_classification_training_pairs_3D(a, b, -1, bt)
    w2 = fc.weed_sparse_classification_training_pairs_3D(c, d, -1, B.border_tensor())
    assert all(torch.equal(u, v) for u, v in zip(w1, w2))


def test_deviations_where_qlty_is_wrong():
    # 3D step-back (qlty raises), missing_label in 3D, empty weeding, absolute positions
    B = fc.NCZYXQuilt(50, 40, 30, (16, 16, 16), (8, 8, 8), 2)
    x = torch.randn(1, 1, 50, 40, 30)
    lab = torch.full((1, 50, 40, 30), -1.0)
    xi, lo = B.unstitch_data_pair(x, lab, missing_label=-1)
    kin, kout, removed = fc.weed_sparse_classification_training_pairs_3D(xi, lo, -1,
                                                                         B.border_tensor())
    assert kin.shape == (0, 1, 16, 16, 16) and removed.all()
    A2 = fc.NCYXQuilt(40, 40, (16, 16), (8, 8), None)
    p, pos = A2.unstitch(torch.randn(1, 1, 40, 40), return_positions=True,
                         add_positional_channels=True, normalize_positions=False)
    assert p.shape[1] == 3 and torch.equal(p[:, 1, :, 0], pos[:, :1] + torch.arange(16.0))
    with pytest.raises(ValueError, match="position_mode"):
        A2.unstitch(torch.randn(1, 1, 40, 40), add_positional_channels=True, position_mode="x")


def test_signatures_accept_every_qlty_parameter_with_its_default():
    # Swapping the import must not break a call: qlty's parameter names, in qlty's order, with
    # qlty's defaults (fastquilt may add parameters after them).
    import inspect

    pairs = [(fc.NCYXQuilt, qlty.NCYXQuilt), (fc.NCZYXQuilt, qlty.NCZYXQuilt)]
    for ours, theirs in pairs:
        for name, fn in inspect.getmembers(theirs, inspect.isfunction):
            if name.startswith("_") and name != "__init__":
                continue
            want = list(inspect.signature(fn).parameters.values())
            got = list(inspect.signature(getattr(ours, name)).parameters.values())
            assert [p.name for p in got[:len(want)]] == [p.name for p in want], (ours, name)
            for a, b in zip(got, want):
                assert a.default == b.default, (ours.__name__, name, a.name)
    for name in ("weed_sparse_classification_training_pairs_2D",
                 "weed_sparse_classification_training_pairs_3D"):
        want = list(inspect.signature(getattr(qlty, name)).parameters)
        assert list(inspect.signature(getattr(fc, name)).parameters)[:len(want)] == want
