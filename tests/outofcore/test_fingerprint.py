"""What made an out-of-core output: a resumed run with another model or input is refused (it
would mix two runs' results in one array); an identity that cannot be told never blocks."""

import numpy as np
import pytest
import torch

import fastquilt as fq
from fastquilt.outofcore.fingerprints import input_fingerprint, model_fingerprint, same_source
from fastquilt.outofcore.models import ModelFactory

from .ooc_job import export_model

zarr = pytest.importorskip("zarr")


def test_model_fingerprints():
    a, b = (lambda p: p), (lambda p: p)
    assert model_fingerprint(a) == model_fingerprint(b) is not None  # same code
    assert model_fingerprint(lambda p: p * 2) != model_fingerprint(a)
    k = 3
    assert model_fingerprint(lambda p: p * k) is None  # a closure: unknown
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 3)
    twin = torch.nn.Conv3d(1, 2, 3)
    twin.load_state_dict(net.state_dict())
    assert model_fingerprint(net) == model_fingerprint(twin) is not None
    with torch.no_grad():
        twin.weight[0, 0, 0, 0, 0] += 1e-3
    assert model_fingerprint(net) != model_fingerprint(twin)
    assert model_fingerprint(torch.nn.Conv3d(1, 2, 3, device="meta")) is None
    relu, tanh = (torch.nn.Sequential(net, act) for act in (torch.nn.ReLU(), torch.nn.Tanh()))
    assert model_fingerprint(relu) != model_fingerprint(tanh)  # same weights, other layers
    assert model_fingerprint(object()) is None


def test_file_and_factory_fingerprints(tmp_path):
    path = tmp_path / "m.pt2"
    export_model(torch.nn.Conv3d(1, 1, 1), path)
    first = model_fingerprint(ModelFactory(str(path)))
    assert first == model_fingerprint(ModelFactory(str(path)))
    export_model(torch.nn.Conv3d(1, 1, 1), path)  # retrained, same name
    assert model_fingerprint(ModelFactory(str(path))) != first
    assert model_fingerprint(ModelFactory(max, 1)) != model_fingerprint(ModelFactory(max, 2))
    # a path only the dask workers see: unknown here, never an error
    assert model_fingerprint(ModelFactory(str(tmp_path / "on_the_workers.pt"))) is None


def test_input_fingerprints(tmp_path):
    da = pytest.importorskip("dask.array")
    x = np.zeros((1, 1, 4, 4), np.float32)
    z1 = zarr.create_array(store=str(tmp_path / "a.zarr"), shape=x.shape, dtype="float32")
    z2 = zarr.create_array(store=str(tmp_path / "b.zarr"), shape=x.shape, dtype="float32")
    assert input_fingerprint(z1) == input_fingerprint(zarr.open_array(str(tmp_path / "a.zarr")))
    assert input_fingerprint(z1) != input_fingerprint(z2)
    np.save(tmp_path / "x.npy", x)
    assert input_fingerprint(np.load(tmp_path / "x.npy", mmap_mode="r")).startswith("file:")
    assert input_fingerprint(da.from_array(x)).startswith("dask:")
    assert input_fingerprint(x) is None and input_fingerprint(torch.from_numpy(x)) is None


def test_same_source_rules():
    assert same_source(None, "module:A:1") and same_source("module:A:1", None)
    assert same_source("module:A:1", "module:A:1")
    assert not same_source("module:A:1", "module:A:2")
    assert not same_source("function:py3.11:aa", "function:py3.11:bb")
    assert same_source("function:py3.11:aa", "function:py3.12:bb")  # bytecode not comparable


def test_resume_with_other_weights_or_input_is_refused(tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 1, 24, 24, 24)).astype(np.float32)
    z = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=x.shape, chunks=(1, 1, 8, 8, 8),
                          dtype="float32")
    z[...] = x
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 1, 3, padding=1).eval()
    out = tmp_path / "o.zarr"
    fq.sliding_window(net, z, 8, 6, out=out, chunks=8, unit=8)
    (tmp_path / "o.zarr.fastquilt-progress" / "u3").unlink()  # interrupted
    retrained = torch.nn.Conv3d(1, 1, 3, padding=1).eval()
    with pytest.raises(ValueError, match="made with another model"):
        fq.sliding_window(retrained, z, 8, 6, out=out, chunks=8, unit=8)
    other = zarr.create_array(store=str(tmp_path / "other.zarr"), shape=x.shape,
                              chunks=(1, 1, 8, 8, 8), dtype="float32")
    with pytest.raises(ValueError, match="made with another input"):
        fq.sliding_window(net, other, 8, 6, out=out, chunks=8, unit=8)
    twin = torch.nn.Conv3d(1, 1, 3, padding=1).eval()  # the same weights: resumes
    twin.load_state_dict(net.state_dict())
    y = fq.sliding_window(twin, z, 8, 6, out=out, chunks=8, unit=8)
    with torch.no_grad():
        want = fq.sliding_window(net, torch.from_numpy(x), 8, 6)
    np.testing.assert_allclose(y[...], want.numpy(), rtol=1e-5, atol=1e-5)
