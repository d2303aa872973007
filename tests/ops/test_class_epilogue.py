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
    return a.max(1), -plogp.sum(1)


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
