"""NCZYX25DQuilt against a float64 reference (boundary modes on the whole volume) and against
qlty 1.5.0 wherever qlty's chunk-relative boundary handling agrees with it; the backends
(memmap, zarr, HDF5), plans, metadata and errors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastquilt as fq
from fastquilt.compat import NCZYX25DQuilt, TensorLike3D, from_memmap, from_zarr
from fastquilt.compat import zstack as zstack_mod
from fastquilt.compat.backends25d import InMemoryBackend, ZarrBackend

qlty25 = pytest.importorskip("qlty.qlty2_5D", reason="qlty 1.5.0 is a test dependency")

CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                     reason="no CUDA device"))


def _plane(z, Z, mode):
    if 0 <= z < Z:
        return z
    if mode == "clamp":
        return min(max(z, 0), Z - 1)
    if mode == "reflect":
        m = z % (2 * Z)
        return m if m < Z else 2 * Z - 1 - m
    return None


def reference(x, spec, mode, acc, z_indices):
    """float64 numpy conversion, boundary modes against [0, Z)."""
    x = x.double().numpy()
    N, C, Z, Y, X = x.shape
    chans = []
    for key, val in spec.items():
        groups = [(o,) for o in val] if key == "identity" else [tuple(g) for g in val]
        chans += [(key, c, g) for c in range(C) for g in groups]
    out = np.zeros((N, len(chans), len(z_indices), Y, X))
    for n in range(N):
        for j, z0 in enumerate(z_indices):
            for k, (key, c, g) in enumerate(chans):
                vals = []
                for o in g:
                    p = _plane(z0 + o, Z, mode)
                    if p is not None:
                        vals.append(x[n, c, p])
                    elif mode == "zero":
                        vals.append(np.zeros((Y, X)))
                v = np.stack(vals)
                out[n, k, j] = v.std(0) if key == "std" else v.mean(0)
    if acc == "2d":
        out = out.transpose(0, 2, 1, 3, 4).reshape(N * len(z_indices), len(chans), Y, X)
    return torch.from_numpy(out)


def qlty_is_right(spec, Z, z_indices, mode):
    """qlty applies clamp/reflect to the planes it loaded (the union of each operation's
    offset range, cut to the volume); it is right where that picks the whole volume's plane."""
    ops = [[[o] for o in v] if k == "identity" else v for k, v in spec.items()]
    for z0 in z_indices:
        loaded = {z0}
        for groups in ops:
            offs = sum(groups, [])
            loaded |= {z for z in range(z0 + min(offs), z0 + max(offs) + 1) if 0 <= z < Z}
        lo, size = min(loaded), max(loaded) + 1 - min(loaded)
        for r in (z0 + o for groups in ops for g in groups for o in g):
            rel = r - lo
            if 0 <= rel < size or mode == "zero":
                continue
            if mode == "clamp":
                got = min(max(rel, 0), size - 1)
            else:
                got = -rel - 1 if rel < 0 else size - 1 - (rel - size)
            if not 0 <= got < size or got + lo != _plane(r, Z, mode):
                return False
    return True


offsets = st.integers(-3, 3)
specs = st.fixed_dictionaries({}, optional={
    "identity": st.lists(offsets, min_size=1, max_size=3),
    "mean": st.lists(st.lists(offsets, min_size=1, max_size=3), min_size=1, max_size=2),
    "std": st.lists(st.lists(offsets, min_size=1, max_size=3), min_size=1, max_size=2),
}).filter(bool)


@settings(max_examples=min(settings().max_examples, 60), deadline=None)
@given(N=st.integers(1, 2), C=st.integers(1, 3), Z=st.integers(1, 7), Y=st.integers(1, 5),
       X=st.integers(1, 5), spec=specs, mode=st.sampled_from(["clamp", "zero", "reflect"]),
       acc=st.sampled_from(["2d", "3d"]), data=st.data())
