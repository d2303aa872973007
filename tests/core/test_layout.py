"""The package's layout rules, checked on the source: no import cycles (imports inside
functions included), no module importing another's private names, layers that point one way,
no module over 400 lines."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "python" / "fastquilt"

# Layers, lowest first: a module imports only from lower layers, or from its own subpackage.
LAYERS = [
    {"fastquilt._C", "fastquilt._args"},
    {"fastquilt.grid", "fastquilt.weights", "fastquilt.arrays", "fastquilt.transfer",
     "fastquilt.buffers"},
    {"fastquilt.op_registrations"},
    {"fastquilt.ops"},
    {"fastquilt.normalize"},
    {"fastquilt.tta", "fastquilt.reductions"},
    {"fastquilt.quilt"},
    {"fastquilt.batches"},
    {"fastquilt.accumulator", "fastquilt.sliding"},
    {"fastquilt.ensemble"},
    {"fastquilt.ensemble_sliding", "fastquilt.training"},
    {"fastquilt.formats"},
    {"fastquilt.outofcore"},
    {"fastquilt.tuning"},
    {"fastquilt.inference", "fastquilt.compat", "fastquilt.distributed", "fastquilt.cli"},
    {"fastquilt", "fastquilt.__main__"},
    {"fastquilt.demo"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    """Every module of the package by name (the compiled extension ``_C`` has no source)."""
    mods = {_module_name(p): p for p in PKG.rglob("*.py")}
    return mods | {"fastquilt._C": None}


def _imports(name: str, path: Path):
    """``(module, imported names)`` of every fastquilt import in the file, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "fastquilt":
                    yield a.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "fastquilt":
                yield mod, [a.name for a in node.names]


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        if path is None:
            continue
        for mod, names in _imports(name, path):
            targets = [f"{mod}.{n}" if f"{mod}.{n}" in mods else mod for n in names] or [mod]
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def _layer(module: str) -> int:
    for i, group in enumerate(LAYERS):
        if any(module == g or module.startswith(g + ".") for g in group if g != "fastquilt"):
            return i
    assert module == "fastquilt", module
    return next(i for i, g in enumerate(LAYERS) if "fastquilt" in g)


def _group(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_every_module_has_a_layer():
    for m in _modules():
        _layer(m)


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            # a package's __init__ re-exporting its own submodules is not a cycle back into it
            if t.startswith(m + "."):
                continue
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_layers_point_one_way():
    bad = []
    for src, targets in _graph().items():
        for t in targets:
            if t.startswith(src + "."):  # a package re-exporting its submodules
                continue
            same_group = _group(src) == _group(t) and _layer(src) == _layer(t)
            if _layer(t) > _layer(src) or (_layer(t) == _layer(src) and not same_group):
                bad.append(f"{src} imports {t}")
    assert bad == []


def test_no_private_names_across_modules():
    mods = _modules()
    bad = []
    for name, path in mods.items():
        if path is None:
            continue
        for mod, names in _imports(name, path):
            for n in names:
                if n.startswith("_") and f"{mod}.{n}" not in mods:  # a private name, not module
                    bad.append(f"{name}: from {mod} import {n}")
    assert bad == []


def test_no_module_over_400_lines():
    long = {name: n for name, p in _modules().items()
            if p is not None and (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_the_checker_finds_what_it_checks(tmp_path, monkeypatch):
    # A cycle, a private import and an upward import in a scratch package must be caught.
    pkg = tmp_path / "fastquilt"
    (pkg / "training").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "grid.py").write_text("from .quilt import Quilt\n")
    (pkg / "quilt.py").write_text("def f():\n    from .grid import _helper\n")
    (pkg / "training" / "__init__.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "PKG", pkg)
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_import_cycles()
    with pytest.raises(AssertionError, match="_helper"):
        test_no_private_names_across_modules()
    with pytest.raises(AssertionError, match="fastquilt.grid imports fastquilt.quilt"):
        test_layers_point_one_way()
