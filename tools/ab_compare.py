"""A/B check that a refactor did not change behaviour: run fastquilt's public API on two builds
and compare every output bit for bit.

    python tools/ab_compare.py --before <git rev> [--after <git rev> | worktree]
                               [--keep DIR] [--allow KEY_GLOB ...] [--areas AREA ...]

For each side the tree (a git revision, extracted with ``git archive``, or the working tree's
files as they are) is copied under ``--keep``, its C++ extension is built with CMake + Ninja
from the repository's venv (cached by a hash of ``csrc/`` + ``CMakeLists.txt``, so a rerun or
a Python-only change builds nothing) and copied into ``<tree>/python/fastquilt/``. Then
``tools/ab_calls.py`` -- the copy next to this script, the same file for both sides -- runs in
``python -S`` with ``sys.path`` = [<tree>/python, stdlib, the venv's site-packages] (``-S``
skips the editable install's path hook, which would import the installed package instead),
after asserting that ``fastquilt`` and its ``_C`` were imported from that tree. The outputs are
saved with ``torch.save`` and compared: same keys; tensors and numpy arrays with the same
dtype, shape and bytes (NaNs by bit pattern); floats by bit pattern; other values with ``==``.

Exit status: 0 when everything is identical (or only ``--allow``-ed keys differ), 1 when
anything else differs, 2 on a usage, build or dump error.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CALLS = Path(__file__).resolve().with_name("ab_calls.py")
# Not copied from a working tree: VCS data, environments, build outputs, caches.
_SKIP_TOP = {".git", ".venv", "build", "build-ab"}
_SKIP_ANY = {"__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis", ".mypy_cache"}

# Runs in the side's interpreter (python -S): argv = tree, calls file, site-packages, output
# file, scratch folder, areas...
_DUMP = r"""
import importlib.util, sys, time
from pathlib import Path
tree, calls, site, out_file, scratch, *areas = sys.argv[1:]
sys.path[:] = [str(Path(tree) / "python")] + [p for p in sys.path if p] + [site]
t0 = time.perf_counter()
import torch
import fastquilt, fastquilt._C
for mod in (fastquilt, fastquilt._C):
    assert Path(mod.__file__).resolve().is_relative_to(Path(tree).resolve()), (
        f"{mod.__name__} was imported from {mod.__file__}, not from the tree {tree}")
spec = importlib.util.spec_from_file_location("ab_calls", calls)
ab_calls = importlib.util.module_from_spec(spec)
sys.modules["ab_calls"] = ab_calls  # picklable module-level models
spec.loader.exec_module(ab_calls)
outputs, seconds = ab_calls.run_all(Path(scratch), areas or None)
torch.save({"outputs": outputs, "seconds": seconds, "fastquilt": fastquilt.__file__,
            "_C": fastquilt._C.__file__, "total": time.perf_counter() - t0}, out_file)
"""


class ABError(RuntimeError):
    """A side could not be prepared, built or run (exit status 2)."""


@dataclass
class Side:
    """One build to compare: a label, where its tree is copied and what it came from."""

    name: str  # "before" / "after"
    spec: str  # the git rev, "worktree" or a tree path
    tree: Path
    sha: str | None = None
    build_key: str = ""
    build_s: float | None = None  # None: cached
    dump_s: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        what = f"{self.spec} ({self.sha[:12]})" if self.sha else self.spec
        build = "cached" if self.build_s is None else f"{self.build_s:.0f} s"
        return (f"{self.name:6}: {what}\n          build {build} [{self.build_key[:12]}], "
                f"dump {self.dump_s:.1f} s, {len(self.outputs)} outputs, tree {self.tree}")


# ---- preparing a tree ------------------------------------------------------------------------
def log(msg: str) -> None:
    """Progress on stderr (the report goes to stdout)."""
    print(f"[ab] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """Run ``cmd``, raising ABError with its output's tail when it fails."""
    res = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if res.returncode != 0:
        tail = (res.stdout + res.stderr)[-4000:]
        shown = " ".join("<script>" if "\n" in c else c for c in cmd)
        raise ABError(f"command failed ({res.returncode}): {shown}\n{tail}")
    return res


