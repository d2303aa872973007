"""scatter_add_grid_batch_ (a grid's batches added with the accumulator zeroed and normalised
plane by plane) and grid_inverse_rows (the normalisation by classes of rows): the bits of
zero_ + scatter_add_windows_ per batch + grid_normalize_, the float64 reference, any thread
count, and the errors that keep a wrong grid from giving a silently wrong mean."""

import numpy as np
import pytest
import torch

import fastquilt as fq
import fastquilt.sliding as sliding
from fastquilt import ops
from fastquilt.grid import axis_row_classes

from .. import reference as ref
from ..conftest import requires_cuda
from ..random_geometry import random_grid
from .test_threads import with_threads

FQ = torch.ops.fastquilt


def three_passes(p, org, acc_shape, w, step, batch, fill, sums=None):
    """The bits to match: zero_, scatter_add_windows_ batch by batch, grid_normalize_ (by the
    weight sums of ``sums``, default ``w``: ones where the windows are unweighted)."""
    acc = torch.zeros(acc_shape, dtype=ops.acc_dtype(p.dtype))
    for lo in range(0, org.shape[0], batch):
        ops.scatter_add_windows_(p[lo:lo + batch], org[lo:lo + batch], acc, None, weight=w)
    return ops.grid_normalize_(acc, w if sums is None else sums, step, fill)


def planewise(p, org, acc_shape, w, step, batch, fill, spatial, sums=None):
    inv, cls = ops.grid_inverse_rows(w if sums is None else sums, spatial, step)
    acc = torch.full(acc_shape, float("nan"), dtype=ops.acc_dtype(p.dtype))  # any contents
    for lo in range(0, org.shape[0], batch):
        ops.scatter_add_grid_batch_(p[lo:lo + batch], org, lo, acc, inv, cls, weight=w,
                                    fill_value=fill)
    return acc


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(12))
def test_the_bits_of_three_passes_and_the_float64_reference(seed, dtype):
    rng = np.random.default_rng(seed)
    # steps past the window on the inner axes leave voxels no window covers (fill); the first
    # axis stays covered, as the op requires
    spatial, window, step, _ = random_grid(rng, 40, 14, gaps=2 if seed % 3 == 0 else 0)
    step = (min(step[0], window[0]), *step[1:])
    N, C = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    org = torch.as_tensor(ref.origins(spatial, window, step, N))
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn((org.shape[0], C, *window), generator=gen).to(dtype)
    wdt = torch.float64 if dtype == torch.float64 else torch.float32
    w = (torch.rand(window, generator=gen, dtype=wdt) + 0.05) if seed % 2 else None
    wt = w if w is not None else torch.ones(window, dtype=wdt)
    batch = int(rng.integers(1, org.shape[0] + 2))  # 1 window to all of them (and more)
    fill = float(rng.choice([0.0, -3.5]))
    shape = (N, C, *spatial)
    got = planewise(p, org, shape, w, step, batch, fill, spatial, sums=wt)
    want = three_passes(p, org, shape, w, step, batch, fill, sums=wt)
    assert torch.equal(got, want), f"{spatial} {window} {step} batch {batch}"
    mean, _ = ref.stitch(p.double().numpy(), spatial, window, step,
                         None if w is None else w.double().numpy(), fill)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(got.double().numpy(), mean, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", [((250, 250), (96, 96), (32, 32), 7),
                                  ((37, 29, 41), (9, 7, 10), (4, 3, 5), 13),
                                  ((5, 3, 300), (3, 2, 64), (1, 1, 17), 2)])
def test_the_same_bits_for_1_2_and_3_threads(case):
    spatial, window, step, batch = case
    gen = torch.Generator().manual_seed(3)
    org = torch.as_tensor(ref.origins(spatial, window, step, 2))
    p = torch.randn((org.shape[0], 3, *window), generator=gen)
    w = torch.rand(window, generator=gen) + 0.1
    run = lambda: planewise(p, org, (2, 3, *spatial), w, step, batch, 0.0, spatial)  # noqa: E731
    one = with_threads(1, run)
    assert torch.equal(one, three_passes(p, org, (2, 3, *spatial), w, step, batch, 0.0))
    for n in (2, 3):
        assert torch.equal(with_threads(n, run), one), f"{n} threads differ from one"


