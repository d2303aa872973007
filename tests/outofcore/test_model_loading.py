"""Models fastquilt builds itself (CLI, dask workers): model files told apart by their contents
(torch.export, AOTInductor, TorchScript; checkpoints refused with a clear message, never
unpickled with code), factories with weights, built once per process and device."""

import warnings
from pathlib import Path

import pytest
import torch

import fastquilt as fq
from fastquilt.outofcore.model_files import load_model_file, model_file_kind
from fastquilt.outofcore.models import ModelFactory, resolve_model

from .ooc_job import conv_1_to_2, export_model


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


def test_torchscript_file_is_loaded_onto_the_device_with_a_deprecation_warning(tmp_path):
    with warnings.catch_warnings():  # (torch's own deprecation warning: not ours to test)
        warnings.simplefilter("ignore", DeprecationWarning)
        net = torch.jit.script(_net())
        net.save(str(tmp_path / "m.pt"))
    assert model_file_kind(str(tmp_path / "m.pt")) == "torchscript"
    with pytest.warns(FutureWarning, match="TorchScript.*torch.export"):
        m = resolve_model(ModelFactory(str(tmp_path / "m.pt")), "cpu")
    x = torch.randn(2, 1, 6, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(m(x), net(x))
    if torch.cuda.is_available():  # the README's cluster example: device="cuda"
        with pytest.warns(FutureWarning):
            g = resolve_model(ModelFactory(str(tmp_path / "m.pt")), "cuda")
        assert next(g.parameters()).is_cuda
        with torch.no_grad():
            torch.testing.assert_close(g(x.cuda()).cpu(), net(x), rtol=1e-4, atol=1e-4)


def test_format_is_told_from_the_contents_not_the_name(tmp_path):
    net = _net()
    export_model(net, tmp_path / "model.bin", (2, 1, 6, 6, 6))  # an odd name
    assert model_file_kind(str(tmp_path / "model.bin")) == "exported"
    torch.save(net.state_dict(), tmp_path / "m.pt2")  # a checkpoint named like an export
    assert model_file_kind(str(tmp_path / "m.pt2")) == "checkpoint"
    torch.save(net.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert model_file_kind(str(tmp_path / "legacy.pt")) == "pickle"
    (tmp_path / "notes.txt").write_text("not a model")
    assert model_file_kind(str(tmp_path / "notes.txt")) == "other"
    x = torch.randn(3, 1, 6, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(load_model_file(str(tmp_path / "model.bin"))(x), net(x))


def test_checkpoints_and_other_files_give_a_clear_message_and_run_no_code(tmp_path):
    net = _net()
    for name, legacy in (("sd.pt", False), ("sd_legacy.pt", True)):
        torch.save(net.state_dict(), tmp_path / name, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(ValueError, match="state dict.*module:function.*--weights"):
            load_model_file(str(tmp_path / name))
    # a pickled module: refused by weights_only=True, never unpickled with code
    torch.save(_Loud(), tmp_path / "module.pt")
    _Loud.loaded = False
    with pytest.raises(ValueError, match="weights_only=True"):
        load_model_file(str(tmp_path / "module.pt"))
    assert not _Loud.loaded
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(ValueError, match="holding a dict, not a model"):
        load_model_file(str(tmp_path / "meta.pt"))
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="none of the formats.*torch.export"):
        load_model_file(str(tmp_path / "notes.txt"))


class _Loud(torch.nn.Module):
    """A module whose unpickling would show (``loaded``)."""

    loaded = False

    def __setstate__(self, state):
        _Loud.loaded = True
        super().__setstate__(state)


def test_factory_with_weights_loads_the_state_dict(tmp_path):
    torch.manual_seed(1)
    trained = conv_1_to_2()
    torch.save({"state_dict": trained.state_dict(), "epoch": 9}, tmp_path / "w.pt")
    m = resolve_model(ModelFactory.with_weights(conv_1_to_2, str(tmp_path / "w.pt")), "cpu")
    x = torch.randn(2, 1, 6, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(m(x), trained(x))
    assert ModelFactory.with_weights(conv_1_to_2, "a.pt").key != ModelFactory(conv_1_to_2).key
    torch.save(torch.nn.Conv3d(1, 3, 3).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="do not fit the model"):
        ModelFactory.with_weights(conv_1_to_2, str(tmp_path / "other.pt")).build()
    torch.save(_Loud(), tmp_path / "module.pt")
    with pytest.raises(ValueError, match="weights_only=True"):
        ModelFactory.with_weights(conv_1_to_2, str(tmp_path / "module.pt")).build()
    with pytest.raises(ValueError, match="does not exist"):
        ModelFactory.with_weights(conv_1_to_2, str(tmp_path / "missing.pt")).build()


def test_aoti_packages_are_recognised_and_padded_to_their_batch(tmp_path, monkeypatch):
    # A real package takes ~20 s to compile: the file is a zip laid out like one, and the
    # loader is torch's, replaced by a model that only runs its compiled batch size.
    import zipfile

    with zipfile.ZipFile(tmp_path / "m.pt2", "w") as z:
        z.writestr("m/archive_format", "pt2")
        z.writestr("m/data/aotinductor/model/x.wrapper.so", b"")
    assert model_file_kind(str(tmp_path / "m.pt2")) == "aoti"
    net = _net()

    def compiled(x):
        assert x.shape[0] == 4, "compiled for batches of 4"
        return net(x)

    seen = []
    monkeypatch.setattr(torch._inductor, "aoti_load_package",
                        lambda path, device_index=-1: seen.append(path) or compiled)
    m = load_model_file(str(tmp_path / "m.pt2"))
    assert seen == [str(tmp_path / "m.pt2")]
    x = torch.randn(4, 1, 6, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(m(x), net(x))
        torch.testing.assert_close(m(x[:3]), net(x[:3]))  # the last, smaller batch
    with pytest.raises(ValueError, match="batches of 4"):
        m(torch.randn(5, 1, 6, 6, 6))
    # a run with a package, resumed with another one: refused by the files' contents (the
    # compiled model itself has no fingerprint)
    with zipfile.ZipFile(tmp_path / "other.pt2", "w") as z:
        z.writestr("m/archive_format", "pt2")
        z.writestr("m/data/aotinductor/model/x.wrapper.so", b"retrained")
    x = torch.randn(1, 1, 12, 12, 12)
    out = str(tmp_path / "o.zarr")
    y = fq.sliding_window(ModelFactory(str(tmp_path / "m.pt2")), x, 6, 4, 4, out=out)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(y[...]), fq.sliding_window(net, x, 6, 4))
    with pytest.raises(ValueError, match="made with another model"):
        fq.sliding_window(ModelFactory(str(tmp_path / "other.pt2")), x, 6, 4, 4, out=out)


def test_cli_weights_with_a_factory(tmp_path, monkeypatch, capsys):
    import numpy as np
    import zarr

    from fastquilt.cli import main

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    x = np.random.default_rng(0).standard_normal((1, 1, 12, 12, 12)).astype(np.float32)
    zarr.create_array(store=str(tmp_path / "in.zarr"), data=x)
    torch.manual_seed(2)
    trained = conv_1_to_2()
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    args = ["infer", "--input", str(tmp_path / "in.zarr"), "--window", "8", "--step", "6"]
    assert main([*args, "--model", "ooc_job:conv_1_to_2", "--weights", str(tmp_path / "w.pt"),
                 "--output", str(tmp_path / "o.zarr")]) == 0
    want = fq.sliding_window(trained, torch.from_numpy(x), 8, 6)
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "o.zarr"))[...], want.numpy(),
                               rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    # a state dict given as the model: one line naming the fix
    assert main([*args, "--model", str(tmp_path / "w.pt"), "--output",
                 str(tmp_path / "o2.zarr")]) == 2
    err = capsys.readouterr().err
    assert "--weights" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit, match="--weights goes with --model module:function"):
        main([*args, "--model", str(tmp_path / "w.pt"), "--weights", str(tmp_path / "w.pt"),
              "--output", str(tmp_path / "o3.zarr")])
