"""The example bots in examples/ and the deploy/ pod, exercised for real."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import trio
from support import REPO, Connection, Json, WsServer, dominant_frequency
from test_tools_harness import tool_env

from sidecar import cli

DONE = re.compile(
    r"^done: sent (\d+) samples, received (\d+) samples of bot output, sidecar exited with (\d+)$",
    re.MULTILINE,
)


def echo(server: WsServer, conn: Connection, message: Json) -> None:
    if message["trigger"] == "realtime_audio.mixed":
        data = message["data"]
        server.send(
            {
                "trigger": "realtime_audio.bot_output",
                "data": {"chunk": data["chunk"], "sample_rate": data["sample_rate"]},
            }
        )


async def run_bot(command: list[str], env: dict[str, str]) -> tuple[str, WsServer]:
    with WsServer(on_message=echo) as server:
        with trio.fail_after(45):
            result = await trio.run_process(
                [*command, "--url", server.url, "--seconds", "1", "--freq", "523"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                cwd=REPO,
                env=env,
            )
        out = result.stdout.decode()
        assert result.returncode == 0, out + result.stderr.decode()
    return out, server


def check_run(out: str, server: WsServer) -> None:
    done = DONE.search(out)
    assert done, out
    sent, received, code = map(int, done.groups())
    assert (sent, code) == (48000, 0)
    # Everything sent came back through the echo (allow one frame of slack).
    assert received >= sent - 960
    # The bot's second of audio; after it (the examples run with the fill on,
    # the default, while the bot waits for its echo) only silence.
    heard = server.audio().rstrip(b"\0")
    assert abs(len(heard) // 2 - 16000) <= 320
    assert abs(dominant_frequency(heard, 16000) - 523) < 5
    # The bot saw the lifecycle in the sidecar's events.
    for name in ("ready", "connected", "stopped"):
        assert f"sidecar event {name}:" in out
    stopped = json.loads(out.split("sidecar event stopped: ", 1)[1].splitlines()[0])
    # Stopped by the bot closing its stdin (--exit-on-stdin-eof), cleanly.
    assert "stdin" in stopped["reason"]
    assert stopped["exit_code"] == 0


async def test_python_bot() -> None:
    bot = str(REPO / "examples" / "python_bot" / "bot.py")
    out, server = await run_bot([sys.executable, bot], tool_env())
    check_run(out, server)
    # It passed its socketpair ends as inherited fds, not paths.
    ready = json.loads(out.split("sidecar event ready: ", 1)[1].splitlines()[0])
    assert ready["audio_in"].startswith("fd:") and ready["audio_out"].startswith("fd:")


async def test_node_bot() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node.js example cannot run here")
    env = dict(tool_env(), SIDECAR_CMD=shlex.join([sys.executable, "-m", "sidecar"]))
    out, server = await run_bot([node, str(REPO / "examples" / "node_bot" / "bot.js")], env)
    check_run(out, server)
    ready = json.loads(out.split("sidecar event ready: ", 1)[1].splitlines()[0])
    assert (ready["audio_in"], ready["audio_out"]) == ("fd:3", "fd:4")
    # Its control channel (--control PATH): the `send` reached the server as is, and
    # `say` was answered `unsupported`, naming the dialect, and sent nowhere. The
    # answers were read from the socket (the bot reads no command_result on stdout).
    assert server.messages("bot.hello") == [{"trigger": "bot.hello", "data": {"bot": "node_bot"}}]
    assert "bot: control: send (hello-1) answered ok" in out, out
    unsupported = re.search(r"^bot: control: say \(say-1\) answered unsupported: (.*)$", out, re.M)
    assert unsupported and "attendee" in unsupported.group(1), out
    assert "bot: commands: send ok, say unsupported" in out
    assert {m["trigger"] for m in server.messages()} == {"realtime_audio.mixed", "bot.hello"}


def test_pod_example_runs_the_sidecar_as_a_native_sidecar_with_valid_args(
    tmp_path: Path,
) -> None:
    pod = (REPO / "deploy" / "pod.yaml").read_text()
    init, _, main = pod.partition("\n  containers:\n")
    assert "initContainers:" in init and "restartPolicy: Always" in init
    assert "EXAMPLE ONLY" in pod and "EXAMPLE ONLY" in (REPO / "deploy" / "Dockerfile").read_text()
    # Both containers mount the same emptyDir where the sockets live.
    assert init.count("name: audio-sockets") == 2  # the volume and the sidecar's mount
    assert "name: audio-sockets" in main and "mountPath: /run/audio" in main
    # The args are a flow sequence (valid YAML and JSON); the CLI must accept them
    # as Kubernetes would pass them, the URL from SIDECAR_URL and the headers
    # from the mounted Secret file (here a stand-in with the same content).
    line = next(ln for ln in init.splitlines() if ln.strip().startswith("args:"))
    headers = tmp_path / "headers"
    headers.write_text("Authorization: Bearer t0ken\n")
    mounted = "/var/run/secrets/sidecar/headers"
    assert mounted in line
    args = [a.replace(mounted, str(headers)) for a in json.loads(line.split(":", 1)[1])]
    parsed = cli.parser().parse_args(args)
    config = cli.build_config(parsed, environ={"SIDECAR_URL": "wss://bots.example.com/audio"})
    assert config.url == "wss://bots.example.com/audio"
    assert str(config.audio_in.path) == "/run/audio/in.sock"
    assert str(config.audio_out.path) == "/run/audio/out.sock"
    assert config.headers == (("Authorization", "Bearer t0ken"),)
    for path in ("/run/audio/in.sock", "/run/audio/out.sock"):
        assert path in main  # the bot is told where the sockets are
