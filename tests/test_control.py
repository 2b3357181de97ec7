"""The control shell: commands carried out and answered, the tool-call timer, and
the socket client (events out, busy, a client that does not read), on real
Unix socket pairs under trio's mock clock."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, ClassVar

import trio
import trio.testing

from sidecar import events
from sidecar.calls import ToolCalls
from sidecar.config import Config, Endpoint
from sidecar.control import Control
from sidecar.dialects import make
from sidecar.dialects.attendee import Attendee
from sidecar.dialects.base import (
    COMMANDS,
    Options,
    RawSend,
    Say,
    SessionEnded,
    ToolCallCancelledIn,
    ToolCallIn,
    ToolResult,
)
from sidecar.outbox import MAX_CONTROL_BYTES, Outbox
from sidecar.service import Sidecar

Json = dict[str, Any]


class EveryCommand(Attendee):
    """A dialect that encodes the whole vocabulary: the shell's side of it only."""

    commands: ClassVar[frozenset[str]] = frozenset(COMMANDS.values())


class Harness:
    def __init__(self, dialect: str = "attendee", tool_timeout: float = 30.0) -> None:
        self.log = events.EventLog(stream=None)
        self.seen = events.Subscriber(limit=100_000, limit_bytes=1 << 30)
        self.log.subscribe(self.seen)
        self.outbox = Outbox(2000)
        self.muted: list[bool] = []
        self.clears = 0
        chosen = EveryCommand(Options()) if dialect == "every" else make(dialect, Options())
        self.control = Control(
            self.log,
            chosen,
            self.outbox.put_control,
            mute=self.muted.append,
            clear=self._clear,
            tool_timeout=tool_timeout,
        )

    def _clear(self) -> None:
        self.clears += 1

    def send(self, line: str | bytes) -> events.CommandResult:
        return self.control.handle(line if isinstance(line, bytes) else line.encode())

    def queued(self) -> list[object]:
        out: list[object] = []
        while (item := self.outbox.get()) is not None:
            out.append(item)
        return out

    async def events(self) -> list[Json]:
        if not self.seen.waiting:
            return []
        lines = await self.seen.take()
        self.seen.written()
        return [json.loads(line) for line in lines]


def code(result: events.CommandResult) -> str | None:
    return None if result.error is None else result.error.code


async def test_each_command_is_answered_once_and_carried_out() -> None:
    h = Harness("every")
    assert h.send('{"command": "mute", "id": 1}').ok
    assert h.send('{"command": "unmute", "id": 2}').ok
    assert h.send('{"command": "clear", "id": 3}').ok
    assert h.send('{"command": "say", "id": 4, "text": "Hello"}').ok
    assert h.send('{"command": "send", "id": 5, "message": {"type": "x"}}').ok
    assert h.muted == [True, False]
    assert h.clears == 1
    assert h.queued() == [Say("Hello"), RawSend('{"type":"x"}')]
    results = [e for e in await h.events() if e["event"] == "command_result"]
    assert [(r["id"], r["ok"], r["error"]) for r in results] == [
        (n, True, None) for n in range(1, 6)
    ]
    assert h.control.statistics().commands == 5


async def test_a_bad_command_is_answered_and_reaches_nothing() -> None:
    h = Harness("every")
    for line in (b"{", b'{"command": "shout"}', b'{"command": "say"}', b"[]"):
        assert not h.send(line).ok
    assert h.queued() == []
    assert h.muted == [] and h.clears == 0
    assert h.control.statistics().refused == {
        "invalid_json": 2,
        "unknown_command": 1,
        "invalid_field": 1,
    }


async def test_a_command_the_dialect_cannot_say_is_unsupported_and_names_it() -> None:
    h = Harness("attendee")
    for name, fields in (
        ("say", '"text": "hi"'),
        ("user_text", '"text": "hi"'),
        ("context", '"text": "hi"'),
        ("instructions", '"text": "hi"'),
        ("tool_result", '"call_id": "c", "output": 1'),
    ):
        result = h.send(f'{{"command": "{name}", "id": "u", {fields}}}')
        assert code(result) == "unsupported", result
        assert result.error is not None and "attendee" in result.error.message
        assert result.id == "u" and result.command == name
    # What every dialect does is taken.
    assert h.send('{"command": "send", "message": {"trigger": "x"}}').ok
    assert h.queued() == [RawSend('{"trigger":"x"}')]


