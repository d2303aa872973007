"""LargeNCYXQuilt / LargeNCZYXQuilt against qlty 1.5.0's numbers, and qlty's bugs fixed."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastquilt.compat as fc
from fastquilt.compat import LargeNCYXQuilt, LargeNCZYXQuilt

from ..random_geometry import random_grid

qlty = pytest.importorskip("qlty", reason="qlty 1.5.0 is a test dependency")
pytest.importorskip("dask", reason="qlty's Large quilts read their results back through dask")


def run_loop(quilt, x, fn, with_var=False):
    for _ in range(quilt.N_chunks):
        i, patch = quilt.unstitch_next(x)
        y = fn(patch.unsqueeze(0))
        quilt.stitch(y, i, patch_var=(y * 0 + 0.25) if with_var else None)


def test_large_3d_matches_qlty(tmp_path):
    x = torch.randn(2, 2, 32, 28, 24)
    args = (2, 32, 28, 24, (16, 16, 16), (8, 8, 8), (2, 2, 2))
    ql = qlty.LargeNCZYXQuilt(str(tmp_path / "q"), *args)
    fq_ = LargeNCZYXQuilt(str(tmp_path / "f"), *args)
    assert fq_.get_times() == tuple(ql.get_times()) and fq_.N_chunks == ql.N_chunks
    assert np.array_equal(fq_.border_tensor(), ql.border_tensor())
    run_loop(ql, x, lambda p: p * 3, with_var=True)
    run_loop(fq_, x, lambda p: p * 3, with_var=True)
    m1, s1 = ql.return_mean(std=True)
    m2, s2 = fq_.return_mean(std=True)
    np.testing.assert_allclose(m2[...], m1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s2[...], s1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m2[...], 3 * x.numpy(), rtol=1e-5, atol=1e-5)
    again = fq_.return_mean()  # callable twice, out of core (a zarr array)
    assert again.shape == (2, 2, 32, 28, 24) and hasattr(again, "store")
    with pytest.raises(StopIteration):
        fq_.unstitch_next(x)
    with pytest.raises(ValueError, match="counted twice"):
        fq_.stitch(torch.zeros(1, 2, 16, 16, 16), 0)


def test_large_2d_matches_qlty_and_per_image_weight_sum(tmp_path):
    x = torch.randn(2, 1, 70, 60)
    args = (2, 70, 60, (16, 16), (8, 8), 2)
    ql = qlty.LargeNCYXQuilt(str(tmp_path / "q"), *args)
    fq_ = LargeNCYXQuilt(str(tmp_path / "f"), *args)
    run_loop(ql, x, lambda p: p + 1)
    run_loop(fq_, x, lambda p: p + 1)
    np.testing.assert_allclose(fq_.return_mean()[...], ql.return_mean(), rtol=1e-5, atol=1e-5)
    # stitch only image 1: qlty's image-0 weight sum gives ~1e8 values, fastquilt is right
    only1 = LargeNCYXQuilt(str(tmp_path / "g"), *args)
    per_image = only1.N_chunks // 2
    for i in range(per_image, 2 * per_image):
        only1.stitch(only1.unstitch(x, i).unsqueeze(0), i)
    m = only1.return_mean()[...]
    np.testing.assert_allclose(m[1], x[1].numpy(), rtol=1e-5, atol=1e-5)
    assert np.all(m[0] == 0)  # never stitched: zeros, not NaN


def test_renormalize_channels_sums_over_channels(tmp_path):
    x = torch.rand(1, 3, 20, 20) + 0.1
    q = LargeNCYXQuilt(str(tmp_path / "r"), 1, 20, 20, (10, 10), (5, 5), None)
    run_loop(q, x, lambda p: p)
    m = q.return_mean(normalize=True)[...]  # qlty 2D's name (it sums over images instead)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(m, (x / x.sum(1, keepdim=True)).numpy(), rtol=1e-5)
    x3 = torch.rand(1, 2, 12, 12, 12) + 0.1
    q3 = LargeNCZYXQuilt(str(tmp_path / "r3"), 1, 12, 12, 12, (6, 6, 6), (3, 3, 3))
    run_loop(q3, x3, lambda p: p)
    m3 = q3.return_mean(renormalize_channels=True)[...]  # qlty 3D's name
    np.testing.assert_allclose(m3, (x3 / x3.sum(1, keepdim=True)).numpy(), rtol=1e-5)


def test_signatures_and_positions_match_qlty(tmp_path):
    # Swapping the import must not break a call: every qlty parameter name is accepted.
    import inspect

    for ours, theirs in ((LargeNCYXQuilt, qlty.LargeNCYXQuilt),
                         (LargeNCZYXQuilt, qlty.LargeNCZYXQuilt)):
        for name in ("__init__", "unstitch", "unstitch_next", "stitch", "return_mean",
                     "border_tensor", "get_times", "unstitch_and_clean_sparse_data_pair"):
            want = list(inspect.signature(getattr(theirs, name)).parameters.values())
            got = list(inspect.signature(getattr(ours, name)).parameters.values())
            assert [p.name for p in got[:len(want)]] == [p.name for p in want], (ours, name)
            for a, b in zip(got, want):
                assert a.default == b.default, (ours.__name__, name, a.name)
    x = torch.randn(2, 1, 40, 36)
    args = (2, 40, 36, (16, 16), (10, 10), 2)
    ql = qlty.LargeNCYXQuilt(str(tmp_path / "q"), *args)
    fq_ = LargeNCYXQuilt(str(tmp_path / "f"), *args)
    for k in range(fq_.N_chunks):
        for with_n in (False, True):
            a, pa = ql.unstitch(x, k, return_positions=True, include_n_position=with_n)
            b, pb = fq_.unstitch(x, k, return_positions=True, include_n_position=with_n)
            assert torch.equal(a, b) and torch.equal(pa, pb)
        i, a, pa = ql.unstitch_next(x, return_positions=True, include_n_position=True)
        j, b, pb = fq_.unstitch_next(x, return_positions=True, include_n_position=True)
        assert i == j and torch.equal(a, b) and torch.equal(pa, pb)


def test_clean_pair_matches_qlty(tmp_path):
    x = torch.randn(1, 1, 32, 32, 32)
    lab = torch.full((1, 32, 32, 32), -1.0)
    lab[0, 10, 5:20, 5:20] = 1
    args = (1, 32, 32, 32, (16, 16, 16), (8, 8, 8), (2, 2, 2))
    a, b = qlty.LargeNCZYXQuilt(str(tmp_path / "q"), *args).unstitch_and_clean_sparse_data_pair(
        x, lab, -1)
    c, d = LargeNCZYXQuilt(str(tmp_path / "f"), *args).unstitch_and_clean_sparse_data_pair(
        x, lab, -1)
    assert torch.equal(a, c) and torch.equal(b, d)


@settings(max_examples=min(settings().max_examples, 25))
@given(seed=st.integers(0, 2**31 - 1))
def test_large_quilts_equal_quilt_stitch_for_random_geometries(seed, tmp_path_factory):
    # The Large classes' units (written when their last window arrives) over random shapes,
    # windows, steps and borders, windows stitched in a random order, against Quilt.stitch
    # with qlty's border weight.
    rng = np.random.default_rng(seed)
    S, W, step, border = random_grid(rng, 70, 20, min_size=3, min_window=2)
    D = len(S)
    N, C = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    x = torch.from_numpy(rng.standard_normal((N, C, *S)).astype(np.float32))
    path = str(tmp_path_factory.mktemp("large") / "q")
    if D == 2:
        big = LargeNCYXQuilt(path, N, *S, W, step, border, 0.3)
    else:
        big = LargeNCZYXQuilt(path, N, *S, W, step, border, 0.3)
    for k in rng.permutation(big.N_chunks):
        big.stitch(big.unstitch(x, int(k)).unsqueeze(0) * 3, int(k))
    q = big._q
    want, _ = q.stitch(q.unstitch(x) * 3)
    np.testing.assert_allclose(big.return_mean()[...], want.numpy(), rtol=1e-5, atol=1e-5)


def test_one_channel_patch_var_broadcasts_like_qlty(tmp_path):
    x = torch.randn(1, 3, 40, 44)
    var = torch.rand(1, 1, 16, 16) + 0.5
    outs = []
    for mod, name in ((qlty, "q"), (fc, "f")):
        big = mod.LargeNCYXQuilt(str(tmp_path / name), 1, 40, 44, (16, 16), (8, 8), (2, 2))
        for _ in range(big.N_chunks):
            k, patch = big.unstitch_next(x)
            big.stitch(patch.unsqueeze(0), k, var)
        mean, std = big.return_mean(std=True)
        outs.append((np.asarray(mean[...]), np.asarray(std[...])))
    for a, b in zip(*outs):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
