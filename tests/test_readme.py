"""The README's spawn snippet, run as it stands: the first code a bot builder copies.

The snippet is taken from README.md itself, so the page cannot drift from what
runs: against a real server it must hear the answer and stop cleanly, started
either way the README offers; and when the sidecar dies under it, or never
connects, it must say so and end instead of hanging.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import trio
from agent_servers import RealtimeConfig, RealtimeServer
from support import REPO, SidecarProcess, WsServer, wait_until
from test_examples import echo
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection

from sidecar import commands, events

README = REPO / "README.md"
SPAWN_HEADING = "### Spawning the sidecar"
CONTROL_HEADING = "### Example: a bot that spawns the sidecar (`--control-stdin`)"


def snippet(heading: str) -> str:
    """The one Python block of a README section (up to the next heading)."""
    text = README.read_text()
    assert heading in text, f"README.md lost its {heading!r} section"
    section = re.split(r"^##+ ", text.split(heading, 1)[1], maxsplit=1, flags=re.MULTILINE)[0]
    blocks = re.findall(r"^```python\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    assert len(blocks) == 1, f"{heading!r} should hold one Python block, not {len(blocks)}"
    return str(blocks[0])


def spawn_snippet() -> str:
    return snippet(SPAWN_HEADING)


def snippet_command(tmp_path: Path, heading: str = SPAWN_HEADING) -> list[str]:
    path = tmp_path / "bot.py"
    path.write_text(snippet(heading))
    return [sys.executable, str(path)]


def snippet_env(url: str, sidecar_cmd: str | None = None) -> dict[str, str]:
    # PYTHONPATH: this checkout's sidecar, whatever the venv was installed from.
    env = dict(os.environ, SIDECAR_URL=url, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env.pop("SIDECAR_CMD", None)
    if sidecar_cmd is not None:
        env["SIDECAR_CMD"] = sidecar_cmd
    return env


def console_script() -> str:
    """The `audio-sidecar` pip installed beside this interpreter."""
    script = Path(sys.executable).parent / "audio-sidecar"
    assert script.exists(), f"no console script at {script}: pip install -e . first"
    return str(script)


@pytest.mark.parametrize("started", ["python -m sidecar", "console script"])
async def test_the_readme_snippet_hears_the_server_and_stops_cleanly(
    tmp_path: Path, started: str
) -> None:
    sidecar_cmd = console_script() if started == "console script" else None
    with WsServer(on_message=echo) as server, trio.fail_after(30):
        result = await trio.run_process(
            snippet_command(tmp_path),
            env=snippet_env(server.url, sidecar_cmd),
            cwd=tmp_path,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, (out, err[-2000:])
    assert re.fullmatch(r"heard 960 samples of bot output \(kind 0x16\)\n", out), out
    # The server heard the tone the snippet wrote: 0.5 s at 16 kHz, less what
    # the resampler still held at the clean stop and flushed then.
    assert len(server.audio()) >= 2 * 16000 * 0.4
    assert "Traceback" not in err, err[-2000:]


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


async def _drain(output: dict[str, bytes], name: str, stream: trio.abc.ReceiveStream) -> None:
    """Collects a stream; `output["out"]` grows as stdout comes, for waiting on."""
    data = b""
    async for chunk in stream:
        data += chunk
        if name == "stdout":
            output["out"] = data
    output[name] = data


async def test_the_readme_snippet_ends_when_the_sidecar_dies_under_it(tmp_path: Path) -> None:
    # A server that never answers: the snippet ends up blocked reading audio-out,
    # where only end-of-file can wake it.
    output: dict[str, bytes] = {}

    with WsServer() as server, trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            process = await trio.lowlevel.open_process(
                snippet_command(tmp_path),
                env=snippet_env(server.url),
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                assert process.stdout is not None and process.stderr is not None
                nursery.start_soon(_drain, output, "stdout", process.stdout)
                nursery.start_soon(_drain, output, "stderr", process.stderr)
                await wait_until(lambda: len(server.audio()) >= 2 * 16000 * 0.3, 20)
                (sidecar,) = _children(process.pid)
                os.kill(sidecar, signal.SIGKILL)
                code = await process.wait()
            finally:
                # A snippet that hangs must not outlive the test, nor its sidecar.
                if process.returncode is None:
                    for pid in _children(process.pid):
                        os.kill(pid, signal.SIGKILL)
                    process.kill()
    err = output["stderr"].decode()
    assert code == 1, (output, code)
    assert "the sidecar died: exit -9" in err, err[-2000:]
    assert not output["stdout"]


async def test_the_readme_snippet_says_when_the_sidecar_never_connects(tmp_path: Path) -> None:
    def refuse(ws: ServerConnection, request: Request) -> Response:
        return ws.respond(401, "missing token\n")

    with WsServer(process_request=refuse) as server, trio.fail_after(30):
        result = await trio.run_process(
            snippet_command(tmp_path),
            env=snippet_env(server.url),
            cwd=tmp_path,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    err = result.stderr.decode()
    assert result.returncode == 1, err[-2000:]
    # Exit 4: a fatal rejection, as the README's exit codes say.
    assert "the sidecar stopped before connecting: exit 4" in err, err[-2000:]


async def test_the_readme_control_example_greets_the_room_and_answers_the_tool(
    tmp_path: Path,
) -> None:
    config = RealtimeConfig(api_key="sk-readme-control")
    output: dict[str, bytes] = {}
    with RealtimeServer(config) as server, trio.fail_after(40):
        env = dict(snippet_env(server.url), OPENAI_API_KEY=config.api_key)
        async with trio.open_nursery() as nursery:
            process = await trio.lowlevel.open_process(
                snippet_command(tmp_path, CONTROL_HEADING),
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                assert process.stdout is not None and process.stderr is not None
                nursery.start_soon(_drain, output, "stdout", process.stdout)
                nursery.start_soon(_drain, output, "stderr", process.stderr)
                # The greeting is spoken (the fake answers it with a reply) and heard.
                await wait_until(lambda: output.get("out", b"").count(b"quiet") == 1, 30)
                # Then the agent calls the tool; the example answers, the agent speaks.
                (conn,) = server.connections
                server.call_function(conn, "meeting_clock", "{}")
                await wait_until(lambda: output.get("out", b"").count(b"quiet") == 2, 30)
                process.send_signal(signal.SIGINT)  # the Ctrl-C the README mentions
                code = await process.wait()
            finally:
                if process.returncode is None:
                    for pid in _children(process.pid):
                        os.kill(pid, signal.SIGKILL)
                    process.kill()
        (conn,) = server.connections
    out, err = output["stdout"].decode(), output["stderr"].decode()
    assert code == 0, (out, err[-2000:])
    assert conn.violations == [], conn.violations
    # The session the example declares: its tool, in GA names the SDK accepts.
    session = conn.received[0]["session"]
    assert [tool["name"] for tool in session["tools"]] == ["meeting_clock"]
    # `say` became a response.create asking for the text; the tool's answer, a plain
    # one that made the agent speak it.
    state = server.state(conn)
    (greeting, answer) = state.instructions
    assert greeting is not None and "Hello everyone, I'm the meeting's assistant." in greeting
    assert answer is None
    # The call was answered with what the tool returned.
    ((call_id, text),) = state.outputs
    assert state.calls == {call_id: True}
    clock = json.loads(text)
    assert set(clock) == {"utc", "elapsed_minutes"} and clock["elapsed_minutes"] == 0
    assert re.fullmatch(r"\d\d:\d\d", clock["utc"])
    assert out.splitlines() == [
        "agent speaking",
        "agent quiet (finished)",
        f"answered meeting_clock: {json.dumps(clock)}",
        "agent speaking",
        "agent quiet (finished)",
    ], out
    assert "refused" not in err and "Traceback" not in err, err[-2000:]


SOCKET_HEADING = "### Example: a bot in another container (`--control PATH`)"
POD_CONTROL = "/run/audio/control.sock"


async def test_the_readme_socket_example_reaches_the_agent_through_control(
    tmp_path: Path,
) -> None:
    text = snippet(SOCKET_HEADING)
    assert POD_CONTROL in text  # the path of deploy/pod.yaml, here a temporary one
    control = tmp_path / "control.sock"
    bot = tmp_path / "bot.py"
    bot.write_text(text.replace(POD_CONTROL, str(control)))
    config = RealtimeConfig(api_key="sk-readme-socket")
    output: dict[str, bytes] = {}
    with RealtimeServer(config) as server, trio.fail_after(40):
        args = ["--protocol", "openai-realtime", "--url", server.url, "--control", str(control)]
        args += ["--audio-in", str(tmp_path / "in.sock"), "--audio-out", str(tmp_path / "out.sock")]
        async with trio.open_nursery() as nursery:
            sidecar = SidecarProcess(args, env={"OPENAI_API_KEY": config.api_key})
            try:
                await sidecar.start(nursery)
                await sidecar.wait_event("connected")
                process = await trio.lowlevel.open_process(
                    [sys.executable, str(bot)],
                    cwd=tmp_path,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                try:
                    assert process.stdout is not None and process.stderr is not None
                    nursery.start_soon(_drain, output, "stdout", process.stdout)
                    nursery.start_soon(_drain, output, "stderr", process.stderr)
                    await wait_until(lambda: b"\n" in output.get("out", b""), 15)
                    # The sidecar stopping closes the socket: the example's loop ends.
                    assert await sidecar.stop() == 0
                    code = await process.wait()
                finally:
                    if process.returncode is None:
                        process.kill()
            finally:
                sidecar.kill()
        (conn,) = server.connections
    out, err = output["stdout"].decode(), output["stderr"].decode()
    assert code == 0, (out, err[-2000:])
    assert out == "1 ok\n", out
    # The command reached the agent as a system message, and was answered on the socket
    # as on stdout.
    assert server.state(conn).messages == [("system", "Dana (finance) joined the meeting.")]
    assert conn.violations == []
    (result,) = sidecar.named("command_result")
    assert (result["id"], result["command"], result["ok"]) == (1, "context", True)


def _section(text: str, heading: str) -> str:
    assert heading in text, f"lost the {heading!r} section"
    return re.split(r"^##+ ", text.split(heading, 1)[1], maxsplit=1, flags=re.MULTILINE)[0]


def test_the_docs_name_every_event_and_command() -> None:
    # Derived from the code, so a new event or command cannot go undocumented.
    names = [str(event.__struct_config__.tag) for event in typing.get_args(events.Event)]
    readme = README.read_text()
    listed = _section(readme, "### Events")
    assert [name for name in names if f"`{name}`" not in listed] == []
    contract = (REPO / "proto" / "README.md").read_text()
    assert [name for name in names if f"| `{name}` |" not in contract] == []
    vocabulary = _section(readme, "### The vocabulary")
    assert [name for name in commands.NAMES if f"`{name}`" not in vocabulary] == []
    shapes = _section(contract, "### 8.2 Commands")
    assert [name for name in commands.NAMES if f"`{name}`" not in shapes] == []


def test_the_dialects_table_has_a_row_for_every_dialect() -> None:
    """The README's table of dialects is derived from the registry by this check:
    a dialect added in sidecar/dialects/ fails here until its row is written."""
    from sidecar.dialects import DIALECTS

    text = README.read_text()
    section = text.split("## Dialects", 1)[1].split("\n## ", 1)[0]
    rows = {m[1] for m in re.finditer(r"^\| `([a-z0-9-]+)`", section, re.MULTILINE)}
    assert set(DIALECTS) <= rows, f"README's Dialects table lacks {set(DIALECTS) - rows}"
