"""What made an out-of-core output: fingerprints of the model and the input, stored with it,
so that a resumed run does not mix the results of two models (or two inputs) in one array.

A fingerprint is None where it cannot be told cheaply and surely (an arbitrary callable, a
closure, an in-memory array); a resume is refused only when both runs' fingerprints are
known and differ.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path

import numpy as np
import torch

from .models import ModelFactory


def model_fingerprint(model) -> str | None:
    """A stable id of ``model``: a file's content, a factory's recipe, a module's class and
    weights, a plain function's code; None for anything else."""
    if isinstance(model, ModelFactory):
        if isinstance(model.fn, str):  # (a file only the dask workers see: unknown)
            digest = _file_sha256(model.fn)
            return None if digest is None else "file:" + digest
        return "factory:" + repr(model.key)
    if isinstance(model, torch.nn.Module):
        state = _state_sha256(model)
        return None if state is None else f"module:{type(model).__qualname__}:{state}"
    if inspect.isfunction(model) and not model.__closure__:
        # Its code (equal for two copies of `lambda p: p`), not the globals it reads. Bytecode
        # changes with the Python version, so the version is part of the id (same_source).
        h = hashlib.sha256()
        _code_digest(model.__code__, h)
        return f"function:py{sys.version_info[0]}.{sys.version_info[1]}:{h.hexdigest()}"
    return None


def _code_digest(code, h) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for c in code.co_consts:
        if inspect.iscode(c):
            _code_digest(c, h)
        elif isinstance(c, frozenset):  # its repr's order follows string hashing
            h.update(repr(sorted(map(repr, c))).encode())
        else:
            h.update(repr(c).encode())


def input_fingerprint(x) -> str | None:
    """Where ``x`` is stored (a file, a zarr store on disk, a dask graph); None in memory."""
    if isinstance(x, np.memmap):
        return f"file:{Path(str(x.filename)).resolve()}:{int(x.offset)}"
    if hasattr(x, "dask") and hasattr(x, "name"):
        return f"dask:{x.name}"
    store = getattr(x, "store", None)
    root = getattr(store, "root", None)  # zarr LocalStore
    if root is not None:
        return f"zarr:{Path(str(root)).resolve()}:{getattr(x, 'path', '')}"
    return None


def _file_sha256(path: str) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _state_sha256(model: torch.nn.Module) -> str | None:
    h = hashlib.sha256()
    h.update(repr(model).encode())  # the structure: layers without weights count too
    try:
        for name, t in sorted(model.state_dict().items()):
            t = t.detach()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes())
    except (RuntimeError, TypeError, NotImplementedError):  # meta, quantized, ...
        return None
    return h.hexdigest()


def same_source(stored: str | None, current: str | None) -> bool:
    """Whether two fingerprints allow resuming: equal, or one of them unknown (a function's
    code from another Python version cannot be compared, nor a factory's recipe, which
    outputs written before factories' models were fingerprinted hold, with a model)."""
    if stored is None or current is None or stored == current:
        return True
    a, b = stored.split(":", 2), current.split(":", 2)
    if "factory" in (a[0], b[0]):
        return a[0] != b[0]
    return a[0] == b[0] == "function" and a[1] != b[1]


def describe(fingerprint: str | None) -> str:
    if fingerprint is None:
        return "unknown"
    kind, _, rest = fingerprint.partition(":")
    return f"{kind} {rest[:60]}" + ("..." if len(rest) > 60 else "")