async def test_a_command_larger_than_the_control_lane_is_too_large() -> None:
    h = Harness("every")
    text = "a" * (MAX_CONTROL_BYTES - 60)
    result = h.send(json.dumps({"command": "say", "text": text}))
    assert code(result) == "too_large"
    assert h.queued() == []


async def test_a_tool_result_answers_a_pending_call_once() -> None:
    h = Harness("every")
    h.control.on_calls(ToolCallIn("c1", "clock", "{}"))
    assert code(h.send('{"command": "tool_result", "call_id": "nope", "output": 1}')) == "stale"
    assert h.send('{"command": "tool_result", "call_id": "c1", "output": {"t": 1}}').ok
    assert code(h.send('{"command": "tool_result", "call_id": "c1", "output": 1}')) == "stale"
    assert h.queued() == [ToolResult("c1", '{"t":1}')]
    names = [e["event"] for e in await h.events()]
    assert names[0] == "tool_call"


async def test_a_call_dies_with_its_session_or_when_cancelled() -> None:
    h = Harness("every")
    h.control.on_calls(ToolCallIn("c1", "clock", "{}"))
    h.control.on_calls(ToolCallIn("c2", "clock", "{}"))
    h.control.on_calls(ToolCallCancelledIn("c1", "cancelled"))
    h.control.on_calls(SessionEnded())
    cancelled = [
        (e["call_id"], e["reason"]) for e in await h.events() if e["event"] == "tool_call_cancelled"
    ]
    assert cancelled == [("c1", "cancelled"), ("c2", "session_ended")]
    assert code(h.send('{"command": "tool_result", "call_id": "c2", "output": 1}')) == "stale"


async def test_the_timer_answers_an_unanswered_call(autojump_clock: trio.testing.MockClock) -> None:
    h = Harness("every", tool_timeout=30)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.control.serve_timer)
        await trio.sleep(1)
        start = trio.current_time()
        h.control.on_calls(ToolCallIn("c1", "clock", "{}"))
        await trio.sleep(10)
        h.control.on_calls(ToolCallIn("c2", "clock", "{}"))
        await trio.sleep(19.9)
        assert h.queued() == []
        await trio.sleep(0.2)
        assert h.queued() == [ToolResult("c1", '{"error":"no result within 30 s"}')]
        assert trio.current_time() - start >= 30
        # Answering c2 in time disarms its deadline.
        assert h.send('{"command": "tool_result", "call_id": "c2", "output": "ok"}').ok
        await trio.sleep(60)
        assert h.queued() == [ToolResult("c2", "ok")]
        nursery.cancel_scope.cancel()
    warnings = [e for e in await h.events() if e["event"] == "warning"]
    assert [w["code"] for w in warnings] == ["tool_timeout"]
    assert h.control.statistics().calls.timed_out == 1


# -- the socket client ----------------------------------------------------------------


def pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return (
        trio.SocketStream(trio.socket.from_stdlib_socket(a)),
        trio.SocketStream(trio.socket.from_stdlib_socket(b)),
    )


async def read_lines(stream: trio.SocketStream, count: int) -> list[Json]:
    buf = b""
    while buf.count(b"\n") < count:
        data = await stream.receive_some(65536)
        assert data, f"closed after {len(buf.splitlines())} lines"
        buf += data
    return [json.loads(line) for line in buf.split(b"\n")[:count]]


