"""Bad input to the Quilt API: a clear error naming the argument, never a wrong result."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastquilt as fq


def test_quilt_shape_rank_dtype_errors():
    q = fq.Quilt((32, 32), 8, 4, border=1)
    with pytest.raises(ValueError, match=r"x must have shape \(N, C, 32, 32\).*unsqueeze\(1\)"):
        q.unstitch(torch.randn(2, 32, 32))
    with pytest.raises(ValueError, match=r"x must have shape \(N, C, 32, 32\)"):
        q.unstitch(torch.randn(2, 1, 32, 33))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        q.unstitch(torch.randn(1, 1, 32, 32).numpy())
    with pytest.raises(TypeError, match="patches must be floating point"):
        q.stitch(torch.ones(49, 1, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="not a whole number of images"):
        q.stitch(torch.ones(50, 1, 8, 8))
    with pytest.raises(ValueError, match=r"patches must have shape \(M, C, 8, 8\)"):
        q.stitch(torch.ones(49, 1, 8, 9))
    with pytest.raises(ValueError, match="at least half the window"):
        fq.Quilt((32, 32), 8, 4, border=4)
    with pytest.raises(ValueError, match="border must be >= 0"):
        fq.Quilt((32, 32), 8, 4, border=-1)


def test_out_buffers():
    q = fq.Quilt((32, 32), 8, 4)
    x = torch.randn(2, 3, 32, 32)
    buf = torch.empty(2 * q.num_windows, 3, 8, 8)
    p = q.unstitch(x, out=buf)
    assert p.data_ptr() == buf.data_ptr() and torch.equal(p, q.unstitch(x))
    out = torch.empty_like(x)
    mean, _ = q.stitch(p, out=out)
    assert mean.data_ptr() == out.data_ptr()
    torch.testing.assert_close(mean, x)
    with pytest.raises(TypeError, match="out must be torch.float32 on cpu"):
        q.stitch(p, out=torch.empty_like(x).double())
    # The ops take the window / image size from out, and the scatter path copies into it: a
    # wrong shape must fail, not gather other windows or broadcast.
    with pytest.raises(ValueError, match=r"out must have shape \(98, 3, 8, 8\)"):
        q.unstitch(x, out=torch.empty(2 * q.num_windows, 3, 6, 6))
    with pytest.raises(ValueError, match=r"out must have shape \(2, 3, 32, 32\)"):
        q.stitch(p, out=torch.empty(2, 3, 32, 31))
    qw = fq.Quilt((32, 32), 8, 4, weight=torch.ones(8, 8, requires_grad=True))
    with torch.no_grad(), pytest.raises(ValueError, match=r"out must have shape"):
        qw.stitch(p[:q.num_windows], out=torch.empty(2, 3, 32, 32))
    with pytest.raises(TypeError, match="out must be a torch.Tensor"):
        q.unstitch(x, out=buf.numpy())
    with pytest.raises(ValueError, match="out must be contiguous"):
        q.unstitch(x, out=torch.empty(3, 8, 8, 2 * q.num_windows).permute(3, 0, 1, 2))


def test_integer_and_bool_unstitch_keep_dtype():
    q = fq.Quilt((16, 16), 8, 4)
    for dtype in (torch.uint8, torch.int32, torch.int64, torch.bool):
        x = (torch.rand(1, 1, 16, 16) > 0.5).to(dtype)
        p = q.unstitch(x)
        assert p.dtype == dtype and torch.equal(p[0, 0], x[0, 0, :8, :8])


def test_device_dtype_index_and_criteria_arguments():
    # Each of these once ended in a torch RuntimeError / AssertionError / AttributeError or
    # ZeroDivisionError, or was silently truncated; now a ValueError / TypeError naming it.
    x = torch.randn(1, 1, 16, 16)
    q = fq.Quilt((16, 16), 8, 4, border=1)
    ident = lambda p: p  # noqa: E731
    missing_cuda = "cuda:99" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ValueError, match="device='tpu' is not a device"):
        fq.sliding_window(ident, x, 8, 4, device="tpu")
    with pytest.raises(ValueError, match=r"out_device='cuda(:99)?' but .*CUDA"):
        fq.sliding_window(ident, x, 8, 4, out_device=missing_cuda)
    with pytest.raises(TypeError, match="device must be a torch.device"):
        fq.StitchAccumulator(q, 1, 1, device=1.5)
    with pytest.raises(ValueError, match=r"x has no images \(N = 0\)"):  # was AttributeError
        fq.sliding_window(ident, x[:0], 8, 4)
    with pytest.raises(TypeError, match="out_dtype must be one of torch.float16"):
        fq.sliding_window(ident, x, 8, 4, out_dtype=torch.int32)  # a mean truncated to 0
    for name in ("float16", torch.float16):
        assert fq.sliding_window(ident, x, 8, 4, out_dtype=name).dtype == torch.float16
    acc = fq.StitchAccumulator(q, 1, 1)
    with pytest.raises(TypeError, match="dtype must be one of torch.float16"):
        acc.finalize(dtype=torch.uint8)
    assert acc.finalize(dtype="bfloat16")[0].dtype == torch.bfloat16
    with pytest.raises(TypeError, match="indices must be integers"):
        acc.add(q.unstitch(x)[:2], torch.tensor([0.0, 1.5]))
    with pytest.raises(ValueError, match=r"1-D sequence, got shape \(2, 3\); window positions"):
        acc.add(q.unstitch(x)[:2], q.positions(1)[:2])  # positions read as 6 indices before
    keep = torch.zeros(q.num_windows, dtype=torch.bool)
    keep[[1, 4]] = True  # torch.nonzero's (K, 1) column is a list of indices, as before
    assert torch.equal(q.grid.origins(1, indices=torch.nonzero(keep)), q.positions(1)[[1, 4]])
    with pytest.raises(TypeError, match="indices must be integers"):
        q.grid.origins(1, indices=[0.5])
    with pytest.raises(TypeError, match="indices must be integers"):
        fq.PatchDataset(x, None, q, indices=[True])
    with pytest.raises(ValueError, match="step must be >= 1"):
        fq.grid_origins((16, 16), (8, 8), (0, 4), 1)
    with pytest.raises(TypeError, match="window must contain ints"):
        fq.grid_origins((16, 16), (8.5, 8), (4, 4), 1)
    with pytest.raises(ValueError, match="num_images must be a non-negative int"):
        fq.grid_origins((16, 16), 8, 4, -1)
    assert torch.equal(fq.grid_origins((16, 16), 8, 4, 1), q.positions(1))
    labels = torch.randint(-1, 3, (1, 16, 16))
    with pytest.raises(TypeError, match="class_min key must be a number"):
        fq.clean_pairs(q, x, labels, -1, class_min={"a": 1})
    with pytest.raises(ValueError, match="class_min key=1.5 cannot be represented"):
        fq.clean_pairs(q, x, labels, -1, class_min={1.5: 1})
    with pytest.raises(ValueError, match=r"class_min\[1\] must be an int >= 0"):
        fq.clean_pairs(q, x, labels, -1, class_min={1: -1})
    with pytest.raises(TypeError, match="class_min must be a dict"):
        fq.clean_pairs(q, x, labels, -1, class_min=[1, 2])
    with pytest.raises(TypeError, match="augment must be True or False, got 'no'"):
        fq.PatchDataset(x, None, q, augment="no")  # was read as True
    with pytest.raises(TypeError, match="allow_gaps must be True or False"):
        fq.Quilt((16, 16), 4, 8, allow_gaps="yes")
    assert fq.Quilt((16, 16), 4, 8, allow_gaps=1).counts == (3, 3)  # 1 / 0 are flags too


def test_out_and_inplace_forms_refuse_inputs_that_require_grad():
    """The out= / in-place forms record no autograd (like torch's out= arguments): before, an
    input that required grad gave a result that silently carried no gradient."""
    q = fq.Quilt((8, 8), 4, 2)
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    buf = torch.empty(q.num_windows, 1, 4, 4)
    with pytest.raises(ValueError, match="out= records no autograd, but the input"):
        q.unstitch(x, out=buf)
    p = q.unstitch(x)
    with pytest.raises(ValueError, match="out= records no autograd"):
        q.stitch(p, out=torch.empty(1, 1, 8, 8))
    with torch.no_grad():  # the buffers' use: inference
        assert torch.equal(q.unstitch(x, out=buf), p)
        q.stitch(p, out=torch.empty(1, 1, 8, 8))
    org = q.positions(1)
    w = q.weight_for(torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match="gather_windows_into records no autograd, but input"):
        fq.gather_windows_into(x, org, buf)
    with pytest.raises(ValueError, match="scatter_add_windows_ records no autograd, but patches"):
        fq.scatter_add_windows_(p, org, torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="stitch_grid_into records no autograd, but patches"):
        fq.stitch_grid_into(p, (2, 2), torch.empty(1, 1, 8, 8))
    with pytest.raises(ValueError, match="grid_normalize_ records no autograd, but acc"):
        fq.grid_normalize_(torch.ones(1, 1, 8, 8, requires_grad=True), w, (2, 2))
    # the library's own streaming users detach: a trainable weight still works there
    tq = fq.Quilt((8, 8), 4, 2, weight=torch.rand(4, 4, requires_grad=True) + 0.5)
    acc = fq.StitchAccumulator(tq, 1, 1)
    acc.add(tq.unstitch(x.detach()), range(tq.num_windows))
    torch.testing.assert_close(acc.finalize()[0], x.detach())
    y = fq.sliding_window(lambda t: t, x.detach(), 4, 2, weight=tq.weight)
    torch.testing.assert_close(y, x.detach())


def test_op_sizes_must_be_ints():
    """Floats in sizes were torch RuntimeErrors, and num_images=1.5 was truncated to 1."""
    x, p = torch.ones(1, 1, 8, 8), torch.ones(9, 1, 4, 4)
    org = fq.grid_origins((8, 8), (4, 4), (2, 2), 1)
    with pytest.raises(TypeError, match=r"window must contain ints, got \(4.0, 4\)"):
        fq.gather_windows(x, org, (4.0, 4))
    with pytest.raises(TypeError, match="num_images must be an int, got 1.5"):
        fq.scatter_add_windows(p, org, (8, 8), 1.5)
    with pytest.raises(TypeError, match=r"spatial_size must contain ints, got \(8.0, 8\)"):
        fq.scatter_add_windows(p, org, (8.0, 8), 1)
    with pytest.raises(TypeError, match=r"step must contain ints, got \(2.5, 2\)"):
        fq.stitch_grid(p, (8, 8), (2.5, 2))
    with pytest.raises(TypeError, match="step must be a sequence of ints, got 2"):
        fq.grid_weight_sum(torch.ones(4, 4), (8, 8), 2)
    assert fq.scatter_add_windows(p, org, (8, 8), np.int64(1))[0].shape == (1, 1, 8, 8)
    for window in (np.array([4, 4]), torch.tensor([4, 4]), torch.Size([4, 4])):  # as before
        assert fq.gather_windows(x, org, window).shape == (9, 1, 4, 4)
    with pytest.raises(TypeError, match=r"window must contain ints, got \(tensor\(4.\)"):
        fq.gather_windows(x, org, torch.tensor([4.0, 4.0]))


def _hann_2d(w):
    h = torch.hann_window(w, periodic=False, dtype=torch.float64)  # 0 at both ends
    return (h[:, None] * h[None, :]).float()


def test_a_weight_that_is_zero_where_nothing_else_covers_is_refused():
    # The weight sum would be 0 at the image border: those voxels silently got fill_value.
    x = torch.randn(1, 1, 64, 64)
    w = _hann_2d(16)
    with pytest.raises(ValueError, match="weight tensor is 0 where no other window covers"):
        fq.Quilt((64, 64), 16, 8, weight=w)
    with pytest.raises(ValueError, match="pad the image, or pass allow_gaps=True"):
        fq.sliding_window(lambda p: p, x, 16, 8, weight=w)
    q = fq.Quilt((64, 64), 16, 8, weight=w, allow_gaps=True)  # accepted knowingly
    _, ws = q.stitch(q.unstitch(x))
    assert int((ws == 0).sum()) == 252
    # zeros inside the window that other windows cover everywhere (step 4) are fine
    inner = torch.ones(16, 16)
    inner[6:10, 6:10] = 0
    fq.Quilt((64, 64), 16, 4, weight=inner)


@settings(max_examples=min(settings().max_examples, 60))
@given(seed=st.integers(0, 2**31 - 1))
def test_the_zero_weight_check_agrees_with_the_full_weight_sum(seed):
    # The check runs on a reduced image with the same window pattern; it must refuse exactly
    # the weights whose full-image weight sum has zeros.
    rng = np.random.default_rng(seed)
    D = int(rng.integers(2, 4))
    S = tuple(int(rng.integers(2, 90 if D == 2 else 40)) for _ in range(D))
    W = tuple(int(rng.integers(1, s + 1)) for s in S)
    step = tuple(int(rng.integers(1, w + 1)) for w in W)
    w = torch.from_numpy(rng.random(W)).float() + 0.1
    w[torch.from_numpy(rng.random(W) < rng.random())] = 0
    if not bool((w > 0).any()):
        return
    has_zeros = bool((fq.grid_weight_sum(w, S, step) <= 0).any())
    try:
        fq.Quilt(S, W, step, weight=w)
        refused = False
    except ValueError as e:
        assert "weight tensor is 0" in str(e)
        refused = True
    assert refused == has_zeros


def test_border_weight_is_checked_without_a_border():
    with pytest.raises(ValueError, match=r"border_weight must be in \[0, 1\]"):
        fq.Quilt((32, 32), 8, 4, border_weight=1.5)
    with pytest.raises(ValueError, match=r"border_weight must be in \[0, 1\]"):
        fq.sliding_window(lambda p: p, torch.zeros(1, 1, 32, 32), 8, 4, border_weight=-1)


def test_numpy_integers_are_ints():
    x = torch.randn(1, 1, 32, 32)
    y = fq.sliding_window(lambda p: p, x, np.int64(8), np.int64(4), batch_size=np.int64(4))
    torch.testing.assert_close(y, x)
