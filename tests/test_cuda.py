"""CUDA ops against the CPU ops (every op, every dtype), autograd, opcheck and compile on the
GPU. Skipped only when no CUDA device is present."""

import pytest
import torch

import fastquilt as fq
from fastquilt import ops as _ops

from . import reference as ref
from .conftest import requires_cuda

pytestmark = [requires_cuda, pytest.mark.cuda]

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32, torch.uint8,
          torch.bool]
CASES = [
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


def _at_odd_offset(t):
    """A contiguous copy of t that starts one element into its storage: a view whose data
    pointer is not 16-byte aligned, like x[1:] of an odd-sized batch."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    v = buf[1:].view(t.shape)
    v.copy_(t)
    return v


def _rand(shape, dtype, gen):
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_floating_point:
        return torch.randn(shape, generator=gen).to(dtype)
    return torch.randint(0, 100, shape, generator=gen).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_gather_cuda_equals_cpu(case, dtype):
    spatial, window, step = case
    gen = torch.Generator().manual_seed(0)
    x = _rand((2, 3, *spatial), dtype, gen)
    org = torch.as_tensor(ref.origins(spatial, window, step, 2))
    want = fq.gather_windows(x, org, window)
    got = fq.gather_windows(x.cuda(), org.cuda(), window)
    assert torch.equal(got.cpu(), want)
    if dtype.is_floating_point:
        w = torch.rand(window, generator=gen).to(_ops.acc_dtype(dtype))
        want = fq.gather_windows(x, org, window, weight=w)
        got = fq.gather_windows(x.cuda(), org.cuda(), window, weight=w.cuda())
        torch.testing.assert_close(got.cpu(), want)
        out = torch.empty_like(got)
        fq.gather_windows_into(x.cuda(), org.cuda(), out, weight=w.cuda())
        assert torch.equal(out, got)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES)
def test_scatter_and_stitch_grid_cuda_equal_cpu(case, dtype):
    spatial, window, step = case
    gen = torch.Generator().manual_seed(1)
    org = torch.as_tensor(ref.origins(spatial, window, step, 2))
    p = _rand((org.shape[0], 3, *window), dtype, gen)
    w = (torch.rand(window, generator=gen) + 0.1).to(_ops.acc_dtype(dtype))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype != torch.float64 else dict(rtol=1e-12, atol=1e-12)
    a_cpu, ws_cpu = fq.scatter_add_windows(p, org, spatial, 2, weight=w)
    a_gpu, ws_gpu = fq.scatter_add_windows(p.cuda(), org.cuda(), spatial, 2, weight=w.cuda())
    torch.testing.assert_close(a_gpu.cpu(), a_cpu, **tol)
    torch.testing.assert_close(ws_gpu.cpu(), ws_cpu, **tol)
    # weight-sum only (zero channels)
    _, ws0 = fq.scatter_add_windows(p[:, :0].cuda(), org.cuda(), spatial, 2, weight=w.cuda())
    torch.testing.assert_close(ws0.cpu(), ws_cpu, **tol)
    m_cpu = fq.stitch_grid(p, spatial, step, weight=w, fill_value=-1.0)
    m_gpu = fq.stitch_grid(p.cuda(), spatial, step, weight=w.cuda(), fill_value=-1.0)
    assert m_gpu.dtype == dtype
    ttol = {torch.float16: 1e-3, torch.bfloat16: 8e-3}.get(dtype)
    if ttol:
        torch.testing.assert_close(m_gpu.cpu().float(), m_cpu.float(), rtol=ttol, atol=ttol)
    else:
        torch.testing.assert_close(m_gpu.cpu(), m_cpu, **tol)
    # deterministic: bit-identical run to run
    assert torch.equal(fq.stitch_grid(p.cuda(), spatial, step, weight=w.cuda()),
                       fq.stitch_grid(p.cuda(), spatial, step, weight=w.cuda()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64, torch.uint8])
def test_views_at_odd_offsets(dtype):
    """Inputs, patches and outputs that are views at an odd element offset: the kernels must
    not use 16-byte vector accesses on them (a misaligned address aborts the CUDA context)."""
    spatial, window, step = (24, 16, 40), (8, 8, 16), (4, 8, 8)
    gen = torch.Generator().manual_seed(3)
    x = _rand((2, 3, *spatial), dtype, gen)
    org = torch.as_tensor(ref.origins(spatial, window, step, 2))
    org_c = org.cuda()
    want = fq.gather_windows(x, org, window)
    x_v = _at_odd_offset(x.cuda())
    assert x_v.data_ptr() % 16 != 0
    assert torch.equal(fq.gather_windows(x_v, org_c, window).cpu(), want)
    out_v = _at_odd_offset(torch.empty_like(want, device="cuda"))
    fq.gather_windows_into(x_v, org_c, out_v)
    assert torch.equal(out_v.cpu(), want)
    if not dtype.is_floating_point:
        return
    tol = dict(rtol=8e-3, atol=8e-3) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-6)
    p_v = _at_odd_offset(want.cuda())
    mean_cpu = fq.stitch_grid(want, spatial, step)
    torch.testing.assert_close(fq.stitch_grid(p_v, spatial, step).cpu().float(),
                               mean_cpu.float(), **tol)
    mean_v = _at_odd_offset(torch.empty_like(mean_cpu, device="cuda"))
    fq.stitch_grid_into(p_v, step, mean_v)
    torch.testing.assert_close(mean_v.cpu().float(), mean_cpu.float(), **tol)
    acc_cpu, ws_cpu = fq.scatter_add_windows(want, org, spatial, 2)
    acc_v = _at_odd_offset(torch.zeros_like(acc_cpu, device="cuda"))
    ws_v = _at_odd_offset(torch.zeros_like(ws_cpu, device="cuda"))
    fq.scatter_add_windows_(p_v, org_c, acc_v, ws_v)
    torch.testing.assert_close(acc_v.cpu(), acc_cpu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ws_v.cpu(), ws_cpu)


def test_streaming_accumulate_on_cuda_and_accumulators_on_cpu():
    q = fq.Quilt((40, 41, 39), 16, 8, border=2)
    x = torch.randn(2, 2, 40, 41, 39, device="cuda")
    p = q.unstitch(x)
    want, _ = q.stitch(p)
    for acc_dev in ("cuda", "cpu"):
        acc = fq.StitchAccumulator(q, 2, 2, device=acc_dev)
        for chunk in torch.arange(p.shape[0]).flip(0).split(13):
            acc.add(p[chunk.cuda()], chunk)
        mean, _ = acc.finalize()
        torch.testing.assert_close(mean.cuda(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(want, x, rtol=1e-5, atol=1e-5)


def test_sliding_window_cuda_model_cpu_output():
    x = torch.randn(1, 1, 48, 50, 46)
    net = torch.nn.Conv3d(1, 2, 3, padding=1)
    y_cpu = fq.sliding_window(net, x, 16, 12, batch_size=4)
    y_gpu = fq.sliding_window(net.cuda(), x, 16, 12, batch_size=4, device="cuda")
    assert y_gpu.device.type == "cpu"
    torch.testing.assert_close(y_gpu, y_cpu, rtol=1e-4, atol=1e-4)


def test_gradcheck_opcheck_cuda_float64():
    spatial, window, step = (7, 8, 6), (3, 4, 3), (2, 3, 2)
    org = torch.as_tensor(ref.origins(spatial, window, step, 2)).cuda()
    x = torch.randn(2, 2, *spatial, dtype=torch.float64, device="cuda", requires_grad=True)
    w = (torch.rand(window, dtype=torch.float64, device="cuda") + 0.5).requires_grad_()
    p = torch.randn(org.shape[0], 2, *window, dtype=torch.float64, device="cuda",
                    requires_grad=True)
    f = lambda x, w: fq.gather_windows(x, org, window, weight=w)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w)) and torch.autograd.gradgradcheck(f, (x, w))
    g = lambda p, w: fq.scatter_add_windows(p, org, spatial, 2, weight=w)  # noqa: E731
    assert torch.autograd.gradcheck(g, (p, w), nondet_tol=1e-12)
    h = lambda p: fq.stitch_grid(p, spatial, step, weight=w.detach())  # noqa: E731
    assert torch.autograd.gradcheck(h, (p,)) and torch.autograd.gradgradcheck(h, (p,))
    torch.library.opcheck(_ops._ops.gather_windows.default, (x, org, w, list(window)))
    torch.library.opcheck(_ops._ops.stitch_grid.default,
                          (p, w.detach(), list(spatial), list(step), 0.0))
    with torch.no_grad():
        acc = torch.zeros(2, 2, *spatial, dtype=torch.float64, device="cuda")
        ws = torch.zeros(2, *spatial, dtype=torch.float64, device="cuda")
        torch.library.opcheck(_ops._ops.scatter_add_windows_.default,
                              (p.detach(), org, w.detach(), acc, ws),
                              test_utils=("test_schema", "test_faketensor"))


def test_compile_fullgraph_cuda():
    import torch._dynamo

    torch._dynamo.reset()
    q = fq.Quilt((32, 30, 28), 16, 8, weight="gaussian")
    conv = torch.nn.Conv3d(1, 1, 3, padding=1).cuda()

    def f(x):
        return q.stitch(conv(q.unstitch(x)))[0]

    x = torch.randn(1, 1, 32, 30, 28, device="cuda")
    cf = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(cf(x), f(x), rtol=1e-4, atol=1e-4)


def test_device_mismatch_errors():
    x = torch.randn(1, 1, 16, 16, device="cuda")
    with pytest.raises(ValueError, match="origins are on"):
        fq.gather_windows(x, torch.zeros(1, 3, dtype=torch.int64), (8, 8))
    with pytest.raises(ValueError, match="weight is on"):
        fq.gather_windows(x, torch.zeros(1, 3, dtype=torch.int64, device="cuda"), (8, 8),
                          weight=torch.ones(8, 8))


def test_scatter_deterministic_mode_is_bit_identical():
    """Under torch.use_deterministic_algorithms(True) the CUDA scatter-add adds sets of
    pairwise disjoint windows, one launch each: bit-identical run to run, for a grid, for
    windows in random order, without channels (weight sum only), and through
    sliding_window; and equal to the CPU op within rounding."""
    spatial, window, step = (40, 36, 44), (16, 12, 16), (6, 5, 7)
    gen = torch.Generator().manual_seed(5)
    org = torch.as_tensor(ref.origins(spatial, window, step, 2))
    perm = torch.randperm(org.shape[0], generator=gen)
    p = torch.randn((org.shape[0], 2, *window), generator=gen)
    w = torch.rand(window, generator=gen) + 0.1
    x = torch.randn(1, 1, 48, 50, 46, generator=gen)
    def net(t):  # channel change, no library kernels of its own that could be nondeterministic
        return torch.cat([t, 2 * t + 1], 1)

    torch.use_deterministic_algorithms(True)
    try:
        def scatter(pp, oo):
            return fq.scatter_add_windows(pp.cuda(), oo.cuda(), spatial, 2, weight=w.cuda())

        grid = [scatter(p, org) for _ in range(3)]
        shuffled = [scatter(p[perm], org[perm]) for _ in range(3)]
        no_channels = [scatter(p[:, :0], org)[1] for _ in range(2)]
        slid = [fq.sliding_window(net, x.cuda(), 16, 12, batch_size=5) for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(False)
    for runs in (grid, shuffled):
        for acc, ws in runs[1:]:
            assert torch.equal(acc, runs[0][0]) and torch.equal(ws, runs[0][1])
    assert torch.equal(no_channels[0], no_channels[1])
    assert torch.equal(slid[0], slid[1])
    acc_cpu, ws_cpu = fq.scatter_add_windows(p, org, spatial, 2, weight=w)
    for acc, ws in (grid[0], shuffled[0]):
        torch.testing.assert_close(acc.cpu(), acc_cpu, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ws.cpu(), ws_cpu, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(no_channels[0].cpu(), ws_cpu, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(slid[0].cpu(), fq.sliding_window(net, x, 16, 12, 5),
                               rtol=1e-4, atol=1e-4)