def resolve_rev(rev: str) -> str:
    """The commit sha of ``rev`` in the repository."""
    return run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"]
               ).stdout.strip()


def extract_rev(sha: str, keep: Path) -> Path:
    """``git archive`` of commit ``sha`` under ``keep`` (reused when already there)."""
    tree = keep / f"rev-{sha}" / "tree"
    if (tree / "CMakeLists.txt").exists():
        return tree
    tmp = keep / f"rev-{sha}" / "tree.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", "--format=tar", sha],
                               stdout=subprocess.PIPE)
    run(["tar", "-x", "-C", str(tmp)], stdin=archive.stdout)
    if archive.wait() != 0:
        raise ABError(f"git archive {sha} failed")
    tmp.rename(tree)
    return tree


def _ignore(root: Path):
    """copytree filter: skip _SKIP_TOP at the top, caches anywhere, and built modules."""
    def ignore(directory: str, names: list[str]) -> set[str]:
        top = Path(directory).resolve() == root.resolve()
        return {n for n in names if n in _SKIP_ANY or (top and n in _SKIP_TOP)
                or n.endswith((".so", ".pyc"))}
    return ignore


def copy_tree(src: Path, dest: Path) -> Path:
    """Copy the files of the tree ``src`` to ``dest`` as they are now (keeping
    ``dest/build-ab`` for incremental builds, replacing everything else)."""
    if not (src / "CMakeLists.txt").exists():
        raise ABError(f"{src} is not a fastquilt tree (no CMakeLists.txt)")
    dest.mkdir(parents=True, exist_ok=True)
    for p in dest.iterdir():
        if p.name == "build-ab":
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    # shutil.copy, not copy2: fresh mtimes, so ninja never keeps an object file built from
    # another tree's (older-dated) source in the reused build-ab.
    shutil.copytree(src, dest, ignore=_ignore(src), dirs_exist_ok=True, symlinks=True,
                    copy_function=shutil.copy)
    return dest


