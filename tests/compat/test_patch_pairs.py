"""Patch pairs against qlty 1.5.0: the same draws for a seed (or the global RNG), the same
patches, displacements, rotations, positions and overlapping pixels, 2D and 3D; the
invariants (patches are the image at their positions, overlapping pixels agree); errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastquilt as fq

pp2 = pytest.importorskip("qlty.patch_pairs_2d", reason="qlty 1.5.0 is a test dependency")
pp3 = pytest.importorskip("qlty.patch_pairs_3d")

CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                     reason="no CUDA device"))


def _same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.dtype == v.dtype and u.shape == v.shape and torch.equal(u, v)


@st.composite
def pair_case_2d(draw):
    U = draw(st.integers(4, 12))
    V = draw(st.integers(4, 12))
    m = max(U, V)
    low = draw(st.integers(m // 4, 3 * m // 4))
    high = draw(st.integers(low, 3 * m // 4))
    Y = draw(st.integers(U + high + 1, U + high + 8))
    X = draw(st.integers(V + high + 1, V + high + 8))
    rot = draw(st.sampled_from([None, (0, 2), (0, 1, 2, 3), (3,)])) if U == V else None
    return U, V, float(low), float(high), Y, X, rot


@settings(max_examples=min(settings().max_examples, 40), deadline=None)
@given(case=pair_case_2d(), N=st.integers(1, 2), C=st.integers(1, 3), P=st.integers(0, 6),
       seed=st.integers(0, 2**31 - 1), n_pos=st.booleans())
def test_2d_matches_qlty(case, N, C, P, seed, n_pos):
    U, V, low, high, Y, X, rot = case
    x = torch.randn(N, C, Y, X)
    kw = dict(random_seed=seed, rotation_choices=rot, return_positions=True,
              include_n_position=n_pos)
    got = fq.extract_patch_pairs(x, (U, V), P, (low, high), **kw)
    _same(got, pp2.extract_patch_pairs(x, (U, V), P, (low, high), **kw))
    p1, p2, d, r, s1, s2 = got
    if n_pos:
        s1, s2 = s1[:, 1:], s2[:, 1:]
    for i in range(len(p1)):  # invariants: the image at the positions, d = s2 - s1
        n = i // max(P, 1)
        (y, xx), (y2, x2) = s1[i].tolist(), s2[i].tolist()
        assert torch.equal(p1[i], x[n, :, y:y + U, xx:xx + V])
        assert torch.equal(p2[i], torch.rot90(x[n, :, y2:y2 + U, x2:x2 + V], int(r[i]),
                                              dims=(-2, -1)))
        assert [x2 - xx, y2 - y] == d[i].long().tolist()
        assert low <= float(d[i].norm()) <= high
    o1, o2 = fq.extract_overlapping_pixels(p1, p2, d, r)
    _same((o1, o2), pp2.extract_overlapping_pixels(p1, p2, d, r))
    assert torch.equal(o1, o2)  # shared pixels of one image agree


@settings(max_examples=min(settings().max_examples, 25), deadline=None)
@given(w=st.tuples(st.integers(4, 9), st.integers(4, 9), st.integers(4, 9)),
       N=st.integers(1, 2), P=st.integers(0, 4), seed=st.integers(0, 2**31 - 1),
       extra=st.integers(1, 5), data=st.data())
def test_3d_matches_qlty(w, N, P, seed, extra, data):
    m = max(w)
    low = data.draw(st.integers(m // 4, 3 * m // 4))
    high = data.draw(st.integers(low, 3 * m // 4))
    x = torch.randn(N, 2, *(s + high + extra for s in w))
    got = fq.extract_patch_pairs_3d(x, w, P, (low, high), random_seed=seed)
    _same(got, pp3.extract_patch_pairs_3d(x, w, P, (low, high), random_seed=seed))
    o = fq.extract_overlapping_pixels_3d(*got)
    _same(o, pp3.extract_overlapping_pixels_3d(*got))
    assert torch.equal(o[0], o[1])


@settings(max_examples=min(settings().max_examples, 40), deadline=None)
@given(M=st.integers(0, 5), C=st.integers(1, 3), n=st.integers(2, 7), data=st.data())
def test_overlap_of_any_deltas_matches_qlty(M, C, n, data):
    """Displacements of any size (no overlap included) and rotations, 2D and 3D."""
    d2 = torch.tensor(data.draw(st.lists(st.tuples(*[st.integers(-n - 1, n + 1)] * 2),
                                         min_size=M, max_size=M)), dtype=torch.float32)
    rot = torch.tensor(data.draw(st.lists(st.integers(0, 7), min_size=M, max_size=M)))
    p1, p2 = torch.randn(M, C, n, n), torch.randn(M, C, n, n)
    d2 = d2.view(M, 2)
    _same(fq.extract_overlapping_pixels(p1, p2, d2, rot),
          pp2.extract_overlapping_pixels(p1, p2, d2, rot))
    d3 = torch.tensor(data.draw(st.lists(st.tuples(*[st.integers(-n - 1, n + 1)] * 3),
                                         min_size=M, max_size=M)), dtype=torch.float32)
    q1, q2 = torch.randn(M, C, n, n + 1, n + 2), torch.randn(M, C, n, n + 1, n + 2)
    _same(fq.extract_overlapping_pixels_3d(q1, q2, d3.view(M, 3)),
          pp3.extract_overlapping_pixels_3d(q1, q2, d3.view(M, 3)))


def test_global_rng_matches_qlty():
    x = torch.randn(2, 1, 40, 50)
    torch.manual_seed(7)
    got = fq.extract_patch_pairs(x, (12, 12), 9, (3, 9), rotation_choices=[0, 1, 2, 3])
    after = torch.rand(1)
    torch.manual_seed(7)
    want = pp2.extract_patch_pairs(x, (12, 12), 9, (3, 9), rotation_choices=[0, 1, 2, 3])
    _same(got, want)
    assert torch.equal(after, torch.rand(1))  # the global RNG advanced by the same draws


def test_fallback_draw_matches_qlty():
    """No integer displacement has |d| in [5.01, 5.09]: qlty's polar fallback draw."""
    x = torch.randn(1, 1, 30, 30)
    _same(fq.extract_patch_pairs(x, (8, 8), 3, (5.01, 5.09), random_seed=3),
          pp2.extract_patch_pairs(x, (8, 8), 3, (5.01, 5.09), random_seed=3))


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("dtype", [torch.float16, torch.int32, torch.bool])
def test_dtype_and_device_kept(device, dtype):
    x = (torch.rand(2, 3, 24, 20, device=device) * 5).to(dtype)
    p1, p2, d, r = fq.extract_patch_pairs(x, (8, 8), 4, (2, 6), random_seed=1,
                                          rotation_choices=[1])
    assert p1.dtype == dtype and p1.device == x.device and d.dtype == torch.float32
    o1, o2 = fq.extract_overlapping_pixels(p1, p2, d, r)
    assert o1.device == x.device and torch.equal(o1, o2)


