"""Harness for the tool tests: `python -m sidecar TOOL ...` as a real subprocess.

No tests here; the tool test modules import it. (It lives under a test_tools_
name so it sits with the files it serves.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import trio
from support import REPO

TOOL = [sys.executable, "-m", "sidecar"]
Json = dict[str, Any]


def tool_env() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1")


async def run_tool(
    *args: str, stdin: bytes | None = None, limit: float = 30.0
) -> subprocess.CompletedProcess[bytes]:
    """Run a tool to completion; output captured, exit status not checked."""
    with trio.fail_after(limit):
        return await trio.run_process(
            [*TOOL, *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=REPO,
            env=tool_env(),
        )


class ToolProcess:
    """A long-running tool (serve, record) whose output is read as it arrives.

    `own_group`: in its own process group, as a shell runs a foreground job,
    so that `ctrl_c` is SIGINT to the whole group, as a terminal sends it."""

    def __init__(self, *args: str, own_group: bool = False) -> None:
        self.args = args
        self.own_group = own_group
        self.stdout = b""
        self.stderr = b""
        self.process: trio.Process | None = None
        self._changed = trio.Event()
        self._eof = trio.Event()
        self._stderr_eof = trio.Event()

    async def start(self, nursery: trio.Nursery) -> ToolProcess:
        self.process = await trio.lowlevel.open_process(
            [*TOOL, *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env=tool_env(),
            start_new_session=self.own_group,
        )
        nursery.start_soon(self._read_stdout)
        nursery.start_soon(self._read_stderr)
        return self

    async def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for data in self.process.stdout:
            self.stdout += data
            self._changed.set()
            self._changed = trio.Event()
        self._eof.set()
        self._changed.set()

    async def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for data in self.process.stderr:
            self.stderr += data
        self._stderr_eof.set()

    @property
    def events(self) -> list[Json]:
        lines = self.stdout.decode().split("\n")
        return [json.loads(line) for line in lines[:-1] if line.startswith("{")]

    def named(self, name: str) -> list[Json]:
        return [e for e in self.events if e.get("event") == name]

    async def wait_event(
        self, name: str, predicate: Callable[[Json], bool] | None = None, limit: float = 15.0
    ) -> Json:
        with trio.fail_after(limit):
            while True:
                for event in self.named(name):
                    if predicate is None or predicate(event):
                        return event
                if self._eof.is_set():
                    raise AssertionError(
                        f"{self.args[0]} ended before {name!r}; stderr: {self.stderr.decode()}"
                    )
                await self._changed.wait()

    async def wait_output(self, text: bytes) -> None:
        while text not in self.stdout:
            if self._eof.is_set():
                raise AssertionError(f"{self.args[0]} ended before printing {text!r}")
            await self._changed.wait()

    async def ctrl_c(self, limit: float = 15.0) -> int:
        assert self.process is not None and self.own_group
        os.killpg(self.process.pid, signal.SIGINT)
        return await self.wait(limit)

    async def wait(self, limit: float = 15.0) -> int:
        assert self.process is not None
        with trio.fail_after(limit):
            code = await self.process.wait()
            await self._eof.wait()
            await self._stderr_eof.wait()
        return code

    async def stop(self, sig: int = signal.SIGINT, limit: float = 15.0) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        return await self.wait(limit)

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