def build_key(tree: Path, python: Path) -> str:
    """Hash of what the extension is built from: csrc/, CMakeLists.txt and the interpreter."""
    h = hashlib.sha256(str(python).encode())
    files = sorted(p for p in (tree / "csrc").rglob("*") if p.is_file())
    for p in [tree / "CMakeLists.txt", *files]:
        h.update(b"\0" + p.relative_to(tree).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


# ---- building --------------------------------------------------------------------------------
def build_extension(side: Side, venv: Path, keep: Path) -> None:
    """Build ``_C`` for the side's tree (or take the cached build) and put it into
    ``<tree>/python/fastquilt/``."""
    python = venv / "bin" / "python"
    side.build_key = build_key(side.tree, python)
    cache = keep / "builds" / side.build_key
    if not list(cache.glob("_C*.so")):
        log(f"{side.name}: building the extension (cmake + ninja) in {side.tree / 'build-ab'}")
        t0 = time.perf_counter()
        bdir = side.tree / "build-ab"
        run([str(venv / "bin" / "cmake"), "-S", str(side.tree), "-B", str(bdir), "-G", "Ninja",
             f"-DCMAKE_MAKE_PROGRAM={venv / 'bin' / 'ninja'}", f"-DPython_EXECUTABLE={python}",
             "-DCMAKE_BUILD_TYPE=Release"])
        run([str(venv / "bin" / "cmake"), "--build", str(bdir), "--target", "_C"])
        built = sorted(bdir.glob("_C*.so"))
        if len(built) != 1:
            raise ABError(f"expected one _C*.so in {bdir}, found {built}")
        tmp = cache.with_name(cache.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copy2(built[0], tmp / built[0].name)
        shutil.rmtree(cache, ignore_errors=True)
        tmp.rename(cache)
        side.build_s = time.perf_counter() - t0
    else:
        log(f"{side.name}: extension cached ({side.build_key[:12]})")
    pkg = side.tree / "python" / "fastquilt"
    for old in pkg.glob("_C*.so"):
        old.unlink()
    so = next(cache.glob("_C*.so"))
    shutil.copy2(so, pkg / so.name)


# ---- running the calls -----------------------------------------------------------------------
def site_packages(venv: Path) -> Path:
    """The venv's site-packages folder."""
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if len(found) != 1:
        raise ABError(f"cannot find one site-packages in {venv}: {found}")
    return found[0]


def dump(side: Side, venv: Path, keep: Path, calls: Path, areas: list[str]) -> None:
    """Run ``calls`` on the side's tree in a fresh ``python -S`` and load its outputs."""
    import torch

    run_dir = keep / f"run-{side.name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    scratch = run_dir / "scratch"
    scratch.mkdir(parents=True)
    out_file = run_dir / "outputs.pt"
    log(f"{side.name}: running {calls.name} on {side.tree}")
    t0 = time.perf_counter()
    env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "HOME": str(run_dir),
           "TMPDIR": str(run_dir), "LC_ALL": "C.UTF-8"}
    cmd = [str(venv / "bin" / "python"), "-S", "-c", _DUMP, str(side.tree), str(calls),
           str(site_packages(venv)), str(out_file), str(scratch), *areas]
    run(cmd, cwd=run_dir, env=env, timeout=1800)
    side.dump_s = time.perf_counter() - t0
    data = torch.load(out_file, weights_only=False)
    side.outputs, side.seconds = data["outputs"], data["seconds"]


def prepare(name: str, spec: str, keep: Path, after_tree: Path | None = None) -> Side:
    """The side for a git revision, the working tree ("worktree") or a tree path."""
    if after_tree is not None:
        label = f"tree {after_tree}"
        return Side(name, label, copy_tree(after_tree, keep / f"copy-{name}" / "tree"))
    if spec == "worktree":
        return Side(name, "worktree", copy_tree(REPO, keep / f"copy-{name}" / "tree"))
    sha = resolve_rev(spec)
    return Side(name, spec, extract_rev(sha, keep), sha=sha)


# ---- comparing -------------------------------------------------------------------------------
def _tensor_diff(a: Any, b: Any) -> str | None:
    """Bit-for-bit comparison of two torch tensors."""
    import torch

    if a.dtype != b.dtype:
        return f"dtype {a.dtype} vs {b.dtype}"
    if a.shape != b.shape:
        return f"shape {tuple(a.shape)} vs {tuple(b.shape)}"
    ab = a.contiguous().reshape(-1).view(torch.uint8)
    bb = b.contiguous().reshape(-1).view(torch.uint8)
    if torch.equal(ab, bb):
        return None
    if a.is_floating_point() or a.is_complex() or a.dtype in (torch.bool,):
        x, y = a.double(), b.double()
    else:
        x, y = a.to(torch.float64), b.to(torch.float64)
    differ = ~((x == y) | (x.isnan() & y.isnan()))
    both = differ & ~x.isnan() & ~y.isnan()
    mad = float((x - y)[both].abs().max()) if bool(both.any()) else float("nan")
    nan = int((differ & (x.isnan() ^ y.isnan())).sum())
    extra = f", {nan} NaN-vs-number" if nan else ""
    if not bool(differ.any()):
        return "same values, different bits (NaN payload or signed zero)"
    return f"max abs diff {mad:.3g} ({int(differ.sum())} of {x.numel()} elements{extra})"


def _ndarray_diff(a: Any, b: Any) -> str | None:
    """Bit-for-bit comparison of two numpy arrays (compared as tensors beyond the bytes)."""
    import numpy as np
    import torch

    if a.dtype != b.dtype:
        return f"dtype {a.dtype} vs {b.dtype}"
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    if np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes():
        return None
    return _tensor_diff(torch.from_numpy(np.ascontiguousarray(a).astype(np.float64)),
                        torch.from_numpy(np.ascontiguousarray(b).astype(np.float64)))


def _text_diff(a: str, b: str) -> str:
    """Where two strings first differ, with some context from each."""
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    lo = max(0, i - 30)
    return f"at char {i}: {a[lo:i + 50]!r}\n{' ' * 10}vs {b[lo:i + 50]!r}"


def value_diff(a: Any, b: Any) -> str | None:
    """None when ``a`` and ``b`` are identical, else a one-line description of how not."""
    import numpy as np
    import torch

    if type(a) is not type(b):
        return f"type {type(a).__name__} vs {type(b).__name__}: {_short(a)} vs {_short(b)}"
    if isinstance(a, torch.Tensor):
        return _tensor_diff(a, b)
    if isinstance(a, np.ndarray):
        return _ndarray_diff(a, b)
    if isinstance(a, float):
        return None if struct.pack("<d", a) == struct.pack("<d", b) else f"{a!r} vs {b!r}"
    if isinstance(a, str):
        return None if a == b else _text_diff(a, b)
    if isinstance(a, tuple):  # of scalars
        if len(a) != len(b):
            return f"length {len(a)} vs {len(b)}: {_short(a)} vs {_short(b)}"
        diffs = [(i, d) for i, (x, y) in enumerate(zip(a, b)) if (d := value_diff(x, y))]
        if not diffs:
            return None
        return f"{len(diffs)} of {len(a)} items differ; item {diffs[0][0]}: {diffs[0][1]}"
    return None if a == b else f"{a!r} vs {b!r}"


def _short(v: Any) -> str:
    s = repr(v) if not hasattr(v, "shape") else f"<{type(v).__name__} {tuple(v.shape)}>"
    return s if len(s) < 120 else s[:117] + "..."


@dataclass
class Comparison:
    """The result of comparing two dumps."""

    same: list[str] = field(default_factory=list)
    different: dict[str, str] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)
    only_before: list[str] = field(default_factory=list)
    only_after: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.different or self.only_before or self.only_after)


