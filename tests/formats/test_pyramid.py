"""Pyramid levels of one unit's block: the mean (exact, edges included) and the mode equal
float64 / numpy references; the level geometry keeps every unit's blocks its own."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastquilt.formats.pyramid import (
    check_levels,
    default_levels,
    downsample_mean,
    downsample_mode,
    level_box,
    level_chunks,
    level_shape,
    max_levels,
    mean_levels,
)


def mean_reference(a: np.ndarray, level: int) -> np.ndarray:
    """float64 mean of each 2^level cube of ``a`` (C, *s), partial cubes over what they hold."""
    f = 1 << level
    out_shape = [-(-n // f) for n in a.shape[1:]]
    out = np.zeros((a.shape[0], *out_shape))
    for idx in np.ndindex(*out_shape):
        sl = tuple(slice(i * f, (i + 1) * f) for i in idx)
        out[(slice(None), *idx)] = a[(slice(None), *sl)].astype(np.float64).reshape(
            a.shape[0], -1).mean(1)
    return out


def mode_reference(a: np.ndarray) -> np.ndarray:
    """One halving by the mode of each 2^D cube (ties: the smallest label)."""
    out_shape = [-(-n // 2) for n in a.shape[1:]]
    out = np.zeros((a.shape[0], *out_shape), a.dtype)
    for c in range(a.shape[0]):
        for idx in np.ndindex(*out_shape):
            vals = a[(c, *(slice(2 * i, 2 * i + 2) for i in idx))].ravel()
            labels, counts = np.unique(vals, return_counts=True)  # sorted: first max = smallest
            out[(c, *idx)] = labels[np.argmax(counts)]
    return out


@settings(max_examples=25, deadline=None)
@given(D=st.sampled_from([2, 3]), level=st.integers(0, 3), C=st.integers(1, 2),
       sizes=st.lists(st.integers(1, 13), min_size=3, max_size=3), seed=st.integers(0, 99))
def test_mean_levels_equal_a_float64_reference(D, level, C, sizes, seed):
    a = np.random.default_rng(seed).standard_normal((C, *sizes[:D])).astype(np.float32)
    got = downsample_mean(torch.from_numpy(a), level)
    np.testing.assert_allclose(got.numpy(), mean_reference(a, level), rtol=1e-5, atol=1e-6)
    if level:  # the same levels from the sums of the level before
        np.testing.assert_allclose(mean_levels(torch.from_numpy(a), level)[-1].numpy(),
                                   mean_reference(a, level), rtol=1e-5, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(D=st.sampled_from([2, 3]), levels=st.integers(1, 3),
       n_labels=st.sampled_from([1, 2, 4, 40]),  # (more than 16: the other way to count)
       sizes=st.lists(st.integers(1, 11), min_size=3, max_size=3), seed=st.integers(0, 99),
       dtype=st.sampled_from([np.uint8, np.int32, np.uint16]))
def test_mode_levels_equal_a_numpy_reference(D, levels, n_labels, sizes, seed, dtype):
    a = np.random.default_rng(seed).integers(0, n_labels, (1, *sizes[:D])).astype(dtype)
    got = downsample_mode(torch.from_numpy(a.astype(np.int64)).to(
        torch.uint8 if dtype == np.uint8 else torch.int32), levels)
    want = a
    for lv in range(levels):
        want = mode_reference(want)
        np.testing.assert_array_equal(got[lv].numpy(), want)


def test_a_unit_s_blocks_tile_each_level_without_overlap():
    spatial, unit, chunk = (45, 64, 37), (16, 32, 16), (8, 16, 16)
    levels = check_levels(3, spatial, unit)
    for lv in range(1, levels + 1):
        shape, chunks = level_shape(spatial, lv), level_chunks(chunk, unit, spatial, lv)
        seen = np.zeros(shape, int)
        for idx in np.ndindex(*(-(-S // u) for S, u in zip(spatial, unit))):
            box = tuple(slice(i * u, min((i + 1) * u, S)) for i, u, S in zip(idx, unit, spatial))
            lb = level_box(box, lv)
            seen[lb] += 1
            for b, c in zip(lb, chunks):  # starts on a chunk: no chunk shared by two units
                assert b.start % c == 0
        assert (seen == 1).all()


def test_levels_are_checked_against_the_units():
    assert max_levels((100, 100), (24, 100)) == 3  # 24 = 3 * 8; an axis spanned whole: any
    with pytest.raises(ValueError, match=r"multiples of 16 .*unit is \(24, 100\).*levels <= 3"):
        check_levels(4, (100, 100), (24, 100))
    with pytest.raises(ValueError, match="levels must be an int"):
        check_levels(-1, (100,), (10,))
    assert default_levels((4000, 900), (128, 128)) == 2  # 4000 / 4 <= 1024
    assert default_levels((4000, 900), (96, 96)) == 2
    assert default_levels((4000, 900), (32 * 3, 2 * 3)) == 1  # the unit allows one level
    assert default_levels((500, 900), (128, 128)) == 0  # fits a screen already
