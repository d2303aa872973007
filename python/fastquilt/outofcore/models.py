"""The model of an out-of-core run: built by fastquilt itself from a file or a factory (for
the CLI and for dask workers) once per process and device, on the device the windows go to;
and called on a batch of windows."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch

from ..sliding import check_model_output
from ..transfer import to_device

_MODELS: dict = {}  # per process: models built from a path or factory, by (recipe, device)
_LOCK = threading.Lock()


def load_model_file(path: str, device: torch.device | str = "cpu"):
    """A model saved with ``torch.export.save`` (``.pt2``; its batch dimension must be
    dynamic, since the last batch of windows is smaller) or ``torch.jit.save``, on
    ``device``."""
    if str(path).endswith(".pt2"):
        program = torch.export.load(str(path))
        fixed = _fixed_batch_inputs(program)
        if fixed:
            raise ValueError(
                f"model {path} was exported with a fixed batch size ({', '.join(fixed)}); the "
                "last batch of windows is smaller: export with a dynamic batch dimension, e.g. "
                "torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},))")
        return program.module().to(device)
    kind = _archive_kind(str(path))
    if kind == "checkpoint":
        raise ValueError(
            f"model file {path} is a torch.save checkpoint (a state dict or a pickled module), "
            "which fastquilt does not load (unpickling runs arbitrary code, and a state dict "
            "has no architecture): save the model with torch.export (.pt2) or TorchScript, or "
            "give a module:function that builds it and loads the weights")
    if kind != "torchscript":
        raise ValueError(f"model file {path} is neither a torch.export .pt2 nor a TorchScript "
                         "file")
    return torch.jit.load(str(path), map_location=device).eval()


def _archive_kind(path: str) -> str:
    """``"torchscript"``, ``"checkpoint"`` (torch.save) or ``"other"``: from the names in the
    file's zip archive, without loading it."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return "other"
    if any(n.endswith("/constants.pkl") for n in names) or any("/code/" in n for n in names):
        return "torchscript"
    return "checkpoint" if any(n.endswith("/data.pkl") for n in names) else "other"


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


class ModelFactory:
    """A picklable recipe for a model, built once per process and device: ``fn(*args,
    **kwargs)`` (e.g. a function that loads weights; a module it returns is moved to the
    device), or a model file (``torch.export`` ``.pt2`` or TorchScript) when given a path."""

    def __init__(self, fn: Callable | str, *args, **kwargs) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.key = (fn if isinstance(fn, str) else f"{fn.__module__}.{fn.__qualname__}",
                    repr(args), repr(sorted(kwargs.items())))

    def build(self, device: torch.device | str = "cpu"):
        if isinstance(self.fn, str):
            return load_model_file(self.fn, device)
        model = self.fn(*self.args, **self.kwargs)
        return model.to(device) if isinstance(model, torch.nn.Module) else model


def resolve_model(model, device: torch.device | str | None = None):
    """The model itself, or the cached instance a :class:`ModelFactory` built in this process
    on ``device`` (default: the CPU)."""
    if isinstance(model, ModelFactory):
        dev = torch.device(device if device is not None else "cpu")
        with _LOCK:
            key = (model.key, str(dev))
            if key not in _MODELS:
                _MODELS[key] = model.build(dev)
            return _MODELS[key]
    return model


def predict(model, windows: Sequence[torch.Tensor], window: tuple[int, ...],
            device: torch.device) -> torch.Tensor:
    """The model's predictions ``(B, C_out, *window)`` for a batch of ``B`` windows
    ``(C, *window)``, as float32 on the model's device (where the sums are made)."""
    return predict_batch(model, torch.stack(list(windows)), window, device)


def predict_batch(model, batch: torch.Tensor, window: tuple[int, ...],
                  device: torch.device) -> torch.Tensor:
    """:func:`predict` for windows already stacked into ``(B, C, *window)``."""
    xb = to_device(batch, device)
    with torch.no_grad():
        y = model(xb)
    check_model_output(y, batch.shape[0], window)
    return y.detach().to(torch.float32)
