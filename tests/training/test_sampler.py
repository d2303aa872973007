"""WindowSampler: the grid mode serves every kept window once per epoch; label-aware draws
follow their definition (chi-square, and counts against brute force); the fused augmentation
equals permute/flip of plain windows and is the same for image and labels; batches depend only
on (seed, epoch, step) — not on the device, the source or DataLoader workers; bad input is a
clear error."""

import numpy as np
import pytest
import torch

import fastquilt as fq
from fastquilt.training import sampling

from ..conftest import DEVICES

MISSING = -1


def _data(spatial=(20, 22, 18), N=2, C=2, seed=0, classes=3, density=0.01):
    g = torch.Generator().manual_seed(seed)
    vol = torch.randn(N, C, *spatial, generator=g)
    lab = torch.randint(0, classes, (N, *spatial), generator=g)
    lab = torch.where(torch.rand(N, *spatial, generator=g) < density, lab, MISSING)
    return vol, lab


def _brute_counts(q, lab, missing, value=None):
    """Labelled voxels (of class ``value``) in each window's interior, by gathering every
    label window."""
    lp = fq.gather_windows(lab.unsqueeze(1), q.grid.origins(lab.shape[0]), q.window)
    hit = (lp != missing) if value is None else (lp == value)
    return (hit & (q.border_mask() > 0.5)).reshape(lp.shape[0], -1).sum(1)


def _reference_batch(vol, lab, q, origins, orient):
    """Plain windows, then torch.permute / torch.flip per window, the frame masked."""
    xs, ys = [], []
    for o, code in zip(origins.tolist(), orient.tolist()):
        sl = tuple(slice(a, a + w) for a, w in zip(o[1:], q.window))
        x, y = vol[o[0]][(slice(None), *sl)], lab[o[0]][sl].clone()
        y[q.border_mask() < 0.5] = MISSING
        axes = [abs(c) - 1 for c in code]
        back = [d for d, c in enumerate(code) if c < 0]
        xs.append(x.permute(0, *[1 + a for a in axes]).flip([1 + d for d in back]))
        ys.append(y.permute(*axes).flip(back))
    return torch.stack(xs), torch.stack(ys)


