"""Usage errors of `audio-sidecar` and its tools, as a user meets them: the real
command as a subprocess, exit status 2, a sentence naming what is wrong, and
never a traceback."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib

from support import REPO
from test_tools_harness import tool_env


def refused(result: subprocess.CompletedProcess[bytes], *names: str) -> str:
    """Exit 2, no traceback, and every one of `names` in what was said."""
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 2, (result.returncode, err)
    assert "Traceback" not in err, err
    for name in names:
        assert name in err, (name, err)
    return err


def python(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, cwd=REPO, env=tool_env(), timeout=60
    )


def test_an_old_python_gets_one_line_and_exit_2() -> None:
    pretend = (
        "import runpy, sys; sys.version_info = (3, 10, 13, 'final', 0); "
        "sys.argv = ['sidecar', '--version']; runpy.run_module('sidecar', run_name='__main__')"
    )
    err = refused(python("-c", pretend), "needs Python 3.11 or newer", "this is Python 3.10")
    assert err.count("\n") == 1


def test_the_guard_parses_on_old_pythons_and_agrees_with_pyproject() -> None:
    main = (REPO / "sidecar" / "__main__.py").read_text()
    init = (REPO / "sidecar" / "__init__.py").read_text()
    for source in (main, init):
        ast.parse(source, feature_version=(3, 4))
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = next(
        node.value
        for node in ast.walk(ast.parse(main))
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "MINIMUM" for t in node.targets)
    )
    assert requires == ">=" + ".".join(str(ast.literal_eval(n)) for n in minimum.elts)  # type: ignore[attr-defined]
