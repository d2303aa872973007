"""gather_windows_oriented: every orientation against torch.permute/flip of the plain gather,
all dtypes, 2D and 3D; opcheck, gradcheck and gradgradcheck, torch.compile(fullgraph=True);
bad orientations and arguments are clear errors."""

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastquilt as fq
from fastquilt import ops as _ops

from .test_ops import ALL_DTYPES, _rand, _random_origins

FQ = torch.ops.fastquilt


def _valid_orientations(window):
    """Every signed permutation that only trades axes of equal window size."""
    D = len(window)
    out = []
    for perm in itertools.permutations(range(D)):
        if any(window[perm[d]] != window[d] for d in range(D)):
            continue
        for signs in itertools.product((1, -1), repeat=D):
            out.append([s * (k + 1) for s, k in zip(signs, perm)])
    return torch.tensor(out, dtype=torch.int64)


def _reference(x, origins, orientation, window):
    """Plain gather, then torch.permute and torch.flip per patch."""
    plain = fq.gather_windows(x, origins, window)
    out = []
    for p, code in zip(plain, orientation.tolist()):
        p = p.permute(0, *[abs(c) for c in code])
        out.append(p.flip([1 + d for d, c in enumerate(code) if c < 0]))
    return torch.stack(out) if out else plain


def _case(spatial, window, M, seed, dtype=torch.float64, N=2, C=3):
    gen = torch.Generator().manual_seed(seed)
    x = _rand((N, C, *spatial), dtype, gen)
    org = _random_origins(spatial, window, N, M, gen)
    choices = _valid_orientations(window)
    ori = choices[torch.randint(0, len(choices), (M,), generator=gen)]
    return x, org, ori


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("spatial,window", [((9, 10, 11), (4, 4, 4)), ((12, 13), (5, 5)),
                                            ((9, 10, 11), (3, 5, 3)), ((8, 9), (3, 4))])
def test_every_orientation_matches_permute_flip(spatial, window, dtype, device):
    gen = torch.Generator().manual_seed(1)
    x = _rand((2, 3, *spatial), dtype, gen).to(device)
    ori = _valid_orientations(window)
    org = _random_origins(spatial, window, 2, len(ori), gen)
    got = fq.gather_windows_oriented(x, org.to(device), ori.to(device), window)
    want = _reference(x, org.to(device), ori.to(device), window)
    assert got.dtype == dtype and torch.equal(got, want)


# elements of 1, 2, 4 and 8 bytes: the transposition's register blocks (16 / size elements a
# side), the remainders beside them, and tiles of 64 elements along a row crossed
@pytest.mark.parametrize("dtype", [torch.float32, torch.int8, torch.bool, torch.float16,
                                   torch.bfloat16, torch.int16, torch.float64, torch.int64])
@pytest.mark.parametrize("spatial,window", [((23, 21, 22), (18, 18, 18)), ((40, 37), (33, 33)),
                                            ((72, 75), (70, 70)), ((85, 86), (83, 83))])
def test_windows_larger_than_a_tile_match_permute_flip(spatial, window, dtype):
    x, org, _ = _case(spatial, window, 1, 2, dtype)
    ori = _valid_orientations(window)
    org = org.expand(len(ori), -1).contiguous()
    got = fq.gather_windows_oriented(x, org, ori, window)
    assert torch.equal(got, _reference(x, org, ori, window))


@given(st.data())
def test_random_shapes_match_permute_flip(data):
    D = data.draw(st.sampled_from([2, 3]))
    window = data.draw(st.sampled_from([(1, 2, 3), (3, 3, 3), (2, 2, 5), (4, 2, 4)]))[:D]
    spatial = tuple(w + data.draw(st.integers(0, 4)) for w in window)
    M = data.draw(st.integers(0, 6))
    x, org, ori = _case(spatial, window, M, data.draw(st.integers(0, 1 << 16)))
    if data.draw(st.booleans()):  # a non-contiguous input
        x = x.transpose(0, 1).contiguous().transpose(0, 1)
    got = fq.gather_windows_oriented(x, org, ori, window)
    assert torch.equal(got, _reference(x, org, ori, window))