def test_convert_matches_reference_and_qlty(N, C, Z, Y, X, spec, mode, acc, data):
    z_indices = sorted(data.draw(st.sets(st.integers(0, Z - 1), min_size=1)))
    x = torch.randn(N, C, Z, Y, X)
    q = NCZYX25DQuilt(x, spec, boundary_mode=mode, accumulation_mode=acc, z_slices=z_indices)
    got = q.convert()
    assert got.shape == q.output_shape and got.dtype == x.dtype
    torch.testing.assert_close(got.double(), reference(x, spec, mode, acc, z_indices),
                               atol=1e-5, rtol=1e-5)
    if qlty_is_right(spec, Z, z_indices, mode):
        want = qlty25.NCZYX25DQuilt(x, spec, mode, acc, z_indices).convert()
        assert want.shape == got.shape
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_edge_planes_against_the_whole_volume():
    """qlty clamps to the planes it loaded: at z0=1 with offset -3 it reads plane 1, not 0."""
    x = torch.arange(6.0).view(1, 1, 6, 1, 1).expand(1, 1, 6, 2, 2).contiguous()
    spec = {"identity": [-3]}
    got = NCZYX25DQuilt(x, spec, z_slices=[1, 4]).convert()
    assert got[:, 0, 0, 0].tolist() == [0.0, 1.0]
    want = qlty25.NCZYX25DQuilt(x, spec, z_slices=[1, 4]).convert()
    assert want[:, 0, 0, 0].tolist() == [1.0, 1.0]  # qlty's chunk-relative clamp
    up = NCZYX25DQuilt(x, {"identity": [3]}, "reflect", z_slices=[4]).convert()
    assert up[0, 0, 0, 0].item() == 4.0  # 7 reflects to 4 about the top edge (5)


@pytest.mark.parametrize("spec, gathers", [
    ({"identity": [-1, 0, 1], "mean": [[-2, 2]], "std": [[-1, 1]]}, 1),  # accumulator
    ({"identity": [-1, 0, 1]}, 1),
    ({"identity": [-1, 0, 1], "mean": [[-2, 1, 2], [0]]}, 3),  # one gather per tap round
])
def test_gathers_per_conversion_do_not_grow_with_planes(monkeypatch, spec, gathers):
    """No per-plane or per-image loop: a conversion is a fixed number of plane gathers (the
    first taps, then one per further tap of the MEAN channels)."""
    real = zstack_mod._gather_rows
    for N, Z in [(1, 9), (3, 40)]:
        calls = []
        monkeypatch.setattr(zstack_mod, "_gather_rows",
                            lambda *a, calls=calls: calls.append(1) or real(*a))
        x = torch.randn(N, 2, Z, 8, 7)
        NCZYX25DQuilt(x, spec).convert()
        assert len(calls) == gathers, (N, Z)


def test_channel_order_and_metadata():
    x = torch.randn(1, 2, 6, 4, 4)
    spec = {"identity": [-1, 1], "mean": [[0, 1]]}
    q = NCZYX25DQuilt(x, spec, z_slices=[2])
    out = q.convert()[0]
    meta = q.get_channel_metadata()
    assert [(m["operation"], m["input_channel"], m["offsets"]) for m in meta] == [
        ("identity", 0, (-1,)), ("identity", 0, (1,)), ("identity", 1, (-1,)),
        ("identity", 1, (1,)), ("mean", 0, (0, 1)), ("mean", 1, (0, 1))]
    for k, m in enumerate(meta):
        planes = [2 + o for o in m["offsets"]]
        torch.testing.assert_close(out[k], x[0, m["input_channel"], planes].mean(0))


def test_dtypes_and_devices_kept():
    x = (torch.rand(1, 1, 5, 4, 4) * 100).to(torch.int16)
    out = NCZYX25DQuilt(x, {"identity": [-1, 0]}, "zero").convert()
    assert out.dtype == torch.int16 and torch.equal(out[1:, 1], x[0, 0, 1:])
    assert torch.equal(out[0, 0], torch.zeros(4, 4, dtype=torch.int16))
    with pytest.raises(TypeError, match="floating-point"):
        NCZYX25DQuilt(x, {"mean": [[-1, 0]]}).convert()
    h = torch.randn(1, 1, 5, 4, 4).half()
    out = NCZYX25DQuilt(h, {"std": [[-1, 0, 1]]}).convert()
    assert out.dtype == torch.float16


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_device(device):
    x = torch.randn(2, 2, 6, 5, 4, device=device)
    spec = {"identity": [-1, 0], "std": [[-1, 1]]}
    got = NCZYX25DQuilt(x, spec, "reflect", "3d").convert()
    assert got.device == x.device
    torch.testing.assert_close(got.cpu().double(),
                               reference(x.cpu(), spec, "reflect", "3d", list(range(6))))


def test_skip_mode():
    x = torch.randn(1, 1, 5, 3, 3)
    got = NCZYX25DQuilt(x, {"mean": [[-1, 0, 1]]}, "skip").convert()
    torch.testing.assert_close(got[0, 0], x[0, 0, :2].mean(0))  # plane -1 left out
    with pytest.raises(ValueError, match="produced no valid channels"):
        NCZYX25DQuilt(x, {"identity": [-10]}, "skip", z_slices=[2]).convert()
    with pytest.raises(ValueError, match="different channel counts"):
        NCZYX25DQuilt(x, {"identity": [-1, 0]}, "skip").convert()


