"""The custom ops against float64 references; out=/in-place forms; adjointness; determinism;
opcheck, gradcheck and gradgradcheck."""

import numpy as np
import pytest
import torch

import fastquilt as fq
from fastquilt import ops as _ops

from .. import reference as ref
from ..conftest import requires_cuda
from .test_threads import with_threads

FQ = torch.ops.fastquilt

ALL_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8,
              torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool]
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 1e-5, torch.float64: 1e-12}

CASES = [  # spatial, window, step
    ((20, 23), (8, 6), (4, 5)),
    ((9, 10, 11), (4, 5, 3), (3, 2, 3)),
    ((13, 7), (13, 3), (1, 3)),
    ((6, 6, 6), (6, 6, 6), (6, 6, 6)),
]


def _rand(shape, dtype, gen):
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_floating_point:
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(max(info.min, -100), min(info.max, 100), shape, generator=gen,
                         dtype=dtype)


def _random_origins(spatial, window, N, M, gen):
    cols = [torch.randint(0, N, (M,), generator=gen)]
    cols += [torch.randint(0, S - w + 1, (M,), generator=gen) for S, w in zip(spatial, window)]
    return torch.stack(cols, 1)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_gather_matches_reference_all_dtypes(case, dtype, device):
    spatial, window, _ = case
    gen = torch.Generator().manual_seed(0)
    x = _rand((3, 2, *spatial), dtype, gen)
    org = _random_origins(spatial, window, 3, 17, gen)
    got = fq.gather_windows(x.to(device), org.to(device), window)
    assert got.dtype == dtype and got.shape == (17, 2, *window)
    want = ref.gather(x.double().numpy() if dtype != torch.bool else x.numpy(), org.numpy(),
                      window)
    np.testing.assert_array_equal(got.cpu().double().numpy(), want)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_weighted_gather_and_into(case, dtype, device):
    spatial, window, _ = case
    gen = torch.Generator().manual_seed(1)
    x = _rand((2, 3, *spatial), dtype, gen).to(device)
    org = _random_origins(spatial, window, 2, 9, gen).to(device)
    w = torch.rand(window, generator=gen, dtype=torch.float64).to(_ops.acc_dtype(dtype)).to(device)
    got = fq.gather_windows(x, org, window, weight=w)
    want = ref.gather(x.cpu().double().numpy(), org.cpu().numpy(), window, w.cpu().double().numpy())
    np.testing.assert_allclose(got.cpu().double().numpy(), want, rtol=TOL[dtype], atol=TOL[dtype])
    out = torch.full_like(got, 7)
    res = fq.gather_windows_into(x, org, out, weight=w)
    assert res.data_ptr() == out.data_ptr()
    assert torch.equal(out, got)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_scatter_add_matches_reference(case, weighted, dtype, device):
    spatial, window, _ = case
    gen = torch.Generator().manual_seed(2)
    p = _rand((23, 2, *window), dtype, gen).to(device)
    org = _random_origins(spatial, window, 3, 23, gen).to(device)
    w = None
    if weighted:
        w = torch.rand(window, generator=gen, dtype=torch.float64) + 0.1
        w = w.to(_ops.acc_dtype(dtype)).to(device)
    acc, ws = fq.scatter_add_windows(p, org, spatial, 3, weight=w)
    assert acc.dtype == _ops.acc_dtype(dtype) and ws.dtype == acc.dtype
    want_acc, want_ws = ref.scatter(p.cpu().double().numpy(), org.cpu().numpy(), spatial, 3,
                                    None if w is None else w.cpu().double().numpy())
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(acc.cpu().double().numpy(), want_acc, rtol=tol, atol=tol)
    np.testing.assert_allclose(ws.cpu().double().numpy(), want_ws, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_scatter_add_inplace_streams_into_existing(dtype, device):
    spatial, window = (9, 10, 11), (4, 5, 3)
    gen = torch.Generator().manual_seed(3)
    p = _rand((30, 2, *window), dtype, gen).to(device)
    org = _random_origins(spatial, window, 2, 30, gen).to(device)
    full_acc, full_ws = fq.scatter_add_windows(p, org, spatial, 2)
    adt = _ops.acc_dtype(dtype)
    acc = torch.zeros((2, 2, *spatial), dtype=adt, device=device)
    ws = torch.zeros((2, *spatial), dtype=adt, device=device)
    for lo in (20, 0, 10):  # any order
        fq.scatter_add_windows_(p[lo:lo + 10], org[lo:lo + 10], acc, ws)
    torch.testing.assert_close(acc, full_acc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ws, full_ws)
    fq.scatter_add_windows_(p, org, acc, None)  # weight_sum is optional
    torch.testing.assert_close(acc, 2 * full_acc, rtol=1e-5, atol=1e-5)


GAP_CASES = [((40, 33), (8, 6), (10, 9)), ((12, 9, 10), (3, 4, 2), (5, 4, 3))]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", CASES + GAP_CASES)
def test_stitch_grid_matches_reference(case, dtype, device):
    spatial, window, step = case  # the last two leave gaps (step > window)
    gen = torch.Generator().manual_seed(4)
    nw = len(ref.origins(spatial, window, step, 1))
    p = _rand((2 * nw, 3, *window), dtype, gen).to(device)
    w = (torch.rand(window, generator=gen, dtype=torch.float64) + 0.05).to(_ops.acc_dtype(dtype))
    mean = fq.stitch_grid(p, spatial, step, weight=w.to(device), fill_value=-3.0)
    assert mean.dtype == dtype and mean.shape == (2, 3, *spatial)
    want, _ = ref.stitch(p.cpu().double().numpy(), spatial, window, step, w.double().numpy(),
                         fill=-3.0)
    np.testing.assert_allclose(mean.cpu().double().numpy(), want, rtol=TOL[dtype],
                               atol=TOL[dtype])
    out = torch.empty_like(mean)
    fq.stitch_grid_into(p, step, out, weight=w.to(device), fill_value=-3.0)
    assert torch.equal(out, mean)
    # with the precomputed 1 / weight-sum hint (what Quilt passes on the CPU)
    inv = fq.grid_weight_sum(w.to(device), spatial, step, inverse=True)
    hinted = fq.stitch_grid(p, spatial, step, weight=w.to(device), fill_value=-3.0,
                            inv_weight_sum=inv)
    np.testing.assert_allclose(hinted.cpu().double().numpy(), want, rtol=TOL[dtype],
                               atol=TOL[dtype])
    with pytest.raises(ValueError, match="inv_weight_sum must be a contiguous tensor of shape"):
        fq.stitch_grid(p, spatial, step, weight=w.to(device), inv_weight_sum=inv[..., :1])


def test_adjoint_identity():
    """<gather(x), p> == <x, scatter(p)> in float64, with and without a weight."""
    gen = torch.Generator().manual_seed(5)
    for spatial, window, _ in CASES:
        x = torch.randn((2, 3, *spatial), generator=gen, dtype=torch.float64)
        org = _random_origins(spatial, window, 2, 25, gen)
        p = torch.randn((25, 3, *window), generator=gen, dtype=torch.float64)
        for w in (None, torch.rand(window, generator=gen, dtype=torch.float64)):
            lhs = (fq.gather_windows(x, org, window, weight=w) * p).sum()
            rhs = (x * fq.scatter_add_windows(p, org, spatial, 2, weight=w)[0]).sum()
            assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cpu_results_bit_identical_for_1_and_2_threads(dtype):
    # qlty's race case: Y = X = 250, window 96, step 32, border 4 (stepped-back last window).
    q = fq.Quilt((250, 250), 96, 32, border=4, border_weight=0.1)
    gen = torch.Generator().manual_seed(6)
    p = torch.randn((2 * q.num_windows, 2, 96, 96), generator=gen).to(dtype)
    org = q.positions(2)
    w = q.weight_for(dtype, torch.device("cpu"))

    def run():
        return (q.stitch(p)[0], fq.scatter_add_windows(p, org, (250, 250), 2, weight=w)[0])

    a = with_threads(1, run)
    for _ in range(3):
        b = with_threads(2, run)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _samples(dtype=torch.float64, requires_grad=False, device="cpu"):
    gen = torch.Generator().manual_seed(7)
    out = []
    for spatial, window, step in [((7, 8), (3, 4), (2, 3)), ((5, 6, 5), (3, 3, 2), (2, 2, 2))]:
        x = torch.randn((2, 2, *spatial), generator=gen, dtype=dtype).to(device)
        org = torch.as_tensor(ref.origins(spatial, window, step, 2)).to(device)
        w = (torch.rand(window, generator=gen, dtype=dtype) + 0.5).to(device)
        p = torch.randn((org.shape[0], 2, *window), generator=gen, dtype=dtype).to(device)
        out.append((spatial, window, step, x.requires_grad_(requires_grad), org,
                    w.requires_grad_(requires_grad), p.requires_grad_(requires_grad)))
    return out


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad, device):
    for spatial, window, step, x, org, w, p in _samples(requires_grad=requires_grad,
                                                        device=device):
        torch.library.opcheck(FQ.gather_windows.default, (x, org, w, list(window)))
        torch.library.opcheck(FQ.gather_windows.default, (x, org, None, list(window)))
        torch.library.opcheck(FQ.scatter_add_windows.default,
                              (p, org, w, list(spatial), 2))
        torch.library.opcheck(FQ.stitch_grid.default,
                              (p, w.detach(), list(spatial), list(step), 0.0))
        inv = 1 / fq.grid_weight_sum(w.detach(), spatial, step)
        torch.library.opcheck(FQ.stitch_grid.default,
                              (p, w.detach(), list(spatial), list(step), 0.0, inv))
        with torch.no_grad():
            out = torch.empty((org.shape[0], 2, *window), dtype=x.dtype, device=device)
            torch.library.opcheck(FQ.gather_windows_into.default,
                                  (x.detach(), org, None, out))
            acc = torch.zeros((2, 2, *spatial), dtype=x.dtype, device=device)
            ws = torch.zeros((2, *spatial), dtype=x.dtype, device=device)
            torch.library.opcheck(FQ.scatter_add_windows_.default,
                                  (p.detach(), org, w.detach(), acc, ws))
            mean = torch.empty((2, 2, *spatial), dtype=x.dtype, device=device)
            torch.library.opcheck(FQ.stitch_grid_into.default,
                                  (p.detach(), w.detach(), list(step), 0.0, mean))


