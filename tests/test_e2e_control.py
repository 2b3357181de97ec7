"""The control channel, end to end: the real sidecar process driven through
--control, --control-fd and --control-stdin, against a real websocket server
(Attendee's dialect: `send` is what every dialect carries, the agent commands
are `unsupported` there)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import trio
from control_client import READ_S, Client, connect
from e2e_bots import open_bot, play_tone
from e2e_peers import reserve_port
from support import (
    Json,
    SidecarProcess,
    WsServer,
    open_sidecar,
    sidecar_args,
    socketpair_fds,
    wait_until,
)


def results(sidecar: SidecarProcess) -> list[Json]:
    return sidecar.named("command_result")


async def test_the_control_socket_carries_commands_and_every_event(tmp_path: Path) -> None:
    control = tmp_path / "control.sock"
    with trio.fail_after(40), WsServer() as server:
        args = sidecar_args(server.url, tmp_path, "--control", str(control))
        async with open_sidecar(args) as sidecar:
            await sidecar.wait_event("connected")
            assert stat.S_IMODE(control.stat().st_mode) == 0o600
            client = await connect(control)
            # It starts with the ready event, then has every line stdout has.
            ready = await client.wait("ready")
            assert ready == sidecar.named("ready")[0]
            assert ready["control"] == str(control)
            await client.send({"command": "send", "id": 1, "message": {"trigger": "hello"}})
            ok = await client.wait("command_result", id=1)
            assert ok["ok"] is True and ok["error"] is None and ok["command"] == "send"
            await wait_until(lambda: {"trigger": "hello"} in server.messages())
            # An agent command Attendee's protocol has no message for.
            await client.send({"command": "say", "id": "s", "text": "Hello everyone"})
            refused = await client.wait("command_result", id="s")
            assert refused["ok"] is False
            assert refused["error"]["code"] == "unsupported"
            assert "attendee" in refused["error"]["message"]
            # Bad lines are answered, never sent, and the process lives on.
            await client.send(b'{"command": "send", "message": [1]}\n{not json\n')
            await client.wait("command_result", command="send", ok=False)
            bad = await client.wait("command_result", command=None)
            assert bad["error"]["code"] == "invalid_json"
            # A second client is told it is busy, and closed.
            second = await connect(control)
            with trio.fail_after(READ_S):
                data = b""
                while chunk := await second.stream.receive_some(65536):
                    data += chunk
            (busy,) = [json.loads(line) for line in data.splitlines()]
            assert busy["event"] == "command_result" and busy["error"]["code"] == "busy"
            # The first is still served; stats say what was refused.
            stats = await client.wait("stats", commands=4)
            assert stats["commands_refused"] == {
                "unsupported": 1,
                "invalid_field": 1,
                "invalid_json": 1,
            }
            # The same bytes on both: a line of the socket is a line of stdout.
            lines = list(client.lines)
            await wait_until(lambda: all(line + b"\n" in sidecar.stdout for line in lines))
            assert await sidecar.stop() == 0
    assert {"trigger": "hello"} in server.messages()
    assert not any("say" in json.dumps(m) for m in server.messages())
    assert not control.exists()


async def test_mute_drops_the_meeting_audio_counted_and_unmute_resumes(tmp_path: Path) -> None:
    control = tmp_path / "control.sock"
    with trio.fail_after(40), WsServer() as server:
        args = sidecar_args(server.url, tmp_path, "--control", str(control))
        async with open_sidecar(args) as sidecar:
            await sidecar.wait_event("connected")
            client = await connect(control)
            bot = await open_bot(tmp_path / "in.sock")
            await play_tone(bot, 440, 0.2)
            await wait_until(lambda: len(server.audio()) >= 2 * 3000)
            await client.send({"command": "mute", "id": "m"})
            await client.wait("command_result", id="m", ok=True)
            before = len(server.audio())
            await play_tone(bot, 440, 0.4)
            stats = await sidecar.stats(
                lambda e: e["muted"] and e["dropped"].get("uplink_muted", 0) >= 16000 * 0.3
            )
            # What the capture still held at the mute may follow; the meeting's
            # audio after it does not.
            assert len(server.audio()) - before <= 2 * 16000 * 0.06
            assert stats["participants"]["mixed"]["dropped"] >= 16000 * 0.3
            await client.send({"command": "unmute", "id": "u"})
            await client.wait("command_result", id="u", ok=True)
            await play_tone(bot, 440, 0.2)
            await sidecar.stats(lambda e: not e["muted"])
            await wait_until(lambda: len(server.audio()) - before >= 2 * 16000 * 0.15)
            assert await sidecar.stop() == 0


async def test_control_fd_is_the_same_channel_over_an_inherited_socket(tmp_path: Path) -> None:
    with trio.fail_after(40), WsServer() as server, socketpair_fds() as (ours, theirs):
        args = sidecar_args(server.url, tmp_path, "--control-fd", str(theirs.fileno()))
        async with open_sidecar(args, pass_fds=(theirs.fileno(),)) as sidecar:
            theirs.close()
            ours.setblocking(False)
            client = Client(trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
            await client.wait("ready")
            await client.wait("connected")
            await client.send({"command": "clear", "id": 1})
            cleared = await client.wait("command_result", id=1)
            assert cleared["ok"] is True
            # A clear with nothing playing still answers as a barge-in does.
            await client.wait("playout_cleared")
            await client.send({"command": "send", "id": 2, "message": {"trigger": "fd"}})
            await client.wait("command_result", id=2, ok=True)
            await wait_until(lambda: {"trigger": "fd"} in server.messages())
            assert sidecar.named("ready")[0]["audio_in"] == str(tmp_path / "in.sock")
            assert await sidecar.stop() == 0


async def test_control_stdin_reads_commands_and_its_end_stops_the_sidecar(tmp_path: Path) -> None:
    with trio.fail_after(40), WsServer() as server:
        args = sidecar_args(
            server.url, tmp_path, "--control-stdin", "--exit-on-stdin-eof", "--tool-timeout", "5"
        )
        async with open_sidecar(args) as sidecar:
            await sidecar.wait_event("connected")
            assert sidecar.process is not None and sidecar.process.stdin is not None
            stdin = sidecar.process.stdin
            await stdin.send_all(b'{"command": "send", "id": "a", "message": {"trigger": "in"}}\n')
            await stdin.send_all(b'{"command": "tool_result", "id": "b", "call_id": "c", ')
            await stdin.send_all(b'"output": 1}\n{"command": "mute", "id": "c"}')
            await sidecar.wait_event("command_result", lambda e: e["id"] == "b")
            await wait_until(lambda: {"trigger": "in"} in server.messages())
            # The last line has no newline: the end of stdin completes it.
            await stdin.aclose()
            assert await sidecar.wait() == 0
    answers = {e["id"]: e for e in results(sidecar)}
    assert answers["a"]["ok"] is True
    assert answers["b"]["error"]["code"] == "unsupported"
    assert answers["c"]["ok"] is True
    assert sidecar.named("stopped")[0]["reason"] == "stdin closed (parent gone)"
    assert sidecar.named("stats")[-1]["muted"] is True


async def test_stdin_is_not_read_without_control_stdin(tmp_path: Path) -> None:
    with trio.fail_after(40), WsServer() as server:
        async with open_sidecar(sidecar_args(server.url, tmp_path)) as sidecar:
            await sidecar.wait_event("connected")
            assert sidecar.process is not None and sidecar.process.stdin is not None
            await sidecar.process.stdin.send_all(b'{"command": "mute", "id": 1}\n')
            await sidecar.stats(lambda e: True)
            first = len(sidecar.named("stats"))
            await sidecar.stats(lambda e: len(sidecar.named("stats")) > first + 2)
            assert results(sidecar) == []
            assert await sidecar.stop() == 0


async def test_a_command_sent_while_disconnected_goes_on_the_next_connection(
    tmp_path: Path,
) -> None:
    port = reserve_port()
    control = tmp_path / "control.sock"
    url = f"ws://127.0.0.1:{port}/audio"
    args = sidecar_args(url, tmp_path, "--control", str(control), "--retry-delay", "0.1")
    server = WsServer()
    try:
        with trio.fail_after(40):
            async with open_sidecar(args) as sidecar:
                await sidecar.wait_event("retrying")
                client = await connect(control)
                for n in range(3):
                    await client.send({"command": "send", "id": n, "message": {"n": n}})
                await client.wait("command_result", id=2, ok=True)
                server.start(port)
                await client.wait("connected")
                await wait_until(lambda: len(server.messages()) >= 3)
                assert await sidecar.stop() == 0
    finally:
        server.stop()
    assert server.connections[0].received[:3] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_control_flags_are_checked_up_front(tmp_path: Path) -> None:
    for extra, words in (
        (["--control", str(tmp_path / "c.sock"), "--control-fd", "5"], "not both"),
        (["--tool-timeout", "0"], "--tool-timeout must be between 0.1 and 3600"),
        (["--control", str(tmp_path / "in.sock")], "is an audio socket already"),
    ):
        args = sidecar_args("ws://127.0.0.1:9/x", tmp_path, *extra)
        async with open_sidecar(args, wait_ready=False) as sidecar:
            assert await sidecar.wait() == 2
            await trio.sleep(0.05)
        assert words in sidecar.stderr.decode(), sidecar.stderr
        assert not os.path.exists(tmp_path / "c.sock")


async def test_a_control_client_that_does_not_read_costs_lines_not_the_sidecar(
    tmp_path: Path,
) -> None:
    control = tmp_path / "control.sock"
    with trio.fail_after(60), WsServer() as server:
        args = sidecar_args(server.url, tmp_path, "--control", str(control))
        async with open_sidecar(args) as sidecar:
            await sidecar.wait_event("connected")
            client = await connect(control)
            # Each command makes an event line; the client reads none of them.
            lines = b'{"command": "unmute"}\n' * 200
            for _ in range(30):
                await client.send(lines)
                # Paced so that stdout, read by this test, keeps up (2000 lines
                # a second: the stdout bound holds 1000, half a second's worth).
                await trio.sleep(0.1)
            stats = await sidecar.stats(
                lambda e: e["commands"] == 6000 and e["control_events_dropped"] > 0
            )
            warning = await sidecar.wait_event(
                "warning", lambda e: e["code"] == "control_events_dropped"
            )
            assert "too slowly" in warning["message"]
            assert stats["events_dropped"] == 0
            # The sidecar goes on: the server still hears the bot.
            bot = await open_bot(tmp_path / "in.sock")
            await play_tone(bot, 440, 0.2)
            await wait_until(lambda: len(server.audio()) >= 2 * 3000)
            # What the client finally reads is bounded: about 1000 lines and
            # what the socket buffers held, not all 6000.
            got = 0
            with trio.move_on_after(1):
                while data := await client.stream.receive_some(1 << 20):
                    got += data.count(b"\n")
            dropped = stats["control_events_dropped"]
            assert dropped >= 1000
            # Every line is read or counted as dropped, none twice (a few
            # more lines came after: the tone's stats, bot_connected, ...).
            assert 6000 <= got + dropped <= 6000 + 100
            assert await sidecar.stop() == 0
