"""The CPU gather reads an input whose rows are contiguous (a crop or a slice of a larger
tensor) where it lies, through its strides: the same bits as from a contiguous copy, at any
thread count, without copying the volume (no aten::contiguous inside the op, which the
profiler records); other layouts, and inputs sharing storage with the output, are read from
a contiguous copy."""

import pytest
import torch

import fastquilt as fq
from fastquilt import ops

CASES = [  # (base shape, crop, window)
    ((2, 3, 40, 50), (slice(None), slice(1, 3), slice(3, 37), slice(5, 44)), (12, 14)),
    ((2, 2, 20, 24, 28), (slice(None), slice(None), slice(2, 19), slice(1, 23), slice(3, 27)),
     (8, 9, 10)),
    ((3, 2, 30, 20, 22), (slice(1, 3), slice(0, 1), slice(None), slice(None), slice(0, 17)),
     (16, 20, 8)),
]


def _aten_ops_inside(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16,
                                   torch.int32, torch.bool])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_a_crop_is_gathered_in_place_with_the_same_bits(dtype, case):
    shape, crop, window = CASES[case]
    base = (torch.randn(shape, generator=torch.Generator().manual_seed(case)) * 5).to(dtype)
    x = base[crop]
    assert not x.is_contiguous() and ops.gather_reads_in_place(x)
    q = fq.Quilt(x.shape[2:], window, tuple(max(1, w // 2) for w in window))
    origins = q.origins(x.shape[0])
    weight = None
    if dtype.is_floating_point:
        weight = torch.rand(window, dtype=torch.float64 if dtype == torch.float64
                            else torch.float32)
    want = ops.gather_windows(x.contiguous(), origins, window)
    want_w = ops.gather_windows(x.contiguous(), origins, window, weight) if weight is not None \
        else None
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            assert torch.equal(ops.gather_windows(x, origins, window), want)
            if weight is not None:
                assert torch.equal(ops.gather_windows(x, origins, window, weight), want_w)
            out = torch.empty_like(want)
            assert torch.equal(ops.gather_windows_into(x, origins, out), want)
    finally:
        torch.set_num_threads(before)
    inside = _aten_ops_inside(lambda: ops.gather_windows(x, origins, window))
    assert "aten::contiguous" not in inside and "aten::copy_" not in inside, inside


def test_other_layouts_and_shared_storage_are_read_from_a_copy():
    base = torch.randn(1, 2, 40, 60)
    q = fq.Quilt((40, 40), 16, 8)
    origins = q.origins(1)
    permuted = base[..., :40].transpose(2, 3)
    assert not ops.gather_reads_in_place(permuted)
    want = ops.gather_windows(permuted.contiguous(), origins, q.window)
    assert torch.equal(ops.gather_windows(permuted, origins, q.window), want)
    assert "aten::contiguous" in _aten_ops_inside(
        lambda: ops.gather_windows(permuted, origins, q.window))
    # out in the storage the input lies in (its rows interleave with the crop's): the kernel
    # must not read what it is writing
    storage = torch.randn(2 * 40 * 60 + want.numel())
    x = storage[:2 * 40 * 60].view(1, 2, 40, 60)[..., :40]
    want = ops.gather_windows(x.contiguous(), origins, q.window)
    out = storage[2 * 40 * 60 - 100:2 * 40 * 60 - 100 + want.numel()].view(want.shape)
    assert torch.equal(ops.gather_windows_into(x.clone(), origins, out.clone()), want)
    assert torch.equal(ops.gather_windows_into(x, origins, out), want)


def test_memory_shared_through_another_storage_is_seen():
    # Two tensors made from one numpy array share memory but not a storage object: a strided
    # input is still read from a copy, and a contiguous one is refused, where out meets it
    import numpy as np

    a = np.random.default_rng(0).standard_normal(2 * 40 * 60 + 16 * 2 * 16 * 16,
                                                 dtype=np.float32)
    q = fq.Quilt((40, 40), 16, 8)
    origins = q.origins(1)
    x = torch.from_numpy(a)[:2 * 40 * 60].view(1, 2, 40, 60)[..., :40]
    want = ops.gather_windows(x.contiguous(), origins, q.window)
    out = torch.from_numpy(a)[2 * 40 * 60 - 100:][:want.numel()].view(want.shape)
    assert torch.equal(ops.gather_windows_into(x, origins, out), want)
    x = torch.from_numpy(a)[:40 * 40 * 2].view(1, 2, 40, 40)
    out = torch.from_numpy(a)[40 * 40 * 2 - 100:][:want.numel()].view(want.shape)
    with pytest.raises(ValueError, match="shares memory with input"):
        ops.gather_windows_into(x, origins, out)
    # apart in one storage: read in place
    x = torch.from_numpy(a)[:2 * 40 * 60].view(1, 2, 40, 60)[..., :40]
    want = ops.gather_windows(x.contiguous(), origins, q.window)  # (x was written over above)
    out = torch.from_numpy(a)[2 * 40 * 60:][:want.numel()].view(want.shape)
    inside = _aten_ops_inside(lambda: ops.gather_windows_into(x, origins, out))
    assert "aten::contiguous" not in inside and torch.equal(out, want)