def test_opcheck_half_and_int():
    spatial, window = (7, 8), (3, 4)
    org = torch.as_tensor(ref.origins(spatial, window, (2, 3), 1))
    for dtype in (torch.float16, torch.bfloat16, torch.int32, torch.bool):
        x = torch.ones((1, 1, *spatial), dtype=dtype)
        torch.library.opcheck(FQ.gather_windows.default, (x, org, None, list(window)))
    p = torch.randn((org.shape[0], 1, *window)).half()
    torch.library.opcheck(FQ.scatter_add_windows.default, (p, org, None, list(spatial), 1))


def test_gradcheck_and_gradgradcheck(device):
    for spatial, window, step, x, org, w, p in _samples(requires_grad=True, device=device):
        f = lambda x, w: fq.gather_windows(x, org, window, weight=w)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x, w))
        assert torch.autograd.gradgradcheck(f, (x, w))
        g = lambda p, w: fq.scatter_add_windows(p, org, spatial, 2, weight=w)  # noqa: E731
        # (CUDA sums with atomics: equal to rounding, not bit for bit, run to run)
        assert torch.autograd.gradcheck(g, (p, w), nondet_tol=1e-12)
        assert torch.autograd.gradgradcheck(g, (p, w), nondet_tol=1e-12)
        h = lambda p: fq.stitch_grid(p, spatial, step, weight=w.detach())  # noqa: E731
        assert torch.autograd.gradcheck(h, (p,))
        assert torch.autograd.gradgradcheck(h, (p,))


