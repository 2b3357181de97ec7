"""`make demo` on a fresh machine: the interpreter checked first, the runtime only.

The Makefile is the first thing a new user runs. On a Python older than
pyproject's requires-python it must stop before `.venv` exists (a venv an old
Python made would be reused, broken, by every later run); and the demo must
install, and need, only what running needs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import trio
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from support import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
REQUIRES_PYTHON = PYPROJECT["project"]["requires-python"]

# Only this machine's Python exists here, so an older one is played by a
# script that answers as it would: its version, and the Makefile's check run
# with that version. Anything else (making a venv) is a failure.
OLD_PYTHON = """#!/bin/sh
case "$1" in
  --version) echo "Python 3.10.12" ;;
  -c) exec {real} -c "import sys; sys.version_info = (3, 10, 12, 'final', 0)
$2" ;;
  *) echo "the old python was asked to: $*" >&2; exit 99 ;;
esac
"""


def make_copy(tmp_path: Path) -> Path:
    """The Makefile and what it reads, alone in a fresh directory."""
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def make(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_requires_python_is_the_one_the_makefile_checks() -> None:
    assert REQUIRES_PYTHON == ">=3.11"
    assert "Python 3.11 or newer" in (REPO / "README.md").read_text()


def test_make_demo_on_an_old_python_stops_before_making_a_venv(tmp_path: Path) -> None:
    work = tmp_path / "checkout"
    work.mkdir()
    make_copy(work)
    old = tmp_path / "python3.10"
    old.write_text(OLD_PYTHON.format(real=sys.executable))
    old.chmod(0o755)
    result = make(work, "demo", f"PYTHON={old}")
    assert result.returncode != 0, result.stdout
    assert f"audio-sidecar needs Python 3.11 or newer; {old} is Python 3.10.12" in result.stderr
    assert "make demo PYTHON=python3.11" in result.stderr
    assert "the old python was asked" not in result.stderr
    assert not (work / ".venv").exists()


def test_make_demo_installs_the_runtime_only_and_the_tests_the_dev_tools(tmp_path: Path) -> None:
    work = make_copy(tmp_path)
    demo = make(work, "-n", "demo", f"PYTHON={sys.executable}")
    assert demo.returncode == 0, demo.stderr
    installs = re.findall(r"pip install --quiet (-e .*)$", demo.stdout, re.MULTILINE)
    assert installs == ["-e ."], demo.stdout
    tests = make(work, "-n", "test", f"PYTHON={sys.executable}")
    assert "-e '.[dev]'" in tests.stdout and "-e '.[dev,interop]'" in tests.stdout


# -- the demo with nothing but the runtime importable -----------------------------------

BLOCKER = """
import importlib.abc, os, sys

BLOCKED = frozenset(os.environ["SIDECAR_TEST_BLOCKED"].split(","))


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not a runtime dependency)")
        return None


sys.meta_path.insert(0, NotInstalled())
"""


def runtime_distributions() -> set[str]:
    """audio-sidecar's dependencies for this Python, and theirs, without extras."""
    found: set[str] = set()
    todo = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        found.add(name)
        todo += [Requirement(r) for r in metadata.distribution(name).requires or []]
    return found


def dev_only_modules() -> set[str]:
    """Every installed top-level module that no runtime distribution provides."""
    runtime = runtime_distributions() | {"audio-sidecar", "pip", "setuptools"}
    return {
        module
        for module, dists in metadata.packages_distributions().items()
        if not {canonicalize_name(d) for d in dists} & runtime
    }


async def test_the_demo_needs_nothing_from_the_dev_extra(tmp_path: Path) -> None:
    blocked = dev_only_modules()
    # The blocker must block something real, or this test proves nothing.
    assert {"pytest", "hypothesis", "websockets", "openai", "twilio"} <= blocked
    site = tmp_path / "site"
    site.mkdir()
    # sitecustomize runs at start-up in every Python the demo starts (its sidecar too).
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{site}:{REPO}",
        "PYTHONUNBUFFERED": "1",
        "SIDECAR_TEST_BLOCKED": ",".join(sorted(blocked)),
    }
    demo = ["demo", "--seconds", "1", "--out", str(tmp_path / "echo.wav"), "--json"]
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "sidecar", *demo],
            capture_stdout=True,
            capture_stderr=True,
            cwd=tmp_path,
            env=env,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert json.loads(result.stdout)["ok"] is True
    assert "not a runtime dependency" not in result.stderr.decode()
