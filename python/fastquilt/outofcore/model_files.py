"""Model files, told apart by their contents (never by their name) and loaded without running
code from the file: ``torch.export`` ExportedPrograms (``.pt2``, the primary format),
AOTInductor packages (compiled for one batch size: smaller batches are padded to it),
TorchScript (deprecated by PyTorch, still accepted with a warning), and state dicts saved with
``torch.save``, which need a factory that builds the architecture (:func:`load_weights`).
A pickle is only ever read with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import warnings
import zipfile

import torch

EXPORT_HINT = ("torch.export.save(torch.export.export(model.eval(), (x,), dynamic_shapes="
               "({0: torch.export.Dim('batch')},)), 'model.pt2')")


def model_file_kind(path: str) -> str:
    """What the file at ``path`` holds, from its contents: ``"exported"`` (torch.export
    ``.pt2``), ``"aoti"`` (AOTInductor package), ``"torchscript"``, ``"checkpoint"``
    (``torch.save`` zip), ``"pickle"`` (a legacy ``torch.save`` or plain pickle) or
    ``"other"``."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(2)
        return "pickle" if head[:1] == b"\x80" else "other"
    if any("/data/aotinductor/" in n for n in names):
        return "aoti"
    if any(n.endswith("/archive_format") for n in names) and \
            any("/models/" in n and n.endswith(".json") for n in names):
        return "exported"
    if any(n.endswith("/constants.pkl") for n in names) or any("/code/" in n for n in names):
        return "torchscript"
    return "checkpoint" if any(n.endswith("/data.pkl") for n in names) else "other"


def load_model_file(path: str, device: torch.device | str = "cpu"):
    """The model in the file at ``path`` (any format of :func:`model_file_kind` that holds a
    model), on ``device``; a clear ``ValueError`` for a file that holds none."""
    path = str(path)
    try:
        kind = model_file_kind(path)
    except OSError as e:
        raise ValueError(f"cannot read model file {path}: {e.strerror or e}") from None
    if kind == "exported":
        return _load_exported(path, device)
    if kind == "aoti":
        return _load_aoti(path, device)
    if kind == "torchscript":
        warnings.warn(
            f"model file {path} is TorchScript, which PyTorch deprecates; export the model "
            f"with torch.export instead: {EXPORT_HINT}", FutureWarning, stacklevel=2)
        with warnings.catch_warnings():  # (said once above, in our words)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            return torch.jit.load(path, map_location=device).eval()
    if kind in ("checkpoint", "pickle"):
        _refuse_checkpoint(path)
    raise ValueError(
        f"model file {path} is none of the formats fastquilt loads (a torch.export .pt2, an "
        "AOTInductor package, TorchScript, or a state dict with a module:function factory); "
        f"export the model with {EXPORT_HINT}")


def _load_exported(path: str, device):
    program = torch.export.load(path)
    fixed = _fixed_batch_inputs(program)
    if fixed:
        raise ValueError(
            f"model {path} was exported with a fixed batch size ({', '.join(fixed)}); the "
            "last batch of windows is smaller: export with a dynamic batch dimension, e.g. "
            "torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},))")
    return program.module().to(device)


def _fixed_batch_inputs(program) -> list[str]:
    """User inputs of an exported program whose first dimension is a constant."""
    names = set(program.graph_signature.user_inputs)
    fixed = []
    for node in program.graph.nodes:
        val = node.meta.get("val") if node.op == "placeholder" else None
        if node.name in names and isinstance(val, torch.Tensor) and val.dim() > 0 and \
                not isinstance(val.shape[0], torch.SymInt):
            fixed.append(f"{node.name}: {val.shape[0]}")
    return fixed


def _load_aoti(path: str, device):
    loader = getattr(getattr(torch, "_inductor", None), "aoti_load_package", None)
    if loader is None:
        raise ValueError(f"model file {path} is an AOTInductor package, which this torch build "
                         f"cannot load; export the model with {EXPORT_HINT}")
    dev = torch.device(device)
    try:
        compiled = loader(path, device_index=dev.index if dev.index is not None else -1)
    except Exception as e:
        raise ValueError(f"cannot load the AOTInductor package {path} on {dev}: {e} (a package "
                         "runs only on the device kind and machine it was compiled for)") from e
    return FixedBatch(compiled)


class FixedBatch:
    """A model compiled for one batch size (an AOTInductor package): a smaller batch (the
    last one of a run) is padded with zeros to the size of the first batch it ran, and the
    padding's predictions dropped."""

    def __init__(self, model) -> None:
        self.model, self.batch = model, None

    def __call__(self, x: torch.Tensor):
        if self.batch is None:
            self.batch = x.shape[0]
        if x.shape[0] > self.batch:
            raise ValueError(f"the AOTInductor model ran batches of {self.batch}; a batch of "
                             f"{x.shape[0]} does not fit: give the batch size it was compiled "
                             "for as batch_size")
        if x.shape[0] == self.batch:
            return self.model(x)
        pad = x.new_zeros((self.batch - x.shape[0], *x.shape[1:]))
        return self.model(torch.cat([x, pad]))[:x.shape[0]]


def _refuse_checkpoint(path: str):
    """Explain what a ``torch.save`` file holds (read with ``weights_only=True`` only) and
    how to run it."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise ValueError(
            f"model file {path} is a pickle that is not plain weights (a pickled module?): "
            "fastquilt reads pickles only with torch.load(weights_only=True), since unpickling "
            "runs arbitrary code; save model.state_dict() and give --model module:function "
            f"with --weights {path}, or export the model: {EXPORT_HINT}") from None
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"model file {path} is a torch.save checkpoint holding a state dict (weights without "
            "the architecture): give --model module:function that builds the model and "
            f"--weights {path} (ModelFactory.with_weights in Python), or export the model: "
            f"{EXPORT_HINT}")
    raise ValueError(
        f"model file {path} is a torch.save checkpoint holding a {type(obj).__name__}, not a "
        f"model; export the model with {EXPORT_HINT}")


def load_weights(model, path: str) -> None:
    """Load the state dict saved with ``torch.save`` at ``path`` into ``model`` (read with
    ``weights_only=True``; every key must match)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"weights {path} need a torch.nn.Module to load into; the factory "
                        f"returned a {type(model).__name__}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"weights file {path} does not exist") from None
    except Exception as e:
        raise ValueError(f"cannot read weights {path} with torch.load(weights_only=True): "
                         f"{str(e).splitlines()[0]}; save them with "
                         "torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # (the common {"state_dict": ..., "epoch": ...} layout)
    if not isinstance(state, dict):
        raise ValueError(f"weights {path} hold a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"weights {path} do not fit the model the factory builds: "
                         f"{str(e).splitlines()[0]} ...") from None