def compare(before: dict[str, Any], after: dict[str, Any], allow: list[str]) -> Comparison:
    """Compare two dumps key by key; keys matching an ``allow`` glob are expected to differ."""
    c = Comparison()

    def allowed(key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, g) for g in allow)

    for key in sorted(before.keys() | after.keys()):
        if key not in after or key not in before:
            side = "before" if key not in after else "after"
            if allowed(key):
                c.expected[key] = f"only {side}"
            else:
                (c.only_before if side == "before" else c.only_after).append(key)
            continue
        diff = value_diff(before[key], after[key])
        if diff is None:
            c.same.append(key)
        elif allowed(key):
            c.expected[key] = diff
        else:
            c.different[key] = diff
    return c


# ---- report ----------------------------------------------------------------------------------
def _listing(title: str, items: dict[str, str] | list[str], limit: int) -> list[str]:
    if not items:
        return []
    lines = [f"{title} ({len(items)}):"]
    entries = list(items.items()) if isinstance(items, dict) else [(k, "") for k in items]
    for key, what in entries[:limit]:
        lines.append(f"  {key}" + (f"\n      {what}" if what else ""))
    if len(entries) > limit:
        lines.append(f"  ... and {len(entries) - limit} more (--max-list)")
    return lines


def _per_area(c: Comparison) -> str:
    areas: dict[str, list[int]] = {}
    for key in c.same:
        areas.setdefault(key.split("/", 1)[0], [0, 0])[0] += 1
    for key in [*c.different, *c.only_before, *c.only_after, *c.expected]:
        areas.setdefault(key.split("/", 1)[0], [0, 0])[1] += 1
    return ", ".join(f"{a} {s}/{s + d}" for a, (s, d) in sorted(areas.items()))


def _crashes(before: Side, after: Side) -> dict[str, str]:
    """The ``<area>/!crashed`` records of either side."""
    found: dict[str, str] = {}
    for side in (before, after):
        for key, value in side.outputs.items():
            if key.endswith("/!crashed"):
                found[f"{key} ({side.name})"] = str(value)
    return found