def test_grid_serves_every_kept_window_once_per_epoch():
    vol, lab = _data()
    q = fq.Quilt(vol.shape[2:], 8, 4, border=1)
    s = fq.WindowSampler(vol, lab, q, MISSING, batch_size=5, where="grid")
    kept, _ = fq.select_windows(q, lab, MISSING)
    want = sorted(map(tuple, q.grid.origins(2, indices=kept).tolist()))
    orders = []
    for epoch in (0, 1):
        s.set_epoch(epoch)
        seen = [tuple(o) for step in range(len(s)) for o in s.draw(step)[0].tolist()]
        assert sorted(seen) == want and len(s) == -(-len(want) // 5)
        orders.append(seen)
    assert orders[0] != orders[1]  # reshuffled
    assert sum(x.shape[0] for x, _ in s) == len(want)


def test_label_counts_match_brute_force():
    vol, lab = _data(classes=3, density=0.05)
    q = fq.Quilt(vol.shape[2:], 8, 5, border=2)
    total, per_class = fq.training.window_label_counts(q, lab, MISSING, per_class=True)
    assert torch.equal(total, _brute_counts(q, lab, MISSING))
    assert sorted(per_class) == [0, 1, 2]
    for k, c in per_class.items():
        assert torch.equal(c, _brute_counts(q, lab, MISSING, k))


def test_labelled_draws_follow_their_definition_chi_square():
    vol, lab = _data(spatial=(16, 16, 16), N=1, density=0.03)
    q = fq.Quilt(vol.shape[2:], 8, 4, border=1)
    s = fq.WindowSampler(vol, lab, q, MISSING, batch_size=500, where="labelled")
    counts = _brute_counts(q, lab, MISSING).double()
    p = counts / counts.sum()
    index = {tuple(o): i for i, o in enumerate(q.grid.origins(1).tolist())}
    hits = torch.zeros_like(p)
    for step in range(40):
        for o in s.draw(step)[0].tolist():
            hits[index[tuple(o)]] += 1
    assert int(hits[p == 0].sum()) == 0  # never a window without labels in its interior
    n = hits.sum()
    nz = p > 0
    chi2 = float(((hits[nz] - n * p[nz]) ** 2 / (n * p[nz])).sum())
    dof = int(nz.sum()) - 1
    assert chi2 < dof + 6 * (2 * dof) ** 0.5  # far beyond the 1e-6 tail for this dof
    # the test can fail: uniform draws over the labelled windows are rejected
    uniform = torch.where(nz, n / nz.sum(), 0.0)
    assert float(((uniform[nz] - n * p[nz]) ** 2 / (n * p[nz])).sum()) > dof + 6 * (2 * dof) ** 0.5


def test_balanced_batches_hold_every_class():
    vol, lab = _data(classes=3, density=0.01)
    q = fq.Quilt(vol.shape[2:], 8, 4, border=1)
    s = fq.WindowSampler(vol, lab, q, MISSING, batch_size=3, where="balanced", steps_per_epoch=8)
    assert len(s) == 8
    for _, y in s:
        for k in (0, 1, 2):
            assert bool((y == k).any(dim=(1, 2, 3)).any()), k


@pytest.mark.parametrize("where", ["grid", "uniform", "labelled", "balanced"])
def test_augmented_batches_are_permuted_flipped_windows(where):
    vol, lab = _data(spatial=(14, 12, 12), classes=2, density=0.05)
    q = fq.Quilt(vol.shape[2:], (6, 6, 6), 3, border=1)
    s = fq.WindowSampler(vol, lab, q, MISSING, batch_size=16, where=where, seed=3)
    x, y = s.batch(1)
    origins, orient = s.draw(1)
    assert len({tuple(r) for r in orient.tolist()}) > 4  # several orientations in play
    want_x, want_y = _reference_batch(vol, lab, q, origins, orient)
    assert torch.equal(x, want_x) and torch.equal(y, want_y)


def test_image_and_labels_turn_together():
    _, lab = _data(spatial=(12, 12, 12), N=1, density=0.3)
    q = fq.Quilt(lab.shape[1:], 6, 3, border=1)
    vol = lab.unsqueeze(1).double()  # the image is the labels: they must stay equal
    s = fq.WindowSampler(vol, lab, q, MISSING, batch_size=32, where="uniform", seed=1,
                         dtype=torch.float64)
    x, y = s.batch(0)
    interior = q.border_mask() > 0.5
    assert torch.equal(x[:, 0][:, interior], y[:, interior].double())
    assert bool((y[:, ~interior] == MISSING).all())


def test_uniform_positions_leave_the_grid():
    vol, _ = _data(spatial=(20, 20, 20))
    q = fq.Quilt(vol.shape[2:], 8, 4)
    s = fq.WindowSampler(vol, None, q, batch_size=200, where="uniform", augment=False)
    origins, orient = s.draw(0)
    assert bool((origins[:, 1:] % 4 != 0).any())
    assert int(origins[:, 1:].min()) >= 0 and int(origins[:, 1:].max()) <= 12
    assert torch.equal(orient, torch.tensor([[1, 2, 3]]).expand(200, 3))
    x = s.batch(0)
    assert torch.equal(x, fq.gather_windows(vol, origins, q.window))


def test_orientation_choices_keep_shape_and_frame():
    assert sampling.orientation_choices((8, 8, 8)).shape == (48, 3)
    assert sampling.orientation_choices((8, 8), (2, 2)).shape == (8, 2)
    assert sampling.orientation_choices((8, 8, 8), (1, 1, 2)).shape == (16, 3)  # z <-> y only
    assert sampling.orientation_choices((4, 6, 8)).shape == (8, 3)  # flips only


@pytest.mark.parametrize("device", DEVICES)
def test_same_batches_for_same_seed_on_every_device_and_source(device, tmp_path):
    vol, lab = _data()
    q = fq.Quilt(vol.shape[2:], 8, 4, border=1)
    kw = dict(batch_size=6, where="labelled", seed=11)
    base = fq.WindowSampler(vol, lab, q, MISSING, **kw)
    mm = np.lib.format.open_memmap(tmp_path / "v.npy", "w+", np.float32, tuple(vol.shape))
    mm[:] = vol.numpy()
    mm.flush()
    zarr = pytest.importorskip("zarr")
    zl = zarr.create_array(store=zarr.storage.MemoryStore(), shape=lab.shape, dtype="int64",
                           chunks=(1, 8, 8, 8))
    zl[:] = lab.numpy()
    others = [
        fq.WindowSampler(vol.to(device), lab.to(device), q, MISSING, device=device, **kw),
        fq.WindowSampler(np.load(tmp_path / "v.npy", mmap_mode="r"), zl, q, MISSING,
                         device=device, **kw),
        fq.WindowSampler(vol, lab, q, MISSING, device=device, **kw),  # CPU -> device
    ]
    for step in range(3):
        x0, y0 = base.batch(step)
        for other in others:
            x, y = other.batch(step)
            assert x.device.type == torch.device(device).type
            assert torch.equal(x.cpu(), x0) and torch.equal(y.cpu(), y0)
    assert not torch.equal(base.batch(0)[0], fq.WindowSampler(vol, lab, q, MISSING,
                                                              **{**kw, "seed": 12}).batch(0)[0])


def test_strided_numpy_views_are_read_window_by_window():
    vol, lab = _data(spatial=(12, 12, 12))
    q = fq.Quilt(vol.shape[2:], 6, 3, border=1)
    flipped = np.flip(vol.numpy(), axis=2)  # negative strides: no tensor can view it
    s = fq.WindowSampler(flipped, lab.numpy(), q, MISSING, batch_size=4, where="uniform")
    want = fq.WindowSampler(torch.from_numpy(flipped.copy()), lab, q, MISSING, batch_size=4,
                            where="uniform")
    for a, b in zip(s.batch(0), want.batch(0)):
        assert torch.equal(a, b)


def test_dataloader_workers_serve_the_same_batches():
    vol, lab = _data(spatial=(12, 12, 12))
    q = fq.Quilt(vol.shape[2:], 6, 3, border=1)
    s = fq.WindowSampler(vol, lab, q, MISSING, batch_size=4, where="uniform", steps_per_epoch=5)
    s.set_epoch(2)
    direct = list(s)
    loaded = list(torch.utils.data.DataLoader(s, batch_size=None, num_workers=2))
    assert len(direct) == len(loaded) == 5
    for (x0, y0), (x1, y1) in zip(direct, loaded):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_bad_input_is_a_clear_error():
    vol, lab = _data(spatial=(12, 12, 12))
    q = fq.Quilt(vol.shape[2:], 6, 3, border=1)
    with pytest.raises(ValueError, match="labels must have shape"):
        fq.WindowSampler(vol, lab[:, :10], q, MISSING, batch_size=2)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        fq.WindowSampler(vol, lab, q, MISSING, batch_size=0)
    with pytest.raises(ValueError, match="volume must have shape"):
        fq.WindowSampler(vol[:, :, :5], lab, q, MISSING, batch_size=2)
    with pytest.raises(ValueError, match="window"):
        fq.WindowSampler(vol[:, :, :5, :5, :5], None, fq.Quilt((5, 5, 5), 6, 3), batch_size=2)
    empty = torch.full_like(lab, MISSING)
    for where in ("grid", "labelled", "balanced"):
        with pytest.raises(ValueError, match="no window holds a labelled voxel"):
            fq.WindowSampler(vol, empty, q, MISSING, batch_size=2, where=where)
    with pytest.raises(ValueError, match="needs labels and missing_label"):
        fq.WindowSampler(vol, lab, q, batch_size=2, where="labelled")
    with pytest.raises(ValueError, match="where must be one of"):
        fq.WindowSampler(vol, lab, q, MISSING, batch_size=2, where="random")


def test_2d_batches_are_permuted_flipped_windows():
    g = torch.Generator().manual_seed(5)
    vol = torch.randn(2, 3, 30, 28, generator=g)
    lab = torch.where(torch.rand(2, 30, 28, generator=g) < 0.1,
                      torch.randint(0, 2, (2, 30, 28), generator=g), MISSING)
    q = fq.Quilt(vol.shape[2:], 10, 5, border=2)
    s = fq.WindowSampler(vol, lab, q, MISSING, batch_size=12, where="uniform", seed=2)
    (x, y), (origins, orient) = s.batch(0), s.draw(0)
    assert x.shape == (12, 3, 10, 10) and y.shape == (12, 10, 10)
    assert len({tuple(r) for r in orient.tolist()}) > 3
    want_x, want_y = _reference_batch(vol, lab, q, origins, orient)
    assert torch.equal(x, want_x) and torch.equal(y, want_y)


@pytest.mark.parametrize("big", [False, True])
def test_a_strided_volume_is_never_copied_whole_per_batch(monkeypatch, big):
    # A strided tensor would be copied whole by the kernels for every batch: over 8 batches'
    # voxels it is read window by window (a contiguous source only reaches the kernels).
    base = torch.randn(2, 2, 24, 24, 48 if big else 16)
    vol = base[..., :24] if big else base.transpose(2, 4)[:, :, :, :, :16]
    lab = torch.randint(0, 3, (2, *vol.shape[2:]))
    q = fq.Quilt(vol.shape[2:], 8, 4)
    whole = []
    for name in ("gather_windows_oriented_into", "gather_windows_oriented"):
        op = getattr(fq.ops, name)

        def seen(src, *a, _op=op, **k):
            whole.append(not src.is_contiguous() and src.shape[2:] == vol.shape[2:])
            return _op(src, *a, **k)

        monkeypatch.setattr(fq.ops, name, seen)
    kw = dict(batch_size=2, where="uniform", seed=4, steps_per_epoch=3, augment=True)
    got = list(fq.WindowSampler(vol, lab, q, MISSING, **kw))
    want = list(fq.WindowSampler(vol.contiguous(), lab, q, MISSING, **kw))
    assert len(got) == 3 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                                 for a, b in zip(got, want))
    # 2 x 24^3 voxels are over 8 batches' (8 * 2 * 8^3); 2 x 24 x 24 x 16 too, but the small
    # transposed one stays under a copy: only the big one must avoid whole copies
    if big:
        assert not any(whole)
