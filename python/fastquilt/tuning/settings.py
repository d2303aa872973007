"""The tuned file: the settings ``python -m fastquilt tune`` chose, and what it measured.

``{"fastquilt_tuning": 1, "settings": {...}, "out_of_core": {...}, "context": {...},
"measurements": {...}}``. ``settings`` holds keyword arguments of
:func:`fastquilt.sliding_window` (``window``, ``step``, ``batch_size``); ``out_of_core`` those
only a run into zarr takes (``unit``, ``reader_threads``, ``writer_threads``); ``context`` the
device, model and input they were measured with.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

VERSION = 1
SETTINGS = ("window", "step", "batch_size")
OUT_OF_CORE = ("unit", "chunks", "reader_threads", "writer_threads")


def _positive(value, name: str, path) -> None:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                            for v in items):
        raise ValueError(f"tuning file {path}: {name} must be a positive int or a list of "
                         f"them, got {value!r}; re-run `python -m fastquilt tune`")


def save_tuning(path: str | os.PathLike, settings: dict, out_of_core: dict | None = None,
                context: dict | None = None, measurements: dict | None = None) -> None:
    """Write a tuned file (see the module docstring)."""
    doc = {"fastquilt_tuning": VERSION, "settings": settings, "out_of_core": out_of_core or {},
           "context": context or {}, "measurements": measurements or {}}
    check(doc, path)
    Path(path).write_text(json.dumps(doc, indent=1, default=str) + "\n")


def check(doc: dict, path) -> None:
    """Raise a ValueError naming the file and the key when ``doc`` is no tuned file."""
    if not isinstance(doc, dict) or doc.get("fastquilt_tuning") != VERSION:
        raise ValueError(f"{path} is not a fastquilt tuning file (version {VERSION}); write one "
                         "with `python -m fastquilt tune ... --out tuned.json`")
    for part, keys in (("settings", SETTINGS), ("out_of_core", OUT_OF_CORE)):
        block = doc.get(part, {})
        if not isinstance(block, dict):
            raise ValueError(f"tuning file {path}: {part} must be an object")
        unknown = set(block) - set(keys)
        if unknown:
            raise ValueError(f"tuning file {path}: unknown {part} {sorted(unknown)}; known: "
                             f"{list(keys)}")
        for k, v in block.items():
            _positive(v, f"{part}.{k}", path)


def read_tuning(path: str | os.PathLike) -> dict:
    """The whole tuned file, checked."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"tuning file {path} does not exist; write it with `python -m "
                         "fastquilt tune ... --out tuned.json`") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read tuning file {path}: {e}") from e
    check(doc, path)
    return doc


def _shape(v):
    return tuple(v) if isinstance(v, list) else v


def load_tuning(path: str | os.PathLike, *, out_of_core: bool = False) -> dict:
    """Keyword arguments of :func:`fastquilt.sliding_window` from a tuned file:
    ``window``, ``step`` and ``batch_size``; with ``out_of_core=True`` also ``unit``,
    ``reader_threads`` and ``writer_threads`` (for a run with ``out=``).

    ``fq.sliding_window(model, x, **fq.tuning.load_tuning("tuned.json"))``; an argument given
    next to them wins when the dict is updated first, e.g.
    ``{**load_tuning(p), "batch_size": 4}``.
    """
    doc = read_tuning(path)
    kw = {k: _shape(v) for k, v in doc["settings"].items()}
    if out_of_core:
        kw |= {k: _shape(v) for k, v in doc["out_of_core"].items()}
    return kw
