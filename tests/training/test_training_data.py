"""Label masking, cleaning from box sums, statistics, the lazy dataset and the CLI."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastquilt as fq
from fastquilt.cli import main as cli_main

from .. import reference as ref
from ..random_geometry import random_grid

qlty = pytest.importorskip("qlty", reason="qlty 1.5.0 is a test dependency")


def sparse_labels(shape, n_classes=3, density=0.02, seed=0, dtype=torch.int64, missing=-1):
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, n_classes, shape, generator=g).to(dtype)
    keep = torch.rand(shape, generator=g) < density
    return torch.where(keep, lab, torch.tensor(missing, dtype=dtype))


def brute_force(q, lab, missing):
    """Kept windows and stats by materialising every label patch (what qlty does)."""
    lab = lab if lab.dim() == q.ndim + 2 else lab.unsqueeze(1)
    lp = fq.gather_windows(lab, q.positions(lab.shape[0]), q.window)
    valid = (lp != missing) & (q.border_mask() > 0.5)
    per = valid.reshape(valid.shape[0], -1).sum(1)
    return torch.nonzero(per > 0).reshape(-1), per


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.float32])
def test_unstitch_pair_2d_matches_qlty(dtype):
    x = torch.randn(2, 3, 50, 61)
    lab = sparse_labels((2, 50, 61), dtype=dtype, missing=7, density=0.5)
    ql = qlty.NCYXQuilt(50, 61, (16, 16), (8, 8), (3, 3))
    q = fq.Quilt((50, 61), 16, 8, border=3)
    a, b = ql.unstitch_data_pair(x, lab, missing_label=7)
    xp, lp = fq.unstitch_pair(q, x, lab, missing_label=7)
    assert torch.equal(xp, a) and torch.equal(lp, b) and lp.dtype == dtype
    assert lp.shape == (2 * q.num_windows, 16, 16)


def test_unstitch_pair_3d_masks_the_frame():
    x = torch.randn(1, 1, 20, 22, 24)
    lab = torch.randint(0, 4, (1, 2, 20, 22, 24), dtype=torch.int16)  # (N, C, *S) labels
    q = fq.Quilt((20, 22, 24), 8, 6, border=(2, 1, 0))
    xp, lp = fq.unstitch_pair(q, x, lab, missing_label=-5)
    want = ref.gather(lab.numpy(), q.positions(1).numpy(), (8, 8, 8))
    frame = (q.border_mask() < 0.5).numpy()
    want[:, :, frame] = -5
    assert lp.dtype == torch.int16 and np.array_equal(lp.numpy(), want)


def test_missing_label_and_shape_errors():
    q = fq.Quilt((16, 16), 8, 4, border=1)
    x = torch.randn(1, 1, 16, 16)
    with pytest.raises(ValueError, match="cannot be represented in torch.uint8"):
        fq.unstitch_pair(q, x, torch.zeros(1, 16, 16, dtype=torch.uint8), missing_label=300)
    with pytest.raises(ValueError, match="integers only"):
        fq.unstitch_pair(q, x, torch.zeros(1, 16, 16, dtype=torch.int32), missing_label=1.5)
    with pytest.raises(ValueError, match="missing_label=nan cannot be stored"):
        fq.unstitch_pair(q, x, torch.zeros(1, 16, 16, dtype=torch.int32),
                         missing_label=float("nan"))
    with pytest.raises(ValueError, match="bool labels"):
        fq.unstitch_pair(q, x, torch.zeros(1, 16, 16, dtype=torch.bool), missing_label=0)
    with pytest.raises(ValueError, match=r"labels must have shape \(N, 16, 16\)"):
        fq.unstitch_pair(q, x, torch.zeros(1, 16, 15), missing_label=-1)
    with pytest.raises(ValueError, match="labels have 2 images but x has 1"):
        fq.unstitch_pair(q, x, torch.zeros(2, 16, 16), missing_label=-1)
    with pytest.raises(ValueError, match="missing_label is required"):
        fq.select_windows(q, torch.zeros(1, 16, 16), None)


def test_nan_missing_label_supported():
    q = fq.Quilt((16, 16), 8, 4, border=1)
    lab = torch.full((1, 16, 16), float("nan"))
    lab[0, 5, 5] = 1.0
    kept, stats = fq.select_windows(q, lab, float("nan"))
    _, per = brute_force(q, torch.nan_to_num(lab, nan=-1.0), -1.0)
    assert torch.equal(kept, torch.nonzero(per > 0).reshape(-1))
    assert stats.labelled_voxels == 1
    xp, lp, _, _ = fq.clean_pairs(q, torch.randn(1, 1, 16, 16), lab, float("nan"))
    assert torch.isnan(lp[:, 0, :]).all()  # the frame holds NaN


@given(
    Y=st.integers(12, 48), X=st.integers(12, 48), w=st.integers(4, 12), s=st.integers(1, 12),
    b=st.integers(0, 3), density=st.sampled_from([0.0, 0.001, 0.01, 0.2]),
    seed=st.integers(0, 1000), channels=st.booleans(),
)
def test_kept_set_equals_qlty_weed_2d(Y, X, w, s, b, density, seed, channels):
    w = min(w, Y, X)
    s = min(s, w)
    b = b if 2 * b < w else 0
    shape = (2, 2, Y, X) if channels else (2, Y, X)
    lab = sparse_labels(shape, density=density, seed=seed).float()
    x = torch.randn(2, 1, Y, X)
    ql = qlty.NCYXQuilt(Y, X, (w, w), (s, s), b)
    a, lb = ql.unstitch_data_pair(x, lab, missing_label=-1)
    _, _, removed = qlty.weed_sparse_classification_training_pairs_2D(a, lb, -1,
                                                                      ql.border_tensor())
    q = fq.Quilt((Y, X), w, s, border=b)
    xp, lp, kept, stats = fq.clean_pairs(q, x, lab, -1)
    assert torch.equal(kept, torch.nonzero(~removed).reshape(-1))
    assert xp.shape[0] == lp.shape[0] == stats.kept_windows == kept.numel()
    if kept.numel():
        _, cover = fq.scatter_add_windows(torch.empty((kept.numel(), 0, w, w)),
                                          q.positions(2)[kept], (Y, X), 2,
                                          weight=q.border_mask())
        lab_c = lab if lab.dim() == 4 else lab.unsqueeze(1)
        want = int(((lab_c != -1) & (cover.unsqueeze(1) > 0)).sum())
        assert stats.labelled_voxels_in_kept == want
    assert torch.equal(xp, a[~removed]) and torch.equal(lp, lb[~removed])


def test_kept_set_equals_qlty_weed_3d_and_stats_are_exact():
    shape = (48, 40, 56)
    lab = torch.full((1, *shape), -1)
    lab[0, 20] = sparse_labels(shape[1:], density=0.3, seed=1)  # one labelled XY slice
    lab[0, :, :, 30] = sparse_labels((48, 40), density=0.3, seed=2)  # one YZ slice
    x = torch.randn(1, 1, *shape)
    ql = qlty.NCZYXQuilt(*shape, (16, 16, 16), (8, 8, 8), (2, 2, 2))
    a, lb = ql.unstitch_data_pair(x, lab.float())
    lb[:, ql.border_tensor() < 0.5] = -1  # qlty 3D has no missing_label: mask by hand
    _, _, removed = qlty.weed_sparse_classification_training_pairs_3D(a, lb, -1,
                                                                      ql.border_tensor())
    q = fq.Quilt(shape, 16, 8, border=2)
    kept, stats = fq.select_windows(q, lab, -1)
    assert torch.equal(kept, torch.nonzero(~removed).reshape(-1))
    bk, per = brute_force(q, lab, -1)
    assert stats.labelled_occurrences == int(per.sum())
    assert stats.labelled_voxels == int((lab != -1).sum())
    assert stats.duplication_rate == pytest.approx(int(per.sum()) / int((lab != -1).sum()))
    assert stats.total_windows == q.num_windows and stats.reduction_factor > 1
    # distinct labelled voxels inside kept interiors, by brute force (scatter of the masks)
    empty = torch.empty((kept.numel(), 0, 16, 16, 16))
    _, cover = fq.scatter_add_windows(empty, q.positions(1)[kept], shape, 1,
                                      weight=q.border_mask())
    assert stats.labelled_voxels_in_kept == int(((lab != -1) & (cover > 0)).sum())
    counts = {k: int((lab == k).sum()) for k in range(3)}
    assert {k: v[0] for k, v in stats.per_class.items()} == counts
    assert "duplication rate" in str(stats)


def test_min_fraction_and_class_minimums():
    q = fq.Quilt((40, 40), 10, 5, border=1)
    lab = sparse_labels((1, 40, 40), density=0.2, seed=3)
    _, per = brute_force(q, lab, -1)
    kept, _ = fq.select_windows(q, lab, -1, min_labelled=5)
    assert torch.equal(kept, torch.nonzero(per >= 5).reshape(-1))
    kept, _ = fq.select_windows(q, lab, -1, min_fraction=0.1)  # interior 8x8 = 64 voxels
    assert torch.equal(kept, torch.nonzero(per >= 6.4).reshape(-1))
    kept, _ = fq.select_windows(q, lab, -1, class_min={2: 3})
    _, per2 = brute_force(q, torch.where(lab == 2, 2, -1), -1)
    assert torch.equal(kept, torch.nonzero((per >= 1) & (per2 >= 3)).reshape(-1))
    with pytest.raises(ValueError, match="min_labelled must be an int >= 1"):
        fq.select_windows(q, lab, -1, min_labelled=0)


def test_nothing_kept_gives_empty_tensors_and_says_so():
    q = fq.Quilt((20, 20, 20), 8, 4, border=2)
    lab = torch.full((1, 20, 20, 20), -1, dtype=torch.int8)
    xp, lp, kept, stats = fq.clean_pairs(q, torch.randn(1, 2, 20, 20, 20), lab, -1)
    assert xp.shape == (0, 2, 8, 8, 8) and lp.shape == (0, 8, 8, 8) and lp.dtype == torch.int8
    assert stats.kept_windows == 0 and "nothing to train on" in stats.table()


class CountingArray:
    """A numpy array that records every read (to prove the dataset reads lazily)."""

    def __init__(self, a):
        self.a, self.reads = a, []
        self.shape, self.dtype = a.shape, a.dtype

    def __getitem__(self, key):
        out = self.a[key]
        self.reads.append(out.size)
        return out


def test_patch_dataset_lazy_equals_clean_pairs_and_augments_deterministically(tmp_path):
    shape = (24, 30, 28)
    lab = torch.full((1, *shape), -1, dtype=torch.int16)
    lab[0, 12] = sparse_labels(shape[1:], density=0.2, seed=4, dtype=torch.int16)
    x = torch.randn(1, 1, *shape)
    q = fq.Quilt(shape, 8, 6, border=1)
    xp, lp, kept, _ = fq.clean_pairs(q, x, lab, -1)
    vol = CountingArray(x.numpy())
    ds = fq.PatchDataset(vol, lab.numpy(), q, missing_label=-1)
    assert len(ds) == kept.numel() and torch.equal(ds.indices, kept)
    for i in (0, len(ds) - 1):
        a, b = ds[i]
        assert torch.equal(a, xp[i]) and torch.equal(b, lp[i])
    assert max(vol.reads) == 8 * 8 * 8  # only single windows were read
    # memmap input and augmentation: deterministic per (seed, epoch, index), workers or not
    np.save(tmp_path / "x.npy", x.numpy())
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    aug = fq.PatchDataset(mm, lab, q, missing_label=-1, augment=True, seed=7)
    first = [aug[i] for i in range(len(aug))]
    loader = torch.utils.data.DataLoader(aug, batch_size=4, num_workers=2)
    got = [t for batch in loader for t in zip(*batch)]
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(first, got))
    # image and labels are transformed together: labelled voxels stay on the same values
    i = 0
    a, b = aug[i]
    assert (b != -1).sum() == (lp[i] != -1).sum()
    assert sorted(a[0][b != -1].tolist()) == sorted(xp[i, 0][lp[i] != -1].tolist())
    aug.set_epoch(1)
    assert any(not torch.equal(aug[j][0], first[j][0]) for j in range(len(aug)))
    # the frame is written into the dataset's own copy, never into the caller's labels
    lab_before, x_before = lab.clone(), x.clone()
    plain = fq.PatchDataset(x, lab, q, missing_label=-1)
    for j in range(len(plain)):
        plain[j][1].fill_(99)  # and what it serves is not a view of them either
        plain[j][0].fill_(99)
    assert torch.equal(lab, lab_before) and torch.equal(x, x_before)


def test_patch_dataset_on_zarr():
    zarr = pytest.importorskip("zarr")
    x = np.random.default_rng(0).standard_normal((1, 1, 16, 20)).astype(np.float32)
    z = zarr.create_array(store=zarr.storage.MemoryStore(), shape=x.shape, chunks=(1, 1, 8, 8),
                          dtype="float32")
    z[...] = x
    q = fq.Quilt((16, 20), 8, 4)
    ds = fq.PatchDataset(z, None, q)
    assert len(ds) == q.num_windows
    assert torch.equal(ds[3], q.unstitch(torch.from_numpy(x))[3])


def test_cli_plan(tmp_path, capsys):
    lab = np.full((32, 40, 36), -1, dtype=np.int8)
    lab[16, ::3, ::3] = 1
    np.save(tmp_path / "lab.npy", lab)
    rc = cli_main(["plan", "--shape", "32", "40", "36", "--window", "16", "--step", "8",
                   "--border", "2", "--labels", str(tmp_path / "lab.npy")])
    out = capsys.readouterr().out
    assert rc == 0 and "windows kept" in out and "duplication rate" in out
    rc = cli_main(["plan", "--shape", "32", "40", "--window", "64", "--step", "8"])
    assert rc == 2 and "larger than the image" in capsys.readouterr().err
    zarr = pytest.importorskip("zarr")  # a (*S) zarr array: no N axis, read slab by slab
    z = zarr.create_array(store=str(tmp_path / "lab.zarr"), shape=lab.shape, dtype=lab.dtype,
                          chunks=(4, 40, 36))
    z[...] = lab
    rc = cli_main(["plan", "--shape", "32", "40", "36", "--window", "16", "--step", "8",
                   "--border", "2", "--labels", str(tmp_path / "lab.zarr")])
    assert rc == 0 and capsys.readouterr().out == out
    base = ["plan", "--shape", "32", "40", "36", "--window", "16", "--step", "8", "--labels"]
    with pytest.raises(SystemExit, match="labels .*missing.npy do not exist"):  # was a traceback
        cli_main(base + [str(tmp_path / "missing.npy")])
    (tmp_path / "bad.npy").write_text("not an array")
    with pytest.raises(SystemExit, match="cannot read labels .*bad.npy"):
        cli_main(base + [str(tmp_path / "bad.npy")])


@given(density=st.sampled_from([0.001, 0.05, 0.5, 1.0]), seed=st.integers(0, 50),
       three_d=st.booleans())
def test_dense_and_sparse_box_sums_agree(density, seed, three_d):
    from fastquilt.training.box_sums import coordinate_box_sums, grid_box_sums

    shape = (2, 2, 21, 18, 17) if three_d else (2, 2, 37, 29)
    q = fq.Quilt(shape[2:], 7, 3, border=1)
    valid = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < density
    a = grid_box_sums(valid, q)
    b = coordinate_box_sums(torch.nonzero(valid), 2, q)
    _, per = brute_force(q, torch.where(valid, 1, -1), -1)
    assert torch.equal(a, per) and torch.equal(b, per)


class _ReadLog:
    """An array-like that records how many planes (first spatial axis) each read spans."""

    def __init__(self, a, ndim):
        self.a, self.shape, self.dtype, self.planes = a, a.shape, a.dtype, []
        self.depth = a.shape[-ndim]

    def __getitem__(self, key):
        z = key[-1] if isinstance(key, tuple) else slice(None)  # (n, [:,] z) or ...
        self.planes.append(len(range(*z.indices(self.depth))))
        return self.a[key]


@pytest.mark.parametrize("case", ["sparse3d", "sparse2d_channels", "dense3d", "nan_missing"])
def test_labels_on_disk_are_read_slab_by_slab_and_select_the_same(case, tmp_path, monkeypatch):
    import fastquilt.training.label_scan as stream

    rng = np.random.default_rng(7)
    if case == "sparse2d_channels":
        q, lab = fq.Quilt((60, 50), 12, 6, border=2), np.full((2, 2, 60, 50), -1, np.int16)
        lab[:, :, rng.integers(0, 60, 40), rng.integers(0, 50, 40)] = rng.integers(0, 3, 40)
    else:
        q, lab = fq.Quilt((40, 36, 32), 12, 6, border=2), np.full((2, 40, 36, 32), -1, np.int8)
        if case == "dense3d":
            lab = rng.integers(-1, 3, lab.shape).astype(np.int8)
        else:
            lab[:, rng.integers(0, 40, 60), rng.integers(0, 36, 60), rng.integers(0, 32, 60)] = 1
    missing = -1
    if case == "nan_missing":
        lab = np.where(lab < 0, np.nan, lab).astype(np.float32)
        missing = float("nan")
    monkeypatch.setattr(stream, "_SLAB_BYTES", 1)  # one plane per read
    want_k, want_s = fq.select_windows(q, torch.from_numpy(lab), missing, min_labelled=2)
    np.save(tmp_path / "lab.npy", lab)
    for arr in (np.load(tmp_path / "lab.npy", mmap_mode="r"), zarr_like(lab, tmp_path)):
        log = _ReadLog(arr, q.ndim)
        got_k, got_s = fq.select_windows(q, log, missing, min_labelled=2)
        assert torch.equal(got_k, want_k) and got_s == want_s
        if case != "dense3d":
            assert max(log.planes) == 1  # never the whole array
        else:
            assert max(log.planes) == lab.shape[-3]  # dense: gave up, read it whole
    # a large tensor: slab-wise
    monkeypatch.setattr(fq.training.cleaning, "STREAM_TENSORS_ABOVE", 0)
    got_k, got_s = fq.select_windows(q, torch.from_numpy(lab), missing, min_labelled=2)
    assert torch.equal(got_k, want_k) and got_s == want_s
    if case == "sparse3d":  # a chunked store is read in whole chunks along the first axis
        log = _ReadLog(np.load(tmp_path / "lab.npy", mmap_mode="r"), q.ndim)
        log.chunks = (1, 4, 36, 32)
        assert torch.equal(fq.select_windows(q, log, missing, min_labelled=2)[0], want_k)
        assert set(log.planes) == {4}
    ds = fq.PatchDataset(np.zeros((lab.shape[0], 1, *lab.shape[-q.ndim:]), np.float32),
                         np.load(tmp_path / "lab.npy", mmap_mode="r"), q, missing)
    assert torch.equal(ds.indices, fq.select_windows(q, torch.from_numpy(lab), missing)[0])


def zarr_like(a, tmp_path):
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(store=str(tmp_path / "lab.zarr"), shape=a.shape, dtype=a.dtype,
                          chunks=(1,) * (a.ndim - 2) + a.shape[-2:], overwrite=True)
    z[...] = a
    return z


@settings(max_examples=min(settings().max_examples, 30))
@given(seed=st.integers(0, 2**31 - 1))
def test_patch_dataset_equals_clean_pairs_for_random_geometries(seed):
    # Lazy per-item reads (labels given as a numpy array: the slab-wise window choice) against
    # clean_pairs on tensors, over random 2D/3D shapes, windows, steps, borders, channels and
    # label densities.
    rng = np.random.default_rng(seed)
    S, W, step, border = random_grid(rng, 40, 14, min_size=2)
    q = fq.Quilt(S, W, step, border=border)
    N = int(rng.integers(1, 3))
    shape = (N, *S) if rng.integers(0, 2) else (N, int(rng.integers(1, 3)), *S)
    lab = np.where(rng.random(shape) < rng.choice([0.002, 0.05, 0.5]),
                   rng.integers(0, 3, shape), -1).astype(np.int8)
    x = torch.from_numpy(rng.standard_normal((N, 2, *S)).astype(np.float32))
    xp, lp, kept, stats = fq.clean_pairs(q, x, torch.from_numpy(lab), -1)
    ds = fq.PatchDataset(x.numpy(), lab, q, missing_label=-1)
    assert torch.equal(ds.indices, kept) and ds.stats == stats
    for i in range(len(ds)):
        a, b = ds[i]
        assert torch.equal(a, xp[i]) and torch.equal(b, lp[i])
    criteria = dict(min_labelled=int(rng.integers(1, 4)),
                    min_fraction=[None, 0.01, 0.2][int(rng.integers(0, 3))],
                    class_min=[None, {1: 1}, {0: 2, 2: 1}][int(rng.integers(0, 3))])
    want = fq.select_windows(q, torch.from_numpy(lab), -1, **criteria)
    got = fq.select_windows(q, lab, -1, **criteria)  # slab-wise while sparse
    assert torch.equal(got[0], want[0]) and got[1] == want[1]


def test_set_epoch_reaches_persistent_dataloader_workers():
    x = torch.randn(1, 1, 32, 32)
    lab = torch.randint(0, 2, (1, 32, 32))
    ds = fq.PatchDataset(x, lab, fq.Quilt((32, 32), 8, 8), -1, augment=True, seed=1)

    def epochs(loader):
        out = []
        for e in range(3):
            ds.set_epoch(e)
            out.append(torch.cat([b[0] for b in loader]))
        return out

    want = epochs(torch.utils.data.DataLoader(ds, batch_size=4))
    assert not torch.equal(want[0], want[1])  # the epochs draw different augmentations
    got = epochs(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2,
                                             persistent_workers=True))
    assert all(torch.equal(a, b) for a, b in zip(want, got))


def test_plan_cli_nan_missing_label_with_integer_labels(tmp_path, capsys):
    np.save(tmp_path / "lab.npy", np.zeros((16, 16), np.int8))
    rc = cli_main(["plan", "--shape", "16", "16", "--window", "8", "--step", "4", "--labels",
                   str(tmp_path / "lab.npy"), "--missing-label", "nan"])
    assert rc == 2
    assert "missing_label=nan cannot be stored in torch.int8 labels" in capsys.readouterr().err