def test_gradients_flow():
    x = torch.randn(1, 2, 20, 20, requires_grad=True)
    p1, p2, d, r = fq.extract_patch_pairs(x, (8, 8), 3, (2, 6), random_seed=0)
    o1, o2 = fq.extract_overlapping_pixels(p1, p2, d, r)
    (o1.sum() + p2.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_errors():
    x = torch.randn(1, 1, 30, 30)
    with pytest.raises(ValueError, match="square window"):  # qlty: a shape RuntimeError
        fq.extract_patch_pairs(x, (8, 12), 2, (3, 9), rotation_choices=[1])
    with pytest.raises(ValueError, match="delta_range must satisfy"):
        fq.extract_patch_pairs(x, (8, 8), 2, (0, 7))
    with pytest.raises(ValueError, match="too small"):
        fq.extract_patch_pairs(torch.randn(1, 1, 10, 10), (8, 8), 2, (2, 6))
    with pytest.raises(ValueError, match="4D"):
        fq.extract_patch_pairs(torch.randn(1, 30, 30), (8, 8), 2, (2, 6))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fq.extract_patch_pairs(x.numpy(), (8, 8), 2, (2, 6))
    p = torch.randn(2, 1, 6, 8)
    with pytest.raises(ValueError, match="square patches"):
        fq.extract_overlapping_pixels(p, p, torch.zeros(2, 2), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="must match"):
        fq.extract_overlapping_pixels(p, p, torch.zeros(3, 2))


@pytest.mark.parametrize("seed", [None, 11])
def test_replayed_draws_across_blocks_match_qlty(monkeypatch, seed):
    """The CPU draws are replayed from blocks of raw generator outputs: many small blocks (a
    refill every few pairs) still give qlty's numbers and leave the global RNG where qlty's
    calls leave it."""
    from fastquilt.compat import pair_sampling

    monkeypatch.setattr(pair_sampling, "_BLOCK_MAX", 64)
    x = torch.randn(3, 2, 48, 40)
    args = (x, (12, 12), 25, (3, 9))
    kw = dict(random_seed=seed, rotation_choices=[0, 1, 2, 3], return_positions=True)
    torch.manual_seed(5)
    got = fq.extract_patch_pairs(*args, **kw)
    after = torch.rand(3)
    torch.manual_seed(5)
    want = pp2.extract_patch_pairs(*args, **kw)
    _same(got, want)
    assert torch.equal(after, torch.rand(3))