def test_errors():
    with pytest.raises(TypeError, match="TensorLike3D"):
        NCZYX25DQuilt(np.zeros((1, 1, 2, 2, 2)), {"identity": [0]})
    with pytest.raises(ValueError, match="5D"):
        NCZYX25DQuilt(torch.zeros(1, 2, 2, 2), {"identity": [0]})
    with pytest.raises(ValueError, match="Unknown operation"):
        NCZYX25DQuilt(torch.zeros(1, 1, 2, 2, 2), {"max": [0]})
    with pytest.raises(ValueError, match="window was given without step"):
        NCZYX25DQuilt(torch.zeros(1, 1, 2, 8, 8), {"identity": [0]}).create_extraction_plan(
            window=(4, 4))


def _sources(tmp_path, x):
    import zarr

    mm = np.memmap(tmp_path / "v.raw", dtype=np.float32, mode="w+", shape=x.shape)
    mm[:] = x.numpy()
    mm.flush()
    z = zarr.open_array(str(tmp_path / "v.zarr"), mode="w", shape=x.shape, dtype="float32",
                        chunks=(1, 1, 2, 8, 8))
    z[:] = x.numpy()
    z3 = zarr.open_array(str(tmp_path / "v3.zarr"), mode="w", shape=x.shape[2:],
                         dtype="float32")
    z3[:] = x[0, 0].numpy()
    return {"memmap": from_memmap(str(tmp_path / "v.raw"), np.float32, x.shape),
            "zarr": from_zarr(str(tmp_path / "v.zarr")),
            "zarr3d": TensorLike3D(ZarrBackend(z3)),
            "memory": TensorLike3D(InMemoryBackend(x))}


@pytest.mark.parametrize("z_slices", [None, [0, 11], slice(2, 9, 3)])
def test_backends_match_the_tensor(tmp_path, z_slices):
    pytest.importorskip("zarr")
    x = torch.randn(2, 2, 12, 9, 8)
    spec = {"identity": [-2, 0], "mean": [[-1, 1]]}
    want = NCZYX25DQuilt(x, spec, "reflect", z_slices=z_slices).convert()
    for name, src in _sources(tmp_path, x).items():
        got = NCZYX25DQuilt(src, spec, "reflect", z_slices=z_slices).convert()
        if name == "zarr3d":
            ref = NCZYX25DQuilt(x[:1, :1], spec, "reflect", z_slices=z_slices).convert()
            torch.testing.assert_close(got, ref)
        else:
            torch.testing.assert_close(got, want)


def test_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    x = torch.randn(1, 2, 7, 6, 5)
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("/images/stack", data=x.numpy())
        f.create_dataset("/vol3", data=x[0, 0].numpy())
    spec = {"identity": [-1, 0, 1]}
    src = fq.from_hdf5(str(tmp_path / "v.h5"), "/images/stack")
    assert src.shape == (1, 2, 7, 6, 5) and src[0, 1, 2:4].shape == (2, 6, 5)
    torch.testing.assert_close(NCZYX25DQuilt(src, spec).convert(),
                               NCZYX25DQuilt(x, spec).convert())
    v3 = fq.from_hdf5(str(tmp_path / "v.h5"), "/vol3")
    assert v3.shape == (1, 1, 7, 6, 5) and v3[0, 0, 3].shape == (6, 5)
    with pytest.raises(ValueError, match="not in"):
        fq.from_hdf5(str(tmp_path / "v.h5"), "/missing")


def test_plans_and_patches_from_plan(tmp_path):
    pytest.importorskip("zarr")
    x = torch.randn(2, 2, 12, 9, 8)
    spec = {"identity": [-3, 0], "std": [[-1, 1]]}
    for src in (x, _sources(tmp_path, x)["zarr"]):
        q = NCZYX25DQuilt(src, spec, "clamp", z_slices=[0, 5, 11])
        full = q.convert().view(2, 3, -1, 9, 8)
        plan = q.create_extraction_plan(window=(4, 4), step=(3, 2))
        ql = qlty25.NCZYX25DQuilt(x, spec, "clamp", z_slices=[0, 5, 11])
        want = ql.create_extraction_plan(window=(4, 4), step=(3, 2))
        assert [(p.n, p.z0, p.y_start, p.x_start, p.color_y_idx, p.color_x_idx)
                for p in plan.patches] == [
            (p.n, p.z0, p.y_start, p.x_start, p.color_y_idx, p.color_x_idx)
            for p in want.patches]
        assert plan.color_groups == want.color_groups
        for p in plan.patches[::7]:
            j = [0, 5, 11].index(p.z0)
            torch.testing.assert_close(q.extract_patch_from_plan(p),
                                       full[p.n, j, :, p.y_start:p.y_stop, p.x_start:p.x_stop])
        assert plan.patches[0].required_z_indices == [0, 1]
        again = type(plan).deserialize(plan.serialize())
        assert again == plan
