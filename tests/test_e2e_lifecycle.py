"""Lifecycle, end to end: signals, parent death, stdin EOF, settings and usage errors.

Real sidecar processes; the websocket server is the `websockets` one from
tests/support.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from e2e_peers import SilentServer, open_speaker, reserve_port, until_connected
from support import (
    REPO,
    Json,
    WsServer,
    bot_output,
    open_sidecar,
    play,
    sidecar_args,
    tone,
    wait_until,
)


def settings_args(settings: str, tmp: Path, *extra: str) -> list[str]:
    args = sidecar_args("unused", tmp, *extra)
    at = args.index("--url")
    args[at : at + 2] = ["--settings", settings]
    return args


async def run_to_exit(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """A sidecar that is expected to stop on its own, quickly (usage errors)."""
    result = await trio.run_process(
        [sys.executable, "-m", "sidecar", "run", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=REPO,
        env=env if env is not None else dict(os.environ),
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def play_until_closed(bot: trio.SocketStream, pcm: bytes) -> None:
    """A bot that streams until the sidecar goes away."""
    with contextlib.suppress(trio.BrokenResourceError):
        await play(bot, pcm)


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie nobody reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


# -- signals -------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_mid_stream_stops_cleanly(tmp_path: Path, signum: int) -> None:
    with trio.fail_after(30), WsServer() as server:
        async with (
            open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar,
            trio.open_nursery() as nursery,
        ):
            await until_connected(sidecar, server)
            speaker = await open_speaker(nursery, str(tmp_path / "out.sock"))
            await sidecar.wait_event("bot_connected", lambda e: e["socket"] == "out")
            bot = await trio.open_unix_socket(str(tmp_path / "in.sock"))
            nursery.start_soon(play_until_closed, bot, tone(440, 3.0))
            server.send(bot_output(tone(440, 3.0, 16000), 16000))
            await wait_until(lambda: len(server.messages()) >= 10 and len(speaker.pcm) > 0)
            assert (tmp_path / "in.sock").exists() and (tmp_path / "out.sock").exists()
            sidecar.process.send_signal(signum)  # type: ignore[union-attr]
            code = await sidecar.wait(5)
            await wait_until(lambda: server.current.closed.is_set(), timeout=5)
            await wait_until(lambda: speaker.eof, timeout=5)
            nursery.cancel_scope.cancel()
            await trio.sleep(0.05)

    assert code == 0
    assert server.current.close_code == 1000
    assert not (tmp_path / "in.sock").exists()
    assert not (tmp_path / "out.sock").exists()
    stopped = sidecar.named("stopped")
    assert stopped and stopped[-1]["exit_code"] == 0
    assert signal.Signals(signum).name in stopped[-1]["reason"]
    # The final stats come before the end, and the websocket went down cleanly.
    assert sidecar.events[-2]["event"] == "stats"
    (down,) = sidecar.named("disconnected")
    assert down["code"] == 1000


async def test_sigterm_while_retrying_stops_at_once(tmp_path: Path) -> None:
    args = sidecar_args(f"ws://127.0.0.1:{reserve_port()}/a", tmp_path, "--retry-delay", "30")
    with trio.fail_after(30):
        async with open_sidecar(args) as sidecar:
            await sidecar.wait_event("retrying")
            bot = await trio.open_unix_socket(str(tmp_path / "in.sock"))
            await play(bot, tone(440, 0.3), realtime=False)
            await sidecar.stats(lambda e: e["samples_in"] == 0.3 * 48000)
            before = trio.current_time()
            assert await sidecar.stop(timeout=5) == 0
            assert trio.current_time() - before < 3
    assert sidecar.named("stopped")[-1]["exit_code"] == 0
    # The audio held for a reconnect that never came is not silently lost.
    final = sidecar.named("stats")[-1]
    assert final["samples_out"] == 0
    assert final["dropped"]["uplink_stopped"] == 0.3 * 16000
    assert final["replay_depth_ms"] == 0


async def test_sigterm_with_a_dead_peer_is_bounded(tmp_path: Path) -> None:
    """A server that never answers our close cannot hold up the exit."""
    silent = SilentServer()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(silent.serve)
            async with open_sidecar(sidecar_args(silent.url, tmp_path)) as sidecar:
                await sidecar.wait_event("connected")
                assert await sidecar.stop(timeout=6) == 0
            nursery.cancel_scope.cancel()
    assert sidecar.named("stopped")[-1]["exit_code"] == 0


async def test_sigterm_with_a_parent_that_never_reads_stdout(tmp_path: Path) -> None:
    """Events wait in a bounded buffer; a full stdout pipe cannot block the exit."""
    with trio.fail_after(30), WsServer() as server:
        args = sidecar_args(server.url, tmp_path, stats_interval=0.005)
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "sidecar", "run", *args],
            stdout=subprocess.PIPE,  # never read: fills up after ~100 stats events
            stderr=subprocess.DEVNULL,
            cwd=REPO,
        )
        try:
            await wait_until(lambda: len(server.connections) == 1)
            await trio.sleep(1.5)
            assert process.returncode is None
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(5):
                code = await process.wait()
            await wait_until(lambda: server.current.closed.is_set(), timeout=5)
        finally:
            process.kill()
    assert code == 0
    assert server.current.close_code == 1000


# -- parent death ------------------------------------------------------------------------

# An intermediate parent: starts the sidecar (whose stdout is ours, so the test
# reads its events), then waits to be killed. The sidecar's stdin is /dev/null:
# only watching the parent process can tell it that its parent is gone.
PARENT = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-m", "sidecar", "run", *sys.argv[1:]], stdin=subprocess.DEVNULL)
time.sleep(60)
"""


