"""The model of an out-of-core run: built by fastquilt itself from a file or a factory (for
the CLI and for dask workers) once per process and device, on the device the windows go to;
and called on a batch of windows."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

import torch

from ..sliding import check_model_output
from ..transfer import to_device
from .model_files import load_model_file, load_weights

_MODELS: dict = {}  # per process: models built from a path or factory, by (recipe, device)
_LOCK = threading.Lock()


class ModelFactory:
    """A picklable recipe for a model, built once per process and device: ``fn(*args,
    **kwargs)`` (e.g. a function that loads weights; a module it returns is moved to the
    device), or a model file (:func:`load_model_file`: ``torch.export`` ``.pt2``, AOTInductor
    or TorchScript) when given a path. :meth:`with_weights` adds a state dict file."""

    def __init__(self, fn: Callable | str, *args, **kwargs) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.weights: str | None = None
        self.key = (fn if isinstance(fn, str) else f"{fn.__module__}.{fn.__qualname__}",
                    repr(args), repr(sorted(kwargs.items())))

    @classmethod
    def with_weights(cls, fn: Callable, weights: str, *args, **kwargs) -> ModelFactory:
        """``fn(*args, **kwargs)`` builds the architecture; the state dict saved with
        ``torch.save`` at ``weights`` (read with ``weights_only=True``) is loaded into it."""
        factory = cls(fn, *args, **kwargs)
        factory.weights = str(weights)
        factory.key = (*factory.key, factory.weights)
        return factory

    def build(self, device: torch.device | str = "cpu"):
        if isinstance(self.fn, str):
            return load_model_file(self.fn, device)
        model = self.fn(*self.args, **self.kwargs)
        if self.weights is not None:
            load_weights(model, self.weights)
            model.eval()
        return model.to(device) if isinstance(model, torch.nn.Module) else model


def resolve_model(model, device: torch.device | str | None = None):
    """The model itself, or the cached instance a :class:`ModelFactory` built in this process
    on ``device`` (default: the CPU)."""
    if isinstance(model, ModelFactory):
        dev = torch.device(device if device is not None else "cpu")
        with _LOCK:
            key = (model.key, _file_version(model.fn), str(dev))
            if key not in _MODELS:
                _MODELS[key] = model.build(dev)
            return _MODELS[key]
    return model


def _file_version(fn) -> tuple | None:
    """A model file's size and modification time (a file rewritten in place, e.g. by
    re-exporting, is built again), None for a function."""
    if not isinstance(fn, str):
        return None
    try:
        st = os.stat(fn)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


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
