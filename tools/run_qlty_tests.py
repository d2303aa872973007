"""Run qlty 1.5.0's own test-suite against fastquilt.compat.

Downloads qlty's source distribution once (``pip download --no-binary :all: --no-deps
qlty==1.5.0``, cached in build/qlty-sdist/ so reruns are offline), unpacks its ``tests/`` into
a temporary directory and runs them with pytest, with the shim package ``qlty``
(tests/compat/qlty_shim: qlty's public names pointing at fastquilt's, no qlty code) first on
``sys.path`` in that run only.

tests/compat/qlty_expected_failures.txt lists the files not run (``skip``) and the tests that
must fail (``fail``), each with its reason. Exit status 1 when a test not listed fails or a
listed one passes (so the list cannot go stale), or when a listed test was not run.

    python tools/run_qlty_tests.py [-k EXPR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "qlty-sdist"
SDIST = CACHE / "qlty-1.5.0.tar.gz"
SHIM = ROOT / "tests" / "compat" / "qlty_shim"
EXPECTED = ROOT / "tests" / "compat" / "qlty_expected_failures.txt"

# A pytest plugin that writes each test's outcome (failed in any phase wins) as JSON.
PLUGIN = '''
import json, os
_out = {}
def pytest_runtest_logreport(report):
    prev = _out.get(report.nodeid)
    if report.failed:
        _out[report.nodeid] = "failed"
    elif report.when == "call" and prev != "failed":
        _out[report.nodeid] = "passed"
    elif report.skipped and prev is None:
        _out[report.nodeid] = "skipped"
def pytest_collectreport(report):
    if report.failed:
        _out[report.nodeid] = "failed"
def pytest_sessionfinish(session):
    with open(os.environ["QLTY_OUTCOMES"], "w") as f:
        json.dump(_out, f)
'''


def sdist() -> Path:
    """The cached sdist, downloaded when missing."""
    if not SDIST.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:",
                        "--no-deps", "--disable-pip-version-check", "-q", "-d", str(CACHE),
                        "qlty==1.5.0"], check=True)
    return SDIST


def read_expected() -> tuple[dict[str, str], dict[str, str]]:
    """``(skips, fails)``: file -> reason and test id -> reason."""
    skips, fails = {}, {}
    for n, line in enumerate(EXPECTED.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry, _, reason = line.partition(" -- ")
        kind, _, target = entry.partition(" ")
        if kind not in ("skip", "fail") or not target or not reason.strip():
            raise SystemExit(f"{EXPECTED}:{n}: expected 'skip|fail <id> -- <reason>'")
        (skips if kind == "skip" else fails)[target.strip()] = reason.strip()
    return skips, fails


def unpack_tests(dest: Path) -> None:
    with tarfile.open(sdist()) as tar:
        members = [m for m in tar.getmembers()
                   if m.name.split("/")[1:2] == ["tests"] and m.isfile()]
        for m in members:
            m.name = "/".join(m.name.split("/")[1:])
            tar.extract(m, dest, filter="data")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default=None, help="pytest -k expression (a partial run)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    skips, fails = read_expected()
    tmp = Path(tempfile.mkdtemp(prefix="qlty-tests-"))
    unpack_tests(tmp)
    (tmp / "qlty_outcomes_plugin.py").write_text(PLUGIN)
    outcomes_file = tmp / "outcomes.json"
    env = dict(os.environ, QLTY_OUTCOMES=str(outcomes_file),
               PYTHONPATH=os.pathsep.join([str(SHIM), str(tmp)]
                                          + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    check = subprocess.run([sys.executable, "-c", "import qlty; print(qlty.__file__)"],
                           env=env, cwd=tmp, capture_output=True, text=True, check=True)
    if not check.stdout.strip().startswith(str(SHIM)):
        raise SystemExit(f"the qlty shim is not first on sys.path: {check.stdout.strip()}")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
           "qlty_outcomes_plugin", "--rootdir", str(tmp), "-c", os.devnull, "tests",
           "-W", "ignore::DeprecationWarning"]
    cmd += [a for f in skips for a in ("--ignore", f)]
    if args.k:
        cmd += ["-k", args.k]
    run = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
    if not outcomes_file.exists():
        print(run.stdout[-5000:], run.stderr[-5000:])
        raise SystemExit("pytest wrote no outcomes")
    outcomes = json.loads(outcomes_file.read_text())
    failed = {t for t, o in outcomes.items() if o == "failed"}
    unexpected = sorted(failed - set(fails))
    passing_listed = sorted(t for t in fails if outcomes.get(t) == "passed")
    missing = [] if args.k else sorted(t for t in fails if t not in outcomes)
    counts = {o: sum(1 for v in outcomes.values() if v == o)
              for o in ("passed", "failed", "skipped")}
    print(f"qlty 1.5.0's tests on fastquilt.compat: {counts['passed']} passed, "
          f"{len(failed & set(fails))} failed as expected, {counts['skipped']} skipped, "
          f"{len(skips)} files not run (listed)")
    for title, items in (("unexpected failures", unexpected),
                         ("listed as failing but passed (remove from the list)",
                          passing_listed),
                         ("listed but not run", missing)):
        if items:
            print(f"{title}:\n  " + "\n  ".join(items))
    if unexpected:
        print(run.stdout[-8000:])
    if args.keep:
        print(f"kept {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if unexpected or passing_listed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