async def test_the_client_gets_every_event_and_its_answers() -> None:
    h = Harness("attendee")
    h.log.emit(
        events.Ready(
            audio_in="a",
            audio_out="b",
            url="ws://x",
            bot_id="b",
            sample_rate=16000,
            pid=1,
            version="0",
            contract=1,
        )
    )
    ours, theirs = pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.control.serve_connection, theirs)
            await trio.testing.wait_all_tasks_blocked()
            h.log.emit(events.Connected(url="ws://x", attempt=1))
            await ours.send_all(
                b'{"command": "mute", "id": "m"}\n{"command": "say", "text": "x"}\n'
            )
            got = await read_lines(ours, 4)
            assert [e["event"] for e in got] == [
                "ready",
                "connected",
                "command_result",
                "command_result",
            ]
            assert got[2]["id"] == "m" and got[2]["ok"] is True
            assert got[3]["error"]["code"] == "unsupported"
            # A second client is told it is busy, and closed.
            second, second_theirs = pair()
            nursery.start_soon(h.control.serve_connection, second_theirs)
            (busy,) = await read_lines(second, 1)
            assert busy["event"] == "command_result"
            assert busy["error"]["code"] == "busy" and busy["ok"] is False
            assert await second.receive_some(10) == b""
            # The first client is still served.
            await ours.send_all(b'{"command": "unmute"}')
            await ours.send_eof()
            (unmuted,) = await read_lines(ours, 1)
            assert unmuted["command"] == "unmute" and unmuted["ok"]
            assert await ours.receive_some(10) == b""
    # Its last line, without a newline, was still a command; then it left.
    assert h.muted == [True, False]
    # Once it is gone, another may come.
    third, third_theirs = pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.control.serve_connection, third_theirs)
            (ready,) = await read_lines(third, 1)
            assert ready["event"] == "ready"
            await third.aclose()


async def test_a_client_that_does_not_read_loses_the_oldest_lines_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    h = Harness("attendee")
    ours, theirs = pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.control.serve_connection, theirs)
        await trio.testing.wait_all_tasks_blocked()
        for n in range(5000):
            h.log.emit(events.Transcript(role="user", text=f"line {n} " + "x" * 200))
            if n % 100 == 0:
                await trio.sleep(0.01)
        await trio.sleep(1)
        dropped = h.control.statistics().events_dropped
        assert dropped > 1000
        # The sidecar's memory for the client is bounded: 1000 lines wait at most.
        assert not h.seen.dropped
        # Now it reads: what it gets ends with the newest line, the oldest gone.
        buf = b""
        while b"line 4999 " not in buf:
            with trio.fail_after(5):
                buf += await ours.receive_some(1 << 20)
        lines = [json.loads(line) for line in buf.split(b"\n") if line]
        texts = [e["text"] for e in lines if e["event"] == "transcript"]
        assert len(texts) < 5000 - 1000
        assert texts[-1].startswith("line 4999 ")
        nursery.cancel_scope.cancel()
    warnings = [e for e in await h.events() if e["event"] == "warning"]
    assert [w["code"] for w in warnings] == ["control_events_dropped"]
    assert h.control.statistics().events_dropped == dropped


async def test_stdin_commands_are_read_and_its_end_reported() -> None:
    h = Harness("attendee")
    read_fd, write_fd = os.pipe()
    ended: list[bool] = []
    os.write(write_fd, b'{"command": "mute"}\n{"command": "clear", "id": 9}')
    os.close(write_fd)
    with trio.fail_after(5):
        await h.control.serve_stdin(lambda: ended.append(True), fd=read_fd)
    os.close(read_fd)
    assert ended == [True]
    assert h.muted == [True] and h.clears == 1
    results = [e for e in await h.events() if e["event"] == "command_result"]
    assert [r["id"] for r in results] == [None, 9]


def test_the_registry_is_the_control_s() -> None:
    assert isinstance(Harness().control.calls, ToolCalls)


async def test_only_the_main_connection_s_end_ends_the_tool_calls(tmp_path: Path) -> None:
    config = Config(
        url="ws://127.0.0.1:9/main",
        audio_in=Endpoint(path=tmp_path / "in.sock"),
        audio_out=Endpoint(path=tmp_path / "out.sock"),
        per_participant=True,
        per_participant_url="ws://127.0.0.1:9/participants",
    )
    sidecar = Sidecar(config, events.EventLog(stream=None))
    assert len(sidecar.links) == 2
    sidecar.control.on_calls(ToolCallIn("c1", "clock", "{}"))
    # The participants' connection ends: the main one's call lives on.
    await sidecar._participant_incoming(SessionEnded())
    assert "c1" in sidecar.control.calls
    await sidecar.downlink.on_incoming(SessionEnded())
    assert "c1" not in sidecar.control.calls