def test_identity_orientation_is_the_plain_gather():
    x, org, _ = _case((9, 10, 11), (3, 4, 5), 7, 0)
    ident = torch.tensor([[1, 2, 3]]).expand(7, 3).contiguous()
    assert torch.equal(fq.gather_windows_oriented(x, org, ident, (3, 4, 5)),
                       fq.gather_windows(x, org, (3, 4, 5)))


def test_inverse_orientation_undoes_it():
    window = (4, 4, 4)
    ori = _valid_orientations(window)
    x = torch.randn(len(ori), 2, *window, dtype=torch.float64)
    own = torch.zeros((len(ori), 4), dtype=torch.int64)
    own[:, 0] = torch.arange(len(ori))
    turned = fq.gather_windows_oriented(x, own, ori, window)
    back = fq.gather_windows_oriented(turned, own, _ops.inverse_orientation(ori), window)
    assert torch.equal(back, x)
    assert not torch.equal(turned, x)  # the orientations do move elements


def test_into_form_writes_the_same_and_refuses_grad(device):
    x, org, ori = _case((9, 10, 11), (4, 4, 4), 6, 7)
    x, org, ori = x.to(device), org.to(device), ori.to(device)
    out = torch.full((6, 3, 4, 4, 4), float("nan"), dtype=x.dtype, device=device)
    got = fq.ops.gather_windows_oriented_into(x, org, ori, out)
    assert got is out and torch.equal(out, fq.gather_windows_oriented(x, org, ori, (4, 4, 4)))
    torch.library.opcheck(FQ.gather_windows_oriented_into.default, (x, org, ori, out))
    with pytest.raises(ValueError, match="records no autograd"):
        fq.ops.gather_windows_oriented_into(x.requires_grad_(True), org, ori, out)
    with pytest.raises(ValueError, match="out must have shape"):
        fq.ops.gather_windows_oriented_into(x.detach(), org, ori, out[:2])


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad, device):
    for spatial, window in [((7, 8, 9), (3, 3, 3)), ((9, 8), (4, 4))]:
        x, org, ori = _case(spatial, window, 5, 3)
        x = x.to(device).requires_grad_(requires_grad)
        torch.library.opcheck(FQ.gather_windows_oriented.default,
                              (x, org.to(device), ori.to(device), list(window)))


def test_gradcheck_and_gradgradcheck():
    for spatial, window in [((4, 3, 4), (2, 2, 2)), ((5, 4), (3, 3))]:
        x, org, ori = _case(spatial, window, 5, 4, N=1, C=1)
        x.requires_grad_(True)

        def f(t):
            return fq.gather_windows_oriented(t, org, ori, window)

        assert torch.autograd.gradcheck(f, (x,))
        assert torch.autograd.gradgradcheck(f, (x,))


def test_compile_fullgraph_with_backward():
    torch._dynamo.reset()
    x, org, ori = _case((10, 9, 8), (4, 4, 4), 5, 5, torch.float32)
    x.requires_grad_(True)

    def f(t):
        return (fq.gather_windows_oriented(t, org, ori, (4, 4, 4)) ** 2).sum()

    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    y = cf(x)
    torch.testing.assert_close(y, f(x))
    (g1,) = torch.autograd.grad(y, x)
    (g2,) = torch.autograd.grad(f(x), x)
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("code,match", [
    ([1, 1, 3], "once"), ([0, 2, 3], "once"), ([4, 2, 3], "once"), ([2, -1, 3], "equal window"),
])
def test_bad_orientation_is_a_clear_error(code, match):
    x, org, _ = _case((9, 10, 11), (3, 4, 3), 2, 0)
    bad = torch.tensor([[1, 2, 3], code])
    with pytest.raises(ValueError, match=match):
        fq.gather_windows_oriented(x, org, bad, (3, 4, 3))


def test_bad_arguments_are_clear_errors():
    x, org, ori = _case((9, 10, 11), (3, 3, 3), 2, 0)
    with pytest.raises(TypeError, match="orientation must be int64"):
        fq.gather_windows_oriented(x, org, ori.int(), (3, 3, 3))
    with pytest.raises(ValueError, match=r"orientation must have shape \(M, 3\)"):
        fq.gather_windows_oriented(x, org, ori[:1], (3, 3, 3))
    with pytest.raises(ValueError, match="does not fit"):
        fq.gather_windows_oriented(x, org + torch.tensor([0, 20, 0, 0]), ori, (3, 3, 3))