@pytest.mark.parametrize("case", [((20, 23), (8, 6), (4, 5)), ((9, 10, 11), (4, 5, 3), (3, 2, 3)),
                                  ((40, 33), (8, 6), (10, 9)), ((7, 30, 6), (7, 4, 6), (2, 9, 1))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inverse_rows_expand_to_the_inverse_weight_sum(case, dtype):
    spatial, window, step = case
    w = torch.rand(window, generator=torch.Generator().manual_seed(1), dtype=dtype) + 0.05
    inv, cls = ops.grid_inverse_rows(w, spatial, step)
    assert cls.shape == spatial[:-1] and cls.dtype == torch.int64
    assert inv.shape == (int(cls.max()) + 1, spatial[-1]) and inv.dtype == dtype
    # the fake kernel's count of classes is the kernel's
    classes = 1
    for S, k, s in zip(spatial[:-1], window[:-1], step[:-1]):
        classes *= axis_row_classes(S, k, s)
    assert inv.shape[0] == classes
    assert torch.equal(inv[cls], ops.grid_weight_sum(w, spatial, step, inverse=True))


def test_opcheck():
    spatial, window, step = (11, 9, 10), (4, 3, 5), (3, 2, 4)
    w = torch.rand(window) + 0.1
    torch.library.opcheck(FQ.grid_inverse_rows.default, (w, list(spatial), list(step)))
    inv, cls = ops.grid_inverse_rows(w, spatial, step)
    org = torch.as_tensor(ref.origins(spatial, window, step, 2))
    p = torch.randn((org.shape[0], 2, *window))
    acc = torch.empty((2, 2, *spatial))
    for first, batch in ((0, 5), (5, org.shape[0] - 5)):
        torch.library.opcheck(FQ.scatter_add_grid_batch_.default,
                              (p[first:first + batch], org, first, w, acc, inv, cls, 0.0))


def test_compiles_into_one_graph():
    torch._dynamo.reset()
    spatial, window, step = (20, 18), (8, 6), (4, 4)
    w = torch.rand(window) + 0.1
    org = torch.as_tensor(ref.origins(spatial, window, step, 1))
    p = torch.randn((org.shape[0], 2, *window))

    def f(p):
        inv, cls = ops.grid_inverse_rows(w, spatial, step)
        acc = torch.empty((1, 2, *spatial))
        ops.scatter_add_grid_batch_(p[:10], org, 0, acc, inv, cls, weight=w)
        ops.scatter_add_grid_batch_(p[10:], org, 10, acc, inv, cls, weight=w)
        return acc

    got = torch.compile(f, fullgraph=True, backend="eager")(p)
    assert torch.equal(got, three_passes(p, org, (1, 2, *spatial), w, step, 10, 0.0))


def _args(spatial=(12, 10), window=(4, 4), step=(4, 3), N=2):
    w = torch.rand(window) + 0.1
    inv, cls = ops.grid_inverse_rows(w, spatial, step)
    org = torch.as_tensor(ref.origins(spatial, window, step, N))
    p = torch.randn((org.shape[0], 1, *window))
    return p, org, torch.empty((N, 1, *spatial)), inv, cls, w


def _add_every_batch(p, org, acc, inv, cls, w, batch=3):
    for lo in range(0, org.shape[0], batch):
        ops.scatter_add_grid_batch_(p[lo:lo + batch], org, lo, acc, inv, cls, weight=w)


def test_a_grid_it_cannot_finish_plane_by_plane_is_refused():
    # (each call checks the windows it reads: a broken grid is refused at the batch that
    # reaches the break, before that batch is added)
    p, org, acc, inv, cls, w = _args()
    swapped = org.clone()
    swapped[[0, -1]] = swapped[[-1, 0]]
    with pytest.raises(ValueError, match=r"window 0 \(image 1, start 8\) breaks that"):
        _add_every_batch(p, swapped, acc, inv, cls, w)
    # every plane covered but not in order (the thresholds would zero or normalise a plane
    # twice): starts 0, 4, 2, 3, 1 of a (8, 4) image, windows (4, 4), step 1
    inv1, cls1 = ops.grid_inverse_rows(torch.ones(4, 4), (8, 4), (1, 4))
    shuffled = torch.tensor([[0, 0, 0], [0, 4, 0], [0, 2, 0], [0, 3, 0], [0, 1, 0]])
    acc1 = torch.empty(1, 1, 8, 4)
    ops.scatter_add_grid_batch_(torch.ones(1, 1, 4, 4), shuffled, 0, acc1, inv1, cls1)
    with pytest.raises(ValueError, match=r"window 2 \(image 0, start 2\) breaks that"):
        ops.scatter_add_grid_batch_(torch.ones(1, 1, 4, 4), shuffled, 1, acc1, inv1, cls1)
    band = org[org[:, 1] != 4]  # the planes 4..7 of every image have no window
    with pytest.raises(ValueError, match=r"window 3 \(image 0, start 8\) breaks that"):
        _add_every_batch(p, band, acc, inv, cls, w)
    one_image = org[org[:, 0] == 0]  # acc holds two images
    with pytest.raises(ValueError, match="end in image 0"):
        _add_every_batch(p, one_image, acc, inv, cls, w)
    short = org[org[:, 1] != 8]  # the last planes of each image have no window
    with pytest.raises(ValueError, match=r"window 6 \(image 1, start 0\) breaks that"):
        _add_every_batch(p, short, acc, inv, cls, w)
    with pytest.raises(ValueError, match="no windows"):
        ops.scatter_add_grid_batch_(p[:0], org[:0], 0, acc, inv, cls, weight=w)
    with pytest.raises(ValueError, match="must lie in the grid"):
        ops.scatter_add_grid_batch_(p[:3], org, org.shape[0] - 2, acc, inv, cls, weight=w)
    with pytest.raises(ValueError, match="must lie in the grid"):
        ops.scatter_add_grid_batch_(p[:3], org, -1, acc, inv, cls, weight=w)


def test_a_call_reads_only_its_batch_and_neighbours():
    # A window far from the batch is not read (nor bounds-checked) by its call: the cost of a
    # call does not grow with the grid (checking the whole grid each call cost windows^2 /
    # batch in all); the batch that holds it refuses it.
    p, org, acc, inv, cls, w = _args()
    far = org.clone()
    far[-1, 1] = 10_000
    ops.scatter_add_grid_batch_(p[:3], far, 0, acc, inv, cls, weight=w)
    with pytest.raises(ValueError, match="does not fit inside the image"):
        ops.scatter_add_grid_batch_(p[-3:], far, far.shape[0] - 3, acc, inv, cls, weight=w)


def test_bad_rows_are_refused():
    p, org, acc, inv, cls, w = _args()
    with pytest.raises(TypeError, match="inverse_rows must be Float like acc"):
        ops.scatter_add_grid_batch_(p[:3], org, 0, acc, inv.double(), cls, weight=w)
    with pytest.raises(ValueError, match=r"inverse_rows must be \(K, 10\)"):
        ops.scatter_add_grid_batch_(p[:3], org, 0, acc, inv[:, :5], cls, weight=w)
    with pytest.raises(ValueError, match="row_class must have shape"):
        ops.scatter_add_grid_batch_(p[:3], org, 0, acc, inv, cls[:5], weight=w)
    with pytest.raises(TypeError, match="row_class must be int64"):
        ops.scatter_add_grid_batch_(p[:3], org, 0, acc, inv, cls.int(), weight=w)
    bad = cls.clone()
    bad[3] = inv.shape[0]  # row 3 is normalised by the call that finishes plane 3
    with pytest.raises(ValueError, match=r"row_class\[3\] = .* is not a row of inverse_rows"):
        _add_every_batch(p, org, acc, inv, bad, w)
    flat = torch.zeros(acc.numel() + inv.numel())
    with pytest.raises(ValueError, match="shares memory"):
        ops.scatter_add_grid_batch_(p[:3], org, 0, flat[:acc.numel()].view(acc.shape),
                                    flat[:inv.numel()].view(inv.shape), cls, weight=w)
    with pytest.raises(ValueError, match="records no autograd"):
        ops.scatter_add_grid_batch_(p[:3].requires_grad_(), org, 0, acc, inv, cls, weight=w)


@pytest.mark.parametrize("case", [((2, 3, 70, 90), 16, (8, 12), 5, 0.0, False),
                                  ((1, 2, 20, 22, 18), (8, 6, 7), (4, 5, 3), 11, 0.0, False),
                                  ((3, 1, 40, 41), (8, 6), (6, 9), 7, -1.0, True),  # x gaps
                                  ((2, 1, 40, 41), (6, 8), (9, 6), 4, -1.0, True)])  # z gaps
def test_sliding_window_gives_the_bits_of_the_three_passes(case, monkeypatch):
    shape, window, step, batch, fill, gaps = case
    x = torch.randn(shape, generator=torch.Generator().manual_seed(4))

    def run():
        return fq.sliding_window(lambda t: t * 2 + 1, x, window, step, batch_size=batch,
                                 fill_value=fill, allow_gaps=gaps)

    calls = []
    fused = sliding.planewise_normalisation
    monkeypatch.setattr(sliding, "planewise_normalisation",
                        lambda q, acc: calls.append(fused(q, acc)) or calls[-1])
    got = run()
    # windows that leave planes of the first axis uncovered take the three passes
    first_axis_covered = (step if isinstance(step, tuple) else (step,))[0] <= \
        (window if isinstance(window, tuple) else (window,) * (x.dim() - 2))[0]
    assert (calls[0] is not None) == first_axis_covered
    monkeypatch.setattr(sliding, "planewise_normalisation", lambda q, acc: None)
    assert torch.equal(got, run())


def test_other_devices_are_pointed_to_the_three_passes():
    for device in (torch.device("cuda", 0), torch.device("mps")):
        with pytest.raises(ValueError, match="for tensors on .* use acc.zero_"):
            ops._cpu_only("scatter_add_grid_batch_", device, "acc.zero_(), ...")
    ops._cpu_only("grid_inverse_rows", torch.device("meta"), "")  # traced: fine


@requires_cuda
def test_cuda_tensors_are_pointed_to_the_three_passes():
    p, org, acc, inv, cls, w = _args()
    with pytest.raises(ValueError, match="grid_normalize_"):
        ops.scatter_add_grid_batch_(p[:3].cuda(), org.cuda(), 0, acc.cuda(), inv.cuda(),
                                    cls.cuda(), weight=w.cuda())
    with pytest.raises(ValueError, match="inverse=True"):
        ops.grid_inverse_rows(w.cuda(), (12, 10), (4, 3))


@pytest.mark.parametrize("window", [(4, 0), (4, 0, 3), (4, 3, 0)])
def test_empty_windows_add_nothing_and_planes_are_still_finished(window):
    """Windows with no elements (an axis of 0) add no rows: each plane is still zeroed and
    normalised (here: by rows of 2, so it stays 0), and nothing divides by a row length."""
    spatial = (8, *(5 for _ in window[1:]))
    org = torch.tensor([[0, 0] + [0] * (len(window) - 1), [0, 4] + [0] * (len(window) - 1)])
    acc = torch.full((1, 1, *spatial), 7.0)
    inv = torch.full((1, spatial[-1]), 2.0)
    cls = torch.zeros(spatial[:-1], dtype=torch.int64)
    ops.scatter_add_grid_batch_(torch.zeros((2, 1, *window)), org, 0, acc, inv, cls)
    assert torch.equal(acc, torch.zeros_like(acc))