@dataclass
class ParentRun:
    """A sidecar started by an intermediate parent process, its events read."""

    parent: trio.Process
    events: list[Json] = field(default_factory=list)
    eof: trio.Event = field(default_factory=trio.Event)

    def pid(self) -> int:
        return int(next(e["pid"] for e in self.events if e["event"] == "ready"))

    def stopped(self) -> list[Json]:
        return [e for e in self.events if e["event"] == "stopped"]


@asynccontextmanager
async def through_parent(script: str, args: list[str]) -> AsyncIterator[ParentRun]:
    parent = await trio.lowlevel.open_process(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    run = ParentRun(parent)

    async def read_events(stream: trio.abc.ReceiveStream) -> None:
        buf = b""
        async for data in stream:
            buf += data
            *lines, buf = buf.split(b"\n")
            run.events.extend(json.loads(line) for line in lines if line.strip())
        run.eof.set()

    try:
        async with trio.open_nursery() as nursery:
            assert parent.stdout is not None
            nursery.start_soon(read_events, parent.stdout)
            await wait_until(lambda: any(e["event"] == "connected" for e in run.events))
            yield run
            nursery.cancel_scope.cancel()
    finally:
        parent.kill()


async def test_sidecar_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        async with through_parent(PARENT, sidecar_args(server.url, tmp_path)) as run:
            pid = run.pid()
            assert alive(pid)
            run.parent.kill()
            await run.parent.wait()
            # Every holder of the pipe is gone once the sidecar has exited.
            with trio.fail_after(10):
                await run.eof.wait()
        await wait_until(lambda: not alive(pid), timeout=5)
        await wait_until(lambda: server.current.closed.is_set(), timeout=5)

    stopped = run.stopped()
    assert stopped and stopped[0]["exit_code"] == 0
    assert server.current.close_code == 1000
    assert not (tmp_path / "in.sock").exists()


# A parent whose spawning thread ends while the parent lives on, as in every
# thread-pool spawner: the sidecar must keep running until the process exits.
THREAD_PARENT = """
import subprocess, sys, threading, time
t = threading.Thread(
    target=subprocess.Popen,
    args=([sys.executable, "-m", "sidecar", "run", *sys.argv[1:]],),
    kwargs={"stdin": subprocess.DEVNULL},
)
t.start(); t.join()
time.sleep(60)
"""


async def test_sidecar_outlives_the_thread_that_spawned_it(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        args = sidecar_args(server.url, tmp_path)
        async with through_parent(THREAD_PARENT, args) as run:
            pid = run.pid()
            # The spawning thread is long gone; the sidecar must still run.
            await trio.sleep(1.5)
            assert alive(pid)
            assert not run.stopped()
            run.parent.kill()
            await run.parent.wait()
            await wait_until(lambda: not alive(pid), timeout=10)
            with trio.fail_after(10):
                await run.eof.wait()
    stopped = run.stopped()
    assert stopped and "parent" in stopped[0]["reason"]


async def test_exit_on_stdin_eof(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        args = sidecar_args(server.url, tmp_path, "--exit-on-stdin-eof")
        async with open_sidecar(args) as sidecar:
            await until_connected(sidecar, server)
            assert sidecar.process is not None and sidecar.process.stdin is not None
            await sidecar.process.stdin.aclose()
            assert await sidecar.wait(5) == 0
            await wait_until(lambda: server.current.closed.is_set(), timeout=5)
    assert "stdin" in sidecar.named("stopped")[-1]["reason"]
    assert server.current.close_code == 1000


async def test_stdin_eof_is_ignored_without_the_flag(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        async with open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar:
            await until_connected(sidecar, server)
            assert sidecar.process is not None and sidecar.process.stdin is not None
            await sidecar.process.stdin.aclose()
            await trio.sleep(0.5)
            assert sidecar.process.returncode is None
            assert await sidecar.stop() == 0


# -- settings and usage --------------------------------------------------------------------


async def test_attendee_settings_inline_and_from_a_file(tmp_path: Path) -> None:
    with trio.fail_after(30), WsServer() as server:
        settings = json.dumps({"audio": {"url": server.url, "sample_rate": 24000}})
        settings_file = tmp_path / "settings.json"
        settings_file.write_text(settings)
        for source in (settings, f"@{settings_file}"):
            before = len(server.connections)
            async with open_sidecar(settings_args(source, tmp_path)) as sidecar:
                assert sidecar.named("ready")[0]["sample_rate"] == 24000
                await sidecar.wait_event("connected")
                await wait_until(lambda: len(server.connections) > before)  # noqa: B023
                conn = server.current
                bot = await trio.open_unix_socket(str(tmp_path / "in.sock"))
                await play(bot, tone(1000, 0.1), realtime=False)
                await wait_until(lambda: len(conn.received) >= 3)  # noqa: B023
                assert await sidecar.stop() == 0
    rates = {m["data"]["sample_rate"] for m in server.messages("realtime_audio.mixed")}
    assert rates == {24000}


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ('{"audio": ', "not valid JSON"),
        ('{"audio": {"sample_rate": 16000}}', "audio"),
        ('{"audio": {"url": "ws://127.0.0.1:9/a", "sample_rate": 44100}}', "audio.sample_rate"),
        ('{"audio": {"url": "ws://127.0.0.1:9/a", "rate": 16000}}', "audio.rate"),
        ('{"audio": {"url": "http://127.0.0.1:9/a"}}', "audio.url"),
        ("@/nonexistent/settings.json", "/nonexistent/settings.json"),
    ],
)
async def test_settings_errors_are_usage_errors(tmp_path: Path, settings: str, named: str) -> None:
    with trio.fail_after(30):
        code, out, err = await run_to_exit(settings_args(settings, tmp_path))
    assert code == 2
    assert named in err
    assert "--settings" in err
    assert out == ""
    assert not (tmp_path / "in.sock").exists()


async def test_url_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(30), WsServer() as server:
        url = server.url
        monkeypatch.setenv("SIDECAR_URL", url)
        args = sidecar_args("unused", tmp_path)
        del args[:2]  # no --url
        async with open_sidecar(args) as sidecar:
            await until_connected(sidecar, server)
            assert await sidecar.stop() == 0
    assert sidecar.named("ready")[0]["url"] == url


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--audio-in-fd", "0"], "exactly one of --audio-in"),
        (["--url", None], "SIDECAR_URL"),
        (["--url", "http://example.com/a"], "ws://"),
        (["--sample-rate", "44100"], "--sample-rate"),
        (["--header", "no colon here"], "--header"),
    ],
)
async def test_usage_errors_exit_2(tmp_path: Path, change: list[str | None], message: str) -> None:
    args = sidecar_args("ws://127.0.0.1:9/a", tmp_path)
    flag, value = change
    assert flag is not None
    if value is None:
        at = args.index(flag)
        del args[at : at + 2]
    elif flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    env = {k: v for k, v in os.environ.items() if k != "SIDECAR_URL"}
    with trio.fail_after(30):
        code, out, err = await run_to_exit(args, env)
    assert code == 2, err
    assert message in err
    assert out == ""


async def test_run_help_documents_every_flag() -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, "-m", "sidecar", "run", "--help"],
            capture_stdout=True,
            cwd=REPO,
        )
    text = result.stdout.decode()
    from sidecar import cli

    parser = cli.parser()
    run = next(
        action.choices["run"]
        for action in parser._actions
        if isinstance(action.choices, dict) and "run" in action.choices
    )
    for action in run._actions:
        for flag in action.option_strings:
            assert flag in text
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings[0]} has no help text"
    for exit_code in ("0", "2", "3", "4"):
        assert f"{exit_code} " in text or f"{exit_code}:" in text
    from sidecar.dialects import DIALECTS

    for name, dialect in DIALECTS.items():  # where each dialect's credential comes from
        if dialect.auth_env:
            assert f"{dialect.auth_env}\n" in text and f"--protocol {name}: " in text
