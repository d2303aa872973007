"""Models fastquilt builds itself (CLI, dask workers): torch.export and TorchScript files and
factories, built once per process and device, on the device the windows go to."""

import pytest
import torch

from fastquilt.outofcore.models import ModelFactory, load_model_file, resolve_model


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1)).eval()


def test_exported_program_with_a_dynamic_batch_loads_and_runs_any_batch(tmp_path):
    net, x = _net(), torch.randn(4, 1, 6, 6, 6)
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: batch},)),
                      str(tmp_path / "m.pt2"))
    m = load_model_file(str(tmp_path / "m.pt2"))
    with torch.no_grad():
        torch.testing.assert_close(m(x[:3]), net(x[:3]))  # a smaller last batch


def test_exported_program_with_a_fixed_batch_is_refused(tmp_path):
    net, x = _net(), torch.randn(4, 1, 6, 6, 6)
    torch.export.save(torch.export.export(net, (x,)), str(tmp_path / "m.pt2"))
    # was an AssertionError "Guard failed: input.size()[0] == 4" on the last batch
    with pytest.raises(ValueError, match=r"fixed batch size \(.*: 4\).*Dim\('batch'\)"):
        load_model_file(str(tmp_path / "m.pt2"))


def test_factory_models_are_built_once_per_device_and_moved_there(tmp_path):
    builds = []

    def factory(scale):
        builds.append(scale)
        return torch.nn.Linear(2, 2)

    f = ModelFactory(factory, 3)
    a = resolve_model(f, "cpu")
    assert resolve_model(f, torch.device("cpu")) is a and builds == [3]
    on_meta = resolve_model(f, "meta")  # another device: another build, moved there
    assert on_meta is not a and builds == [3, 3]
    assert next(on_meta.parameters()).device.type == "meta"
    assert resolve_model(f) is a  # default: the CPU
    plain = torch.nn.Linear(2, 2)
    assert resolve_model(plain, "meta") is plain  # a user's model is used as given
    assert next(plain.parameters()).device.type == "cpu"


def test_torchscript_file_is_loaded_onto_the_device(tmp_path):
    net = torch.jit.script(_net())
    net.save(str(tmp_path / "m.pt"))
    m = resolve_model(ModelFactory(str(tmp_path / "m.pt")), "cpu")
    x = torch.randn(2, 1, 6, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(m(x), net(x))
    if torch.cuda.is_available():  # the README's cluster example: device="cuda"
        g = resolve_model(ModelFactory(str(tmp_path / "m.pt")), "cuda")
        assert next(g.parameters()).is_cuda
        with torch.no_grad():
            torch.testing.assert_close(g(x.cuda()).cpu(), net(x), rtol=1e-4, atol=1e-4)
