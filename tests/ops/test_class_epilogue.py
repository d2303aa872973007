"""The class epilogue op (normalise, argmax, chosen-class probability, entropy per voxel)
against a float64 reference and torch.argmax, opcheck, torch.compile, errors."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fastquilt import ops
from fastquilt.normalize import weighted_mean

FQ = torch.ops.fastquilt


def _reference(acc, ws, fill):
    """float64 mean by the normalisation rule, then argmax / max / entropy in numpy."""
    a = acc.double().numpy()
    if ws is not None:
        w = ws.double().numpy()[:, None]
        a = np.where(w > 0, a / np.maximum(w, np.finfo(np.float32).tiny), fill)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(a == 0, 0.0, a * np.log(a))
    h = -plogp.sum(1)
    if ws is not None:  # nothing covers the voxel: the fill value, as every float output
        h = np.where(ws.double().numpy() > 0, h, fill)
    return a.max(1), h


@given(st.data())
def test_matches_argmax_and_float64_reference(data):
    D = data.draw(st.integers(1, 3))
    spatial = data.draw(st.lists(st.integers(1, 6), min_size=D, max_size=D))
    N = data.draw(st.integers(1, 3))
    C = data.draw(st.sampled_from([1, 2, 3, 7, 256, 257, 300]))
    seed = data.draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    ties = data.draw(st.booleans())
    acc = (torch.randint(0, 3, (N, C, *spatial), generator=g).float() if ties
           else torch.rand((N, C, *spatial), generator=g))
    ws = None
    if data.draw(st.booleans()):
        ws = torch.rand((N, *spatial), generator=g) * 3
        ws[torch.rand(ws.shape, generator=g) < 0.2] = 0  # uncovered voxels
        acc = acc * ws.unsqueeze(1)
    fill = data.draw(st.sampled_from([0.0, 0.25]))
    labels, prob, ent = ops.class_epilogue(acc, ws, fill, True, True)
    assert labels.dtype == (torch.uint8 if C <= 256 else torch.uint16)
    # labels: exactly torch.argmax of the float32 mean (the same normalisation, same bits)
    mean32 = acc if ws is None else weighted_mean(acc, ws, fill)
    assert torch.equal(labels.long(), mean32.argmax(1))
    assert torch.equal(prob, mean32.amax(1))
    want_p, want_h = _reference(acc, ws, fill)
    np.testing.assert_allclose(prob.double().numpy(), want_p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ent.double().numpy(), want_h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("C", [1, 3, 32, 257])
def test_blocks_of_voxels_every_output_subset_and_thread_counts(C, dtype):
    # the CPU kernel runs blocks of 512 voxels a channel at a time, in variants with and
    # without the weight sum and the entropy: images of 511, 512, 513 and 1500 voxels (a
    # block's remainder, one exact block, and one more), ties, NaN and uncovered voxels, every
    # subset of outputs; 1 and 2 threads (tests/ops/test_threads.py proves the threads run)
    from .test_threads import with_threads

    g = torch.Generator().manual_seed(C)
    for V in (511, 512, 513, 1500):
        acc = torch.randint(0, 4, (2, C, V), generator=g).to(dtype)  # ties
        acc[torch.rand(acc.shape, generator=g) < 0.01] = float("nan")
        ws = torch.rand((2, V), generator=g, dtype=dtype) * 2
        ws[torch.rand(ws.shape, generator=g) < 0.2] = 0
        for w in (None, ws):
            mean = acc if w is None else weighted_mean(acc, w, 0.5)
            for prob_, ent_ in ((False, False), (True, False), (False, True), (True, True)):
                labels, prob, ent = ops.class_epilogue(acc, w, 0.5, prob_, ent_)
                assert torch.equal(labels.long(), mean.argmax(1))
                if prob_:  # the same bits
                    torch.testing.assert_close(prob, mean.amax(1), rtol=0, atol=0,
                                               equal_nan=True)
                if ent_:  # (summed in another order than torch's)
                    h = -(mean * mean.log()).where(mean != 0, 0).sum(1)
                    if w is not None:  # uncovered: the fill value
                        h = h.where(w > 0, 0.5)
                    torch.testing.assert_close(ent, h, rtol=1e-5, atol=1e-5, equal_nan=True)
    big = torch.rand((2, C if C < 257 else 40, 64, 64, 8), generator=g, dtype=dtype)
    wbig = torch.rand((2, 64, 64, 8), generator=g, dtype=dtype)

    def run():
        return ops.class_epilogue(big, wbig, 0.0, True, True)

    for a, b in zip(with_threads(1, run), with_threads(2, run)):
        assert torch.equal(a, b)


def test_nan_counts_as_the_maximum_like_torch_argmax():
    acc = torch.tensor([[[1.0, 2.0, float("nan")], [3.0, float("nan"), 0.0],
                         [float("nan"), 5.0, 4.0]]]).permute(0, 2, 1).contiguous()
    labels, prob, _ = ops.class_epilogue(acc, None, 0.0, True, False)
    assert labels.long().tolist() == acc.argmax(1).tolist()
    assert torch.isnan(prob).all()


def test_optional_outputs_and_float64():
    acc = torch.rand(2, 4, 5, 6, dtype=torch.float64)
    labels, prob, ent = ops.class_epilogue(acc)
    assert prob is None and ent is None and labels.shape == (2, 5, 6)
    _, p, h = ops.class_epilogue(acc, None, 0.0, True, True)
    assert p.dtype == h.dtype == torch.float64


def test_opcheck_and_compile_fullgraph():
    acc = torch.rand(2, 5, 4, 6)
    ws = torch.rand(2, 4, 6)
    for args in [(acc, ws, 0.0, True, True), (acc, None, 0.5, False, True),
                 (torch.rand(1, 300, 3, 3), None, 0.0, True, False)]:
        torch.library.opcheck(FQ.class_epilogue.default, args)

    def f(a, w):
        labels, prob, ent = ops.class_epilogue(a * 2, w, 0.0, True, True)
        return labels, prob + ent

    torch._dynamo.reset()
    explain = torch._dynamo.explain(f)(acc, ws)
    assert explain.graph_count == 1 and explain.graph_break_count == 0
    got = torch.compile(f, fullgraph=True)(acc, ws)
    want = f(acc, ws)
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="1 to 65535 classes"):
        ops.class_epilogue(torch.zeros(1, 65536, 1, 1))
    with pytest.raises(TypeError, match="float32 or float64"):
        ops.class_epilogue(torch.zeros(1, 2, 3, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"weight_sum must be \(N, \*S\)"):
        ops.class_epilogue(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 4))
    with pytest.raises(TypeError, match="weight_sum must have acc's dtype"):
        ops.class_epilogue(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.float64))
