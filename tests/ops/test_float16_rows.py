"""16-bit floats in the kernels, bit for bit, over every finite float16 and bfloat16 value: the
CPU kernels convert whole rows (csrc/cpu/float16_rows.h: F16C for float16, a vectorised loop
for bfloat16); reading must be exact and writing must round to nearest even, like torch's own
conversion."""

import pytest
import torch

import fastquilt as fq

from ..conftest import requires_cuda

DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]
DTYPES = [torch.float16, torch.bfloat16]
# Every finite value as one image of this many rows of 256 (NaNs and infinities left out).
ROWS = {torch.float16: 248, torch.bfloat16: 255}


def _every_finite(dtype) -> torch.Tensor:
    """All finite values of a 16-bit float type, as a (1, 1, ROWS, 256) image, in a fixed
    shuffled order so that neighbours differ."""
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    h = bits.view(dtype)
    h = h[torch.isfinite(h)]
    h = h[torch.randperm(h.numel(), generator=torch.Generator().manual_seed(0))]
    return h.view(1, 1, ROWS[dtype], 256)


def _weights(dtype, seed: int) -> torch.Tensor:
    """Positive float32 weights from 1e-3 (subnormal float16 products) to 3 (float16 products
    past 65504)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.exp(torch.empty(ROWS[dtype], 256).uniform_(-7.0, 1.1, generator=gen))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_weighted_gather_rounds_like_torch(device, dtype):
    x, w = _every_finite(dtype).to(device), _weights(dtype, 1).to(device)
    org = torch.zeros(1, 3, dtype=torch.int64, device=device)
    got = fq.gather_windows(x, org, x.shape[2:], weight=w)
    assert torch.equal(got[0], (x.float() * w).to(dtype)[0])
    x[0, 0, 0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    got = fq.gather_windows(x, org, x.shape[2:], weight=w)
    assert torch.isnan(got[0, 0, 0, 0]) and torch.equal(got[0, 0, 0, 1:3], x[0, 0, 0, 1:3])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_scatter_add_reads_every_value_exactly(device, dtype):
    x = _every_finite(dtype).to(device)
    org = torch.zeros(1, 3, dtype=torch.int64, device=device)
    acc, _ = fq.scatter_add_windows(x, org, x.shape[2:], 1)
    assert torch.equal(acc, x.float())
    w = _weights(dtype, 2).to(device)
    acc, wsum = fq.scatter_add_windows(x, org, x.shape[2:], 1, weight=w)
    assert torch.equal(acc, x.float() * w) and torch.equal(wsum[0], w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_grid_stitch_reads_and_rounds_exactly(device, dtype):
    x = _every_finite(dtype).to(device)
    S = x.shape[2:]
    assert torch.equal(fq.stitch_grid(x, S, (1, 1))[0], x[0])  # one window: the value itself
    w = _weights(dtype, 3).to(device)
    xw = x.float() * w  # the kernels' float32 steps: the CPU multiplies by 1 / weight sum,
    want = xw * (1 / w) if device == "cpu" else xw / w  # the GPU divides (README)
    assert torch.equal(fq.stitch_grid(x, S, (1, 1), weight=w), want.to(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("step", [(4, 4, 8), (3, 3, 5), (8, 2, 16)])  # 4, 9, 4 windows per row
def test_cpu_grid_stitch_is_the_float32_stitch_rounded(step, dtype):
    """Many windows per voxel (the fused sums for 1, 2, 4 and any number of windows): the
    16-bit kernels sum the converted rows with the float32 kernel's code, so their result is
    the float32 result of the same values, rounded once."""
    S, W = (21, 22, 40), (8, 8, 16)
    q = fq.Quilt(S, W, step, border=2, border_weight=0.1)
    gen = torch.Generator().manual_seed(4)
    p = (torch.randn(2 * q.num_windows, 3, *W, generator=gen) * 100).to(dtype)
    w = q.weight_for(dtype, torch.device("cpu"))
    got = fq.stitch_grid(p, S, step, weight=w)
    want = fq.stitch_grid(p.float(), S, step, weight=w).to(dtype)
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_cpu_scatter_add_is_the_float32_scatter_add(dtype, weighted):
    """The 16-bit scatter-add sums the converted rows with the float32 code (fused multiply-add
    where the CPU has it), so its sums equal the float32 scatter-add of the same values."""
    S, W, step = (21, 22, 40), (8, 8, 16), (3, 3, 5)
    q = fq.Quilt(S, W, step, border=2, border_weight=0.1)
    gen = torch.Generator().manual_seed(5)
    p = torch.randn(2 * q.num_windows, 3, *W, generator=gen).to(dtype)
    w = q.weight_for(dtype, torch.device("cpu")) if weighted else None
    org = q.positions(2)
    got = fq.scatter_add_windows(p, org, S, 2, weight=w)
    want = fq.scatter_add_windows(p.float(), org, S, 2, weight=w)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [7, 601])  # shorter than one F16C step; 2 blocks + a tail
def test_cpu_rows_of_any_length(dtype, width):
    gen = torch.Generator().manual_seed(width)
    x = (torch.randn(1, 2, 5, width, generator=gen) * 1000).to(dtype)
    w = torch.rand(3, width, generator=gen) + 0.5
    org = torch.tensor([[0, 0, 0], [0, 2, 0]])
    got = fq.gather_windows(x, org, (3, width), weight=w)
    want = torch.stack([(x[0, :, a:a + 3].float() * w).to(dtype) for a in (0, 2)])
    assert torch.equal(got, want)
    acc = fq.scatter_add_windows(got, org, (5, width), 1, weight=w)
    assert torch.equal(acc[0], fq.scatter_add_windows(got.float(), org, (5, width), 1,
                                                      weight=w)[0])
    mean = fq.stitch_grid(got, (5, width), (2, 1), weight=w)
    assert torch.equal(mean, fq.stitch_grid(got.float(), (5, width), (2, 1),
                                            weight=w).to(dtype))
