"""Property tests over random shapes, windows, steps, borders, weights and dtypes."""

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastquilt as fq

from .. import reference as ref


@st.composite
def geometries(draw, allow_gaps=False):
    D = draw(st.sampled_from([2, 3]))
    hi = 40 if D == 2 else 16
    spatial, window, step = [], [], []
    for _ in range(D):
        S = draw(st.integers(1, hi))
        w = draw(st.integers(1, S))
        s = draw(st.integers(1, w + (3 if allow_gaps else 0)))
        spatial.append(S), window.append(w), step.append(s)
    border = draw(st.one_of(st.none(), st.integers(0, max(0, (min(window) - 1) // 2))))
    return tuple(spatial), tuple(window), tuple(step), border


WEIGHTS = st.sampled_from([None, "flat", "gaussian", "hann", "linear"])
FLOATS = st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64])


@given(geo=geometries(), weight=WEIGHTS, dtype=FLOATS, N=st.integers(1, 3), C=st.integers(1, 3),
       bw=st.floats(0.0, 1.0))
def test_round_trip_identity(geo, weight, dtype, N, C, bw):
    spatial, window, step, border = geo
    q = fq.Quilt(spatial, window, step, border=border, border_weight=bw, weight=weight)
    x = torch.randn(N, C, *spatial, dtype=torch.float64).to(dtype)
    p = q.unstitch(x)
    assert p.shape == (N * q.num_windows, C, *window) and p.dtype == dtype
    mean, ws = q.stitch(p)
    assert mean.dtype == dtype and not torch.isnan(mean).any()
    tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-6, torch.float64: 1e-12}
    torch.testing.assert_close(mean.double(), x.double(), rtol=tol[dtype], atol=tol[dtype])


@given(geo=geometries(allow_gaps=True), weight=WEIGHTS, N=st.integers(1, 2))
def test_stitch_equals_float64_reference_with_gaps(geo, weight, N):
    spatial, window, step, border = geo
    q = fq.Quilt(spatial, window, step, border=border, weight=weight, allow_gaps=True,
                 fill_value=0.5)
    p = torch.randn(N * q.num_windows, 2, *window, dtype=torch.float64)
    mean, ws = q.stitch(p)
    want, want_ws = ref.stitch(p.numpy(), spatial, window, step, q.weight.double().numpy(), 0.5)
    np.testing.assert_allclose(mean.numpy(), want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ws.numpy(), want_ws, rtol=1e-10, atol=1e-12)


@given(geo=geometries(), M=st.integers(0, 12), seed=st.integers(0, 2**16), weighted=st.booleans())
def test_adjoint_identity_random_origins(geo, M, seed, weighted):
    spatial, window, _, _ = geo
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2, *spatial, generator=gen, dtype=torch.float64)
    cols = [torch.randint(0, 2, (M,), generator=gen)]
    cols += [torch.randint(0, S - w + 1, (M,), generator=gen) for S, w in zip(spatial, window)]
    org = torch.stack(cols, 1).reshape(M, 1 + len(spatial))
    p = torch.randn(M, 2, *window, generator=gen, dtype=torch.float64)
    w = torch.rand(window, generator=gen, dtype=torch.float64) if weighted else None
    g = fq.gather_windows(x, org, window, weight=w)
    np.testing.assert_array_equal(
        fq.gather_windows(x, org, window).numpy(), ref.gather(x.numpy(), org.numpy(), window))
    acc, _ = fq.scatter_add_windows(p, org, spatial, 2, weight=w)
    lhs, rhs = (g * p).sum().item(), (x * acc).sum().item()
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


@given(geo=geometries(), seed=st.integers(0, 2**16), dtype=FLOATS)
def test_deterministic_across_thread_counts(geo, seed, dtype):
    spatial, window, step, border = geo
    q = fq.Quilt(spatial, window, step, border=border, weight="gaussian")
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(2 * q.num_windows, 2, *window, generator=gen).to(dtype)
    org = q.positions(2)
    w = q.weight_for(dtype, torch.device("cpu"))
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = q.stitch(p)[0], fq.scatter_add_windows(p, org, spatial, 2, weight=w)[0]
        torch.set_num_threads(2)
        b = q.stitch(p)[0], fq.scatter_add_windows(p, org, spatial, 2, weight=w)[0]
    finally:
        torch.set_num_threads(old)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@given(geo=geometries(allow_gaps=True), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 2**31 - 1))
def test_cpu_weight_sums_equal_every_row_summed(geo, dtype, seed):
    """The CPU weight sums reuse one summed row per class of output rows; on any grid they
    equal, bit for bit, every row summed in the kernels' order (tests/reference.py), and so do
    grid_normalize_ and the grid stitch without a hint."""
    spatial, window, step, _ = geo
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(window, generator=gen, dtype=dtype)
    w[(0,) * len(window)] = 0  # a zero weight: voxels only it covers stay uncovered
    inv = torch.from_numpy(ref.grid_weight_sum_rows(w.numpy(), spatial, step, inverse=True))
    assert torch.equal(fq.grid_weight_sum(w, spatial, step, inverse=True), inv)
    acc = torch.randn(2, 2, *spatial, generator=gen, dtype=dtype)
    assert torch.equal(fq.grid_normalize_(acc.clone(), w, step, 1.5),
                       torch.where(inv == 0, 1.5, acc * inv))
    p = torch.randn(len(ref.origins(spatial, window, step, 1)), 2, *window, generator=gen,
                    dtype=dtype)
    assert torch.equal(fq.stitch_grid(p, spatial, step, weight=w),
                       fq.stitch_grid(p, spatial, step, weight=w, inv_weight_sum=inv))