def test_half_gradients_have_patch_dtype():
    x = torch.randn(1, 1, 8, 8).half().requires_grad_()
    org = torch.as_tensor(ref.origins((8, 8), (4, 4), (2, 2), 1))
    p = fq.gather_windows(x, org, (4, 4))
    acc, _ = fq.scatter_add_windows(p, org, (8, 8), 1)
    acc.sum().backward()
    assert x.grad.dtype == torch.float16
    counts = fq.scatter_add_windows(torch.ones_like(p), org, (8, 8), 1)[1]
    assert torch.equal(x.grad.float(), counts.unsqueeze(1))


# ---- bad input: each message names the argument -----------------------------------------
def test_op_errors():
    x = torch.randn(1, 1, 8, 8)
    org = torch.tensor([[0, 0, 0]])
    with pytest.raises(TypeError, match="origins must be int64"):
        fq.gather_windows(x, org.int(), (4, 4))
    with pytest.raises(ValueError, match=r"origins must have shape \(M, 3\)"):
        fq.gather_windows(x, torch.tensor([[0, 0]]), (4, 4))
    with pytest.raises(ValueError, match="does not fit inside the image"):
        fq.gather_windows(x, torch.tensor([[0, 5, 0]]), (4, 4))
    with pytest.raises(ValueError, match="names image 1"):
        fq.gather_windows(x, torch.tensor([[1, 0, 0]]), (4, 4))
    with pytest.raises(ValueError, match="window .* is larger than the image"):
        fq.gather_windows(x, org, (9, 4))
    with pytest.raises(ValueError, match="2 or 3 sizes"):
        fq.gather_windows(x, org, (4,))
    with pytest.raises(ValueError, match="input must be"):
        fq.gather_windows(x[0], org, (4, 4))
    with pytest.raises(TypeError, match="weight must be Float"):
        fq.gather_windows(x, org, (4, 4), weight=torch.ones(4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="weight must have the window's shape"):
        fq.gather_windows(x, org, (4, 4), weight=torch.ones(4, 5))
    with pytest.raises(TypeError, match="needs floating-point data"):
        fq.gather_windows(x.int(), org, (4, 4), weight=torch.ones(4, 4))
    with pytest.raises(TypeError, match="patches must be floating point"):
        fq.scatter_add_windows(torch.ones(1, 1, 4, 4, dtype=torch.int32), org, (8, 8), 1)
    with pytest.raises(ValueError, match="1 patches but 2 origins"):
        fq.scatter_add_windows(torch.ones(1, 1, 4, 4), org.repeat(2, 1), (8, 8), 1)
    with pytest.raises(TypeError, match="acc must be Float"):
        fq.scatter_add_windows_(torch.ones(1, 1, 4, 4), org, torch.zeros(1, 1, 8, 8).double())
    with pytest.raises(ValueError, match="out must have shape"):
        fq.gather_windows_into(x, org, torch.empty(2, 1, 4, 4))
    with pytest.raises(ValueError, match="not a whole number of images"):
        fq.stitch_grid(torch.ones(3, 1, 4, 4), (8, 8), (4, 4))
    with pytest.raises(ValueError, match="step must be >= 1"):
        fq.stitch_grid(torch.ones(4, 1, 4, 4), (8, 8), (0, 4))


def test_written_buffers_must_not_share_memory_with_inputs(device):
    # The kernels read and write concurrently: an out that aliases an input would hold neither
    # the old nor the new values, so it is refused (views of disjoint parts of one buffer are
    # fine).
    q = fq.Quilt((16, 16), 8, 4)
    org = q.positions(1).to(device)
    buf = torch.randn(4096, device=device)
    x = buf[:512].view(1, 2, 16, 16)
    with pytest.raises(ValueError, match="out shares memory with input"):
        fq.gather_windows_into(x, org, buf[256:256 + 9 * 2 * 64].view(9, 2, 8, 8))
    p = fq.gather_windows_into(x, org, buf[512:512 + 9 * 2 * 64].view(9, 2, 8, 8))
    assert torch.equal(p, fq.gather_windows(x, org, (8, 8)))
    with pytest.raises(ValueError, match="out shares memory with patches"):
        fq.stitch_grid_into(p, (4, 4), p.reshape(-1)[:512].view(1, 2, 16, 16))
    p1 = p[:, :1].contiguous()
    w_in = torch.ones(512, device=device)  # a weight and a buffer written, in one storage
    w, written = w_in[:64].view(8, 8), w_in[:256].view(1, 1, 16, 16)
    with pytest.raises(ValueError, match="out shares memory with weight"):
        fq.stitch_grid_into(p1, (4, 4), written, w)
    with pytest.raises(ValueError, match="acc shares memory with weight"):
        fq.scatter_add_windows_(p1, org, written, None, w)
    acc = torch.zeros(1, 2, 16, 16, device=device)
    with pytest.raises(ValueError, match="weight_sum shares memory with acc"):
        fq.scatter_add_windows_(p, org, acc, acc[:, 0])
    with pytest.raises(ValueError, match="acc shares memory with patches"):
        fq.scatter_add_windows_(p, org, p.reshape(-1)[:512].view(1, 2, 16, 16))
    with pytest.raises(ValueError, match="weight_sum shares memory with patches"):
        fq.scatter_add_windows_(p, org, acc, p.reshape(-1)[:256].view(1, 16, 16))
    ws = w_in[256:512].view(1, 16, 16).zero_()  # disjoint from w: allowed
    fq.scatter_add_windows_(p1, org, torch.zeros(1, 1, 16, 16, device=device), ws,
                            w_in[:64].view(8, 8))
    assert torch.equal(ws, fq.grid_weight_sum(torch.ones(8, 8, device=device), (16, 16),
                                              (4, 4))[None])


@pytest.mark.parametrize("case", CASES + [((40, 33), (8, 6), (10, 9))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grid_weight_sum_matches_reference(case, dtype, device):
    spatial, window, step = case
    w = torch.rand(window, generator=torch.Generator().manual_seed(8), dtype=dtype) + 0.1
    got = fq.grid_weight_sum(w.to(device), spatial, step)
    _, want = ref.scatter(np.zeros((len(ref.origins(spatial, window, step, 1)), 0, *window)),
                          ref.origins(spatial, window, step, 1), spatial, 1, w.double().numpy())
    np.testing.assert_allclose(got.cpu().double().numpy(), want[0], rtol=1e-6)
    # inverse=True: 1 / sum in the same pass, 0 where uncovered (the gaps case has some)
    inv = fq.grid_weight_sum(w.to(device), spatial, step, inverse=True).cpu().double().numpy()
    with np.errstate(divide="ignore"):
        want_inv = np.where(want[0] > 0, 1 / want[0], 0.0)
    np.testing.assert_allclose(inv, want_inv, rtol=1e-6)
    assert torch.equal(fq.grid_weight_sum(w.to(device), spatial, step, inverse=True),
                       torch.where(got > 0, 1 / got, torch.zeros_like(got)))
    torch.library.opcheck(FQ.grid_weight_sum.default, (w, list(spatial), list(step)))
    torch.library.opcheck(FQ.grid_weight_sum.default,
                          (w, list(spatial), list(step), True))
    with pytest.raises(ValueError, match="step must be >= 1"):
        fq.grid_weight_sum(w, spatial, [0] * len(step))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grid_weight_sum_inverse_of_tiny_and_zero_sums(dtype, device):
    """Weights of 0 leave voxels uncovered (inverse 0); sums below the smallest normal number
    are clamped to it, so the inverse stays finite."""
    tiny = torch.finfo(dtype).tiny
    w = torch.full((4, 4), tiny / 4, dtype=dtype)
    w[:, :2] = 0
    inv = fq.grid_weight_sum(w.to(device), (8, 8), (4, 4), inverse=True).cpu()
    assert torch.isfinite(inv).all()
    assert (inv[:, [0, 1, 4, 5]] == 0).all()
    assert torch.equal(inv[:, [2, 3, 6, 7]], torch.full((8, 4), 1 / tiny, dtype=dtype))


@pytest.mark.parametrize("case", CASES + [((40, 33), (8, 6), (10, 9)),  # gaps
                                          ((60, 70, 30), (8, 8, 8), (4, 4, 4))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fill_value", [0.0, -3.5])
def test_grid_normalize_is_multiplying_by_the_inverse_weight_sum(case, dtype, fill_value,
                                                                  device):
    """grid_normalize_ (one pass, no (*S) buffer; CPU and CUDA kernels) gives exactly the numbers of
    acc * grid_weight_sum(inverse=True) with fill_value where that is 0 (the sliding window's
    normalisation before), weights of 0 included."""
    spatial, window, step = case
    gen = torch.Generator().manual_seed(9)
    w = torch.rand(window, generator=gen, dtype=dtype) + 0.1
    w[..., :1] = 0  # uncovered voxels at the image's first column
    acc = torch.randn((2, 3, *spatial), generator=gen, dtype=dtype).to(device)
    w = w.to(device)
    inv = fq.grid_weight_sum(w, spatial, step, inverse=True)
    want = torch.where(inv == 0, torch.tensor(fill_value, dtype=dtype, device=device), acc * inv)
    got = acc.clone()
    assert fq.grid_normalize_(got, w, step, fill_value) is got
    assert torch.equal(got, want)
    torch.library.opcheck(FQ.grid_normalize_.default,
                          (acc.clone(), w, list(step), fill_value))


def test_grid_normalize_errors():
    w = torch.ones(4, 4)
    with pytest.raises(ValueError, match=r"acc must be \(N, C, \*S\) for a weight of 2 axes"):
        fq.grid_normalize_(torch.zeros(8, 8), w, (2, 2))
    with pytest.raises(TypeError, match="acc and weight must have one dtype"):
        fq.grid_normalize_(torch.zeros(1, 1, 8, 8, dtype=torch.float64), w, (2, 2))
    with pytest.raises(ValueError, match="acc must be contiguous"):
        fq.grid_normalize_(torch.zeros(1, 1, 8, 16)[..., ::2], w, (2, 2))
    with pytest.raises(ValueError, match="step must be >= 1"):
        fq.grid_normalize_(torch.zeros(1, 1, 8, 8), w, (0, 2))
    with pytest.raises(ValueError, match=r"acc \(cpu\) and weight \(meta\) must be on one"):
        fq.grid_normalize_(torch.zeros(1, 1, 8, 8), w.to("meta"), (2, 2))
    buf = torch.ones(1, 1, 4, 4)
    with pytest.raises(ValueError, match="acc shares memory with weight"):
        fq.grid_normalize_(buf, buf[0, 0], (2, 2))


# ---- the kernels' code paths, on every device -------------------------------------------
# Grids chosen for the GPU kernels' paths (vector accesses, the stitch's fast-path shapes,
# split rows); on the CPU they are more random grids.
KERNEL_PATH_CASES = [
    ((37, 45), (16, 12), (7, 5)),
    ((40, 33), (8, 6), (10, 9)),  # gaps
    ((19, 23, 21), (8, 8, 8), (5, 6, 4)),
    ((33, 34, 35), (16, 13, 9), (8, 8, 8)),  # odd widths: unaligned rows
    ((24, 16, 40), (8, 8, 16), (4, 8, 8)),  # rows of whole 16-byte vectors: vector paths
    ((12, 10, 128), (8, 8, 64), (4, 2, 32)),  # stitch_grid's aligned fast path, every dtype
    ((16, 96), (8, 32), (8, 64)),  # aligned fast path with gaps along x (fill)
    ((12, 10, 136), (8, 8, 64), (4, 2, 32)),  # fast path left of the last window: 16-bit types
    ((10, 132), (8, 64), (4, 32)),  # the same for 32-bit types
    ((10, 96), (6, 32), (3, 16)),  # 32-byte chunks: the first shape for 16-bit types
    ((9, 48), (6, 24), (3, 8)),  # one 16-byte vector per thread for 16-bit types
    ((9, 40), (6, 12), (3, 4)),  # one 16-byte vector per thread for 32-bit types
    ((9, 22), (6, 6), (3, 2)),  # the same for 64-bit types
]
PATH_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32,
               torch.uint8, torch.bool]


def _at_odd_offset(t):
    """A contiguous copy of t that starts one element into its storage: a view whose data
    pointer is not 16-byte aligned, like x[1:] of an odd-sized batch."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    v = buf[1:].view(t.shape)
    v.copy_(t)
    return v


@pytest.mark.parametrize("dtype", PATH_DTYPES)
@pytest.mark.parametrize("case", KERNEL_PATH_CASES)
def test_gather_kernel_paths(case, dtype, device):
    spatial, window, step = case
    gen = torch.Generator().manual_seed(0)
    x = _rand((2, 3, *spatial), dtype, gen)
    org = torch.as_tensor(ref.origins(spatial, window, step, 2))
    got = fq.gather_windows(x.to(device), org.to(device), window)
    x64 = x.numpy() if dtype == torch.bool else x.double().numpy()
    np.testing.assert_array_equal(got.cpu().double().numpy(), ref.gather(x64, org.numpy(), window))
    if dtype.is_floating_point:
        w = torch.rand(window, generator=gen).to(_ops.acc_dtype(dtype))
        got = fq.gather_windows(x.to(device), org.to(device), window, weight=w.to(device))
        want = ref.gather(x64, org.numpy(), window, w.double().numpy())
        np.testing.assert_allclose(got.cpu().double().numpy(), want, rtol=TOL[dtype],
                                   atol=TOL[dtype])
        out = torch.empty_like(got)
        fq.gather_windows_into(x.to(device), org.to(device), out, weight=w.to(device))
        assert torch.equal(out, got)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", KERNEL_PATH_CASES)
def test_scatter_and_stitch_kernel_paths(case, dtype, device):
    spatial, window, step = case
    gen = torch.Generator().manual_seed(1)
    org = torch.as_tensor(ref.origins(spatial, window, step, 2))
    p = _rand((org.shape[0], 3, *window), dtype, gen)
    w = (torch.rand(window, generator=gen) + 0.1).to(_ops.acc_dtype(dtype))
    p_d, org_d, w_d = p.to(device), org.to(device), w.to(device)
    p64, w64 = p.double().numpy(), w.double().numpy()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    acc, ws = fq.scatter_add_windows(p_d, org_d, spatial, 2, weight=w_d)
    want_acc, want_ws = ref.scatter(p64, org.numpy(), spatial, 2, w64)
    np.testing.assert_allclose(acc.cpu().double().numpy(), want_acc, rtol=tol, atol=tol)
    np.testing.assert_allclose(ws.cpu().double().numpy(), want_ws, rtol=tol, atol=tol)
    _, ws0 = fq.scatter_add_windows(p_d[:, :0], org_d, spatial, 2, weight=w_d)  # no channels
    np.testing.assert_allclose(ws0.cpu().double().numpy(), want_ws, rtol=tol, atol=tol)
    mean = fq.stitch_grid(p_d, spatial, step, weight=w_d, fill_value=-1.0)
    assert mean.dtype == dtype
    want, _ = ref.stitch(p64, spatial, window, step, w64, fill=-1.0)
    np.testing.assert_allclose(mean.cpu().double().numpy(), want, rtol=TOL[dtype],
                               atol=TOL[dtype])
    # deterministic: bit-identical run to run
    assert torch.equal(mean, fq.stitch_grid(p_d, spatial, step, weight=w_d, fill_value=-1.0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64, torch.uint8])
def test_views_at_odd_offsets(dtype, device):
    """Inputs, patches and outputs that are views at an odd element offset: the kernels must
    not use 16-byte vector accesses on them (on the GPU a misaligned address aborts the
    context)."""
    spatial, window, step = (24, 16, 40), (8, 8, 16), (4, 8, 8)
    gen = torch.Generator().manual_seed(3)
    x = _rand((2, 3, *spatial), dtype, gen)
    org = torch.as_tensor(ref.origins(spatial, window, step, 2))
    org_d = org.to(device)
    want = fq.gather_windows(x, org, window)
    x_v = _at_odd_offset(x.to(device))
    assert x_v.data_ptr() % 16 != 0
    assert torch.equal(fq.gather_windows(x_v, org_d, window).cpu(), want)
    out_v = _at_odd_offset(torch.empty_like(want, device=device))
    fq.gather_windows_into(x_v, org_d, out_v)
    assert torch.equal(out_v.cpu(), want)
    if not dtype.is_floating_point:
        return
    tol = dict(rtol=8e-3, atol=8e-3) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-6)
    p_v = _at_odd_offset(want.to(device))
    mean_cpu = fq.stitch_grid(want, spatial, step)
    torch.testing.assert_close(fq.stitch_grid(p_v, spatial, step).cpu().float(),
                               mean_cpu.float(), **tol)
    mean_v = _at_odd_offset(torch.empty_like(mean_cpu, device=device))
    fq.stitch_grid_into(p_v, step, mean_v)
    torch.testing.assert_close(mean_v.cpu().float(), mean_cpu.float(), **tol)
    acc_cpu, ws_cpu = fq.scatter_add_windows(want, org, spatial, 2)
    acc_v = _at_odd_offset(torch.zeros_like(acc_cpu, device=device))
    ws_v = _at_odd_offset(torch.zeros_like(ws_cpu, device=device))
    fq.scatter_add_windows_(p_v, org_d, acc_v, ws_v)
    torch.testing.assert_close(acc_v.cpu(), acc_cpu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ws_v.cpu(), ws_cpu)


def test_deterministic_mode_is_bit_identical(device):
    """Under torch.use_deterministic_algorithms(True) the scatter-add is bit-identical run to
    run (the CUDA op adds sets of pairwise disjoint windows, one launch each; the CPU op is
    deterministic always), for a grid, for windows in random order, without channels (weight
    sum only), and through sliding_window; and equal to the float64 reference within
    rounding."""
    spatial, window, step = (40, 36, 44), (16, 12, 16), (6, 5, 7)
    gen = torch.Generator().manual_seed(5)
    org = torch.as_tensor(ref.origins(spatial, window, step, 2))
    perm = torch.randperm(org.shape[0], generator=gen)
    p = torch.randn((org.shape[0], 2, *window), generator=gen)
    w = torch.rand(window, generator=gen) + 0.1
    x = torch.randn(1, 1, 48, 50, 46, generator=gen)

    def net(t):  # channel change, no library kernels of its own that could be nondeterministic
        return torch.cat([t, 2 * t + 1], 1)

    def scatter(pp, oo):
        return fq.scatter_add_windows(pp.to(device), oo.to(device), spatial, 2,
                                      weight=w.to(device))

    torch.use_deterministic_algorithms(True)
    try:
        grid = [scatter(p, org) for _ in range(3)]
        shuffled = [scatter(p[perm], org[perm]) for _ in range(3)]
        no_channels = [scatter(p[:, :0], org)[1] for _ in range(2)]
        slid = [fq.sliding_window(net, x.to(device), 16, 12, batch_size=5) for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(False)
    for runs in (grid, shuffled):
        for acc, ws in runs[1:]:
            assert torch.equal(acc, runs[0][0]) and torch.equal(ws, runs[0][1])
    assert torch.equal(no_channels[0], no_channels[1])
    assert torch.equal(slid[0], slid[1])
    want_acc, want_ws = ref.scatter(p.double().numpy(), org.numpy(), spatial, 2,
                                    w.double().numpy())
    for acc, ws in (grid[0], shuffled[0]):
        np.testing.assert_allclose(acc.cpu().double().numpy(), want_acc, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ws.cpu().double().numpy(), want_ws, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(slid[0].cpu(), fq.sliding_window(net, x, 16, 12, 5),
                               rtol=1e-4, atol=1e-4)


@requires_cuda
def test_device_mismatch_errors():
    x = torch.randn(1, 1, 16, 16, device="cuda")
    with pytest.raises(ValueError, match="origins are on"):
        fq.gather_windows(x, torch.zeros(1, 3, dtype=torch.int64), (8, 8))
    with pytest.raises(ValueError, match="weight is on"):
        fq.gather_windows(x, torch.zeros(1, 3, dtype=torch.int64, device="cuda"), (8, 8),
                          weight=torch.ones(8, 8))