def report(before: Side, after: Side, c: Comparison, limit: int) -> str:
    """The human-readable report."""
    n = len(c.same) + len(c.different) + len(c.expected) + len(c.only_before) + len(
        c.only_after)
    compared = len(c.same) + len(c.different) + len(c.expected)
    lines = ["fastquilt A/B comparison", before.describe(), after.describe(), "",
             f"{compared} outputs compared, {len(c.same)} identical, {len(c.different)} "
             f"different, {len(c.expected)} expected differences; {len(c.only_before)} only "
             f"before, {len(c.only_after)} only after ({n} keys)",
             f"identical per area: {_per_area(c)}", ""]
    lines += _listing("DIFFERENT", c.different, limit)
    lines += _listing("ONLY BEFORE", c.only_before, limit)
    lines += _listing("ONLY AFTER", c.only_after, limit)
    lines += _listing("expected difference (--allow)", c.expected, limit)
    lines += _listing("WARNING: areas that stopped part-way (their later calls did not run)",
                      _crashes(before, after), limit)
    verdict = ("DIFFERENT: behaviour changed" if c.failed else
               "IDENTICAL" + (" (apart from --allow-ed keys)" if c.expected else "") +
               ": every output matches bit for bit")
    lines += ["", f"RESULT: {verdict}"]
    return "\n".join(lines)


# ---- command line ----------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python tools/ab_compare.py",
        description="Build fastquilt at two revisions, run the public API calls of\n"
                    "tools/ab_calls.py (the copy next to this script) on each, and compare\n"
                    "every output bit for bit. Run it with the repository venv's python.",
        epilog="examples:\n"
               "  python tools/ab_compare.py --before HEAD            # HEAD vs working tree\n"
               "  python tools/ab_compare.py --before HEAD~3 --after HEAD\n"
               "  python tools/ab_compare.py --before main --allow 'errors/step_*'\n"
               "exit status: 0 identical, 1 differences, 2 usage/build/run error",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, metavar="REV", help="git revision of the "
                    "build before the change")
    ap.add_argument("--after", default="worktree", metavar="REV",
                    help='git revision after the change, or "worktree" (default: the working '
                    "tree's files as they are, committed or not)")
    keep = Path(tempfile.gettempdir()) / "fastquilt-ab"
    ap.add_argument("--keep", type=Path, default=keep, metavar="DIR",
                    help=f"folder for the trees, cached builds and dumps (default {keep})")
    ap.add_argument("--allow", nargs="+", default=[], metavar="KEY_GLOB",
                    help="keys expected to differ (fnmatch globs such as 'errors/*'): "
                    "reported, but they do not fail the run")
    ap.add_argument("--areas", nargs="+", default=[], metavar="AREA",
                    help="run only these areas (keys of AREAS in tools/ab_calls.py, e.g. ops "
                    "quilt errors; default: all)")
    ap.add_argument("--venv", type=Path, default=REPO / ".venv",
                    help=f"venv with torch, cmake and ninja (default {REPO / '.venv'})")
    ap.add_argument("--max-list", type=int, default=40, metavar="N",
                    help="list at most N keys per section (default 40)")
    ap.add_argument("--after-tree", type=Path, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def reexec_in_venv(venv: Path) -> None:
    """Without torch here (a system python), run this script again with the venv's python."""
    try:
        import torch  # noqa: F401
    except ImportError:
        python = venv / "bin" / "python"
        if Path(sys.executable).resolve() == python.resolve():
            raise
        os.execv(python, [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    venv = a.venv.resolve()
    reexec_in_venv(venv)
    t0 = time.perf_counter()
    keep = a.keep.resolve()
    keep.mkdir(parents=True, exist_ok=True)
    try:
        before = prepare("before", a.before, keep)
        after = prepare("after", a.after, keep, a.after_tree)
        for side in (before, after):
            build_extension(side, venv, keep)
        for side in (before, after):
            dump(side, venv, keep, CALLS, a.areas)
    except ABError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = compare(before.outputs, after.outputs, a.allow)
    print(report(before, after, c, a.max_list))
    print(f"(total {time.perf_counter() - t0:.0f} s; calls from {CALLS})")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
