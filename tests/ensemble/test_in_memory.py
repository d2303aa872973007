"""Ensembles, test-time augmentation and the outputs in memory: each TTA set inverts exactly,
TTA equals the ensemble of transformed models, mean and variance against a float64 reference
(large means, small spreads), class outputs from the mean, clear errors."""

import numpy as np
import pytest
import torch

import fastquilt as fq
from fastquilt.reductions import Reduction
from fastquilt.tta import apply_transform, invert_transform, tta_transforms

ALL = ("mean", "std", "variance", "labels", "probability", "entropy")


def _convs(n, c_in, c_out, D, k=3, seed=0):
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d if D == 3 else torch.nn.Conv2d
    return [conv(c_in, c_out, k, padding=k // 2).eval() for _ in range(n)]


@pytest.mark.parametrize("window", [(4, 4), (4, 5), (4, 4, 4), (3, 4, 3)])
@pytest.mark.parametrize("tta", ["none", "flips", "all"])
def test_every_transform_inverts_exactly_and_all_are_distinct(tta, window):
    x = torch.randn(2, 3, *window)
    ts = tta_transforms(tta, window)
    sizes = {"none": 1, "flips": 2 ** len(window)}
    perms = {(4, 4): 2, (4, 5): 1, (4, 4, 4): 6, (3, 4, 3): 2}[window]
    assert len(ts) == sizes.get(tta, 2 ** len(window) * perms) and ts[0] == (
        tuple(range(len(window))), ())
    assert len({apply_transform(x, t).numpy().tobytes() for t in ts}) == len(ts)
    for t in ts:
        assert torch.equal(invert_transform(apply_transform(x, t), t), x)


@pytest.mark.parametrize("D,tta", [(2, "all"), (3, "all"), (3, "flips")])
def test_an_equivariant_model_gives_zero_std(D, tta):
    """A voxelwise model (elementwise ops: the same bits wherever a voxel sits in a window;
    a 1x1 convolution's GEMM rounds by position) predicts the same at a voxel under every
    transform and in every window: the variance must be exactly 0 (a wrong inverse would
    move predictions)."""
    ms = [lambda p: torch.cat([p, 2 * p, 0.5 - p], 1)]
    x = torch.randn(1, 1, *([20] * D))
    r = fq.sliding_window(ms, x, 8, 6, outputs=("mean", "std"), tta=tta,
                          activation="softmax")
    assert r["std"].abs().max() == 0
    single = fq.sliding_window(ms[0], x, 8, 6, outputs="mean", activation="softmax")
    torch.testing.assert_close(r["mean"], single)
    # a model that is not equivariant gives a std that is not 0
    r = fq.sliding_window(_convs(1, 1, 3, D), x, 8, 6, outputs="std", tta=tta)
    assert r.abs().max() > 1e-3


def test_tta_equals_the_ensemble_of_transformed_models():
    ms = _convs(2, 2, 3, 3)
    x = torch.randn(1, 2, 18, 16, 16)
    window = (8, 8, 8)

    def transformed(m, t):
        return lambda p: invert_transform(m(apply_transform(p, t).contiguous()), t)

    members = [transformed(m, t) for m in ms for t in tta_transforms("all", window)]
    got = fq.sliding_window(ms, x, window, 5, outputs=("mean", "variance"), tta="all",
                            activation="sigmoid")
    want = fq.sliding_window(members, x, window, 5, outputs=("mean", "variance"),
                             activation="sigmoid")
    for k in got:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)


def _float64_moments(models, x, window, step):
    """Weighted mean and variance over all members of all windows, in float64."""
    q = fq.Quilt(x.shape[2:], window, step, weight="gaussian")
    w = q.weight.double().numpy()
    S = q.spatial_shape
    s0 = np.zeros(S)
    s1 = s2 = None
    for o in q.origins(1).tolist():
        box = tuple(slice(a, a + b) for a, b in zip(o[1:], q.window))
        p = np.stack([m(x[(slice(None), slice(None), *box)]).double().numpy()[0]
                      for m in models])  # (M, C, *window)
        if s1 is None:
            s1, s2 = np.zeros((p.shape[1], *S)), np.zeros((p.shape[1], *S))
        s0[box] += w
        s1[(slice(None), *box)] += w * p.mean(0)
        s2[(slice(None), *box)] += w * (p ** 2).mean(0)
    mean = s1 / s0
    return mean, s2 / s0 - mean ** 2


def test_variance_against_float64_with_large_means_and_small_spreads():
    """Predictions near 1e4 with spreads near 1: a float32 E[x^2] - E[x]^2 loses the variance
    to cancellation; the merged moments must not."""
    torch.manual_seed(1)
    noise = [torch.randn(1, 2, 1, 1) * s for s in (0.5, 1.0, 2.0)]
    models = [lambda p, e=e: 1e4 + p.repeat(1, 2, 1, 1) * 0.3 + e for e in noise]
    x = torch.randn(1, 1, 30, 26)
    r = fq.sliding_window(models, x, 10, 7, outputs=("mean", "variance"))
    mean, var = _float64_moments(models, x, (10, 10), (7, 7))
    np.testing.assert_allclose(r["mean"][0].double().numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(r["variance"][0].double().numpy(), var, rtol=2e-3, atol=1e-4)
    # the naive float32 formula is far off here: the comparison above can fail
    p = torch.stack([m(x) for m in models]).float()
    naive = (p ** 2).mean(0) - p.mean(0) ** 2
    assert (naive - p.var(0, unbiased=False)).abs().max() > 0.1


def test_class_outputs_come_from_the_mean():
    ms = _convs(3, 1, 5, 2)
    x = torch.randn(2, 1, 23, 19)
    r = fq.sliding_window(ms, x, 8, 5, outputs=ALL, tta="flips", activation="softmax")
    mean = r["mean"]
    assert r["labels"].dtype == torch.uint8 and r["labels"].shape == (2, 1, 23, 19)
    assert torch.equal(r["labels"][:, 0].long(), mean.argmax(1))
    torch.testing.assert_close(r["probability"][:, 0], mean.amax(1))
    torch.testing.assert_close(r["entropy"][:, 0], -(mean * mean.log()).sum(1))
    torch.testing.assert_close(r["std"] ** 2, r["variance"])
    torch.testing.assert_close(mean.sum(1), torch.ones(2, 23, 19))
    # labels alone: the same labels without returning the mean
    lab = fq.sliding_window(ms, x, 8, 5, outputs="labels", tta="flips", activation="softmax")
    assert torch.equal(lab, r["labels"])


def test_bad_input_is_refused_clearly():
    x = torch.randn(1, 1, 16, 16)
    m = _convs(1, 1, 3, 2)[0]
    with pytest.raises(ValueError, match="outputs must be names among"):
        fq.sliding_window(m, x, 8, 4, outputs=("mean", "median"))
    with pytest.raises(ValueError, match="need class probabilities: pass activation='softmax'"):
        fq.sliding_window(m, x, 8, 4, outputs=("labels",))
    with pytest.raises(ValueError, match="need class probabilities"):
        fq.sliding_window(m, x, 8, 4, outputs="entropy", activation="sigmoid")
    with pytest.raises(ValueError, match="tta must be one of"):
        fq.sliding_window([m], x, 8, 4, tta="rotations")
    with pytest.raises(ValueError, match="activation must be one of"):
        fq.sliding_window([m], x, 8, 4, activation="relu")
    with pytest.raises(ValueError, match="disagree on the number of output channels"):
        fq.sliding_window([m, _convs(1, 1, 4, 2)[0]], x, 8, 4, outputs=("mean",))
    with pytest.raises(ValueError, match="empty list"):
        fq.sliding_window([], x, 8, 4)
    with pytest.raises(ValueError, match="at most 65535 classes"):
        Reduction(("labels",), 65536)
    with pytest.raises(ValueError, match="names an output twice"):
        fq.sliding_window([m], x, 8, 4, outputs=("mean", "mean"))


def test_the_epilogue_of_a_strided_unit_in_blocks_equals_the_whole(monkeypatch):
    from fastquilt import reductions

    g = torch.Generator().manual_seed(0)
    slab = torch.rand(1, 6, 20, 9, 11, generator=g)
    wsum = torch.rand(1, 20, 9, 11, generator=g)
    wsum[0, 3] = 0
    red = Reduction(("labels", "probability", "entropy", "mean"), 6, fill_value=0.5)
    view, wview = slab[:, :, 2:17, 1:8], wsum[:, 2:17, 1:8]
    whole = red.finish(view.contiguous(), wview.contiguous())
    monkeypatch.setattr(reductions, "EPILOGUE_BLOCK_BYTES", 4 * 6 * 7 * 11 * 2)  # 2 planes
    blocks = red.finish(view, wview)
    for k in whole:
        assert torch.equal(whole[k], blocks[k]), k


@pytest.mark.parametrize("members", [1, 2])
def test_voxels_no_window_covers_hold_the_fill_value_in_every_float_output(members):
    # (the entropy was taken of the filled means: -C fill log fill)
    x = torch.randn(1, 1, 40, 22)
    models = _convs(members, 1, 3, 2)
    y = fq.sliding_window(models if members > 1 else models[0], x, (4, 8), (12, 6),
                          allow_gaps=True, outputs=ALL, activation="softmax", fill_value=5.0)
    covered = fq.sliding_window(lambda p: torch.ones_like(p), x, (4, 8), (12, 6),
                                allow_gaps=True)[:, 0] == 1
    assert 0 < int(covered.sum()) < covered.numel()
    for name in ALL:
        uncovered = y[name][(~covered)[:, None].expand_as(y[name])]
        assert (uncovered == (0 if name == "labels" else 5.0)).all(), name
        assert (y[name][covered[:, None].expand_as(y[name])] != 5.0).all(), name


@pytest.mark.parametrize("case", [((2, 1, 23, 19), 8, 5, False), ((1, 1, 14, 12, 13), 6, 4, False),
                                  ((1, 1, 40, 22), (4, 8), (3, 11), True)])  # x gaps: fill
def test_the_weighted_sums_normalised_plane_by_plane_give_the_bits_of_three_passes(
        case, monkeypatch):
    from fastquilt import sliding

    shape, window, step, gaps = case
    models = _convs(2, 1, 3, len(shape) - 2)
    x = torch.randn(shape)

    def run():
        return fq.sliding_window(models, x, window, step, batch_size=3, outputs=(
            "mean", "labels", "probability", "entropy"), tta="flips", activation="softmax",
            allow_gaps=gaps, fill_value=2.0 if gaps else 0.0)

    fused, calls = sliding.planewise_normalisation, []
    monkeypatch.setattr(sliding, "planewise_normalisation",
                        lambda q, acc: calls.append(fused(q, acc)) or calls[-1])
    got = run()
    assert calls and calls[0] is not None  # the plane-by-plane path ran
    monkeypatch.setattr(sliding, "planewise_normalisation", lambda q, acc: None)
    want = run()
    for name in want:
        assert torch.equal(got[name], want[name]), name
