"""What the link does with errors nobody planned for: in-process, against a
real websocket server, with the configuration's own checks stepped around
(they are the first line; the link must hold without them)."""

from __future__ import annotations

import dataclasses
import io
import json
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest
import trio
from support import WsServer, sidecar_args, wait_until

from sidecar import cli, events, service
from sidecar.config import Config, dialect_options
from sidecar.dialects.attendee import Attendee, AttendeeSession
from sidecar.dialects.base import (
    AudioOut,
    ClearedOut,
    DtmfOut,
    Encodable,
    Incoming,
    Outgoing,
    Say,
    ToolResult,
    Utf8Text,
    Wire,
)
from sidecar.link import Link, LinkGaveUp, LinkUnusable
from sidecar.memory import MemorySnapshot
from sidecar.outbox import Outbox


def _config(url: str, tmp: Path, *extra: str) -> Config:
    return cli.build_config(cli.parser().parse_args(["run", *sidecar_args(url, tmp, *extra)]))


def _lines(out: io.BytesIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


class _Broken(RuntimeError):
    pass


class _DtmfBugSession(AttendeeSession):
    """A dialect with a bug: its encode raises for one kind of item."""

    def encode(self, item: Encodable) -> Sequence[Wire]:
        if isinstance(item, DtmfOut) or (isinstance(item, AudioOut) and item.timestamp_ms == 13):
            raise _Broken("no encoding for this")
        return super().encode(item)

    def wire_utf8(self, item: Outgoing) -> Sequence[Wire | Utf8Text]:
        # Audio through encode() too, where the bug is (not Attendee's fast path).
        return self.wire(item)


class _DtmfBugDialect(Attendee):
    def session(self, history: MemorySnapshot | None = None) -> AttendeeSession:
        return _DtmfBugSession(self.options.bot_id, self.options.max_message_bytes)


async def _ignore(incoming: Incoming) -> None:
    pass


async def test_an_item_the_dialect_cannot_encode_is_dropped_and_counted(tmp_path: Path) -> None:
    """encode() runs in whichever task called notify(): what it raises must
    not reach that task (the uplink's, the clock's), nor end the connection."""
    with trio.fail_after(20), WsServer() as server:
        config = _config(server.url, tmp_path)
        outbox = Outbox(config.replay_ms, 2000.0)
        out = io.BytesIO()
        log = events.EventLog(out)
        link = Link(config, outbox, _DtmfBugDialect(dialect_options(config)), _ignore, log)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.serve)
            nursery.start_soon(link.serve)
            await wait_until(lambda: link.accepting_audio, 10, "connected")
            outbox.put_control(DtmfOut("5"))
            link.notify()  # raised _Broken here, in the caller's task
            bad = AudioOut(b"\x00\x01" * 320, 16000, 13)
            outbox.put_audio(bad)
            link.notify()
            good = AudioOut(b"\x02\x03" * 320, 16000, 14)
            outbox.put_audio(good)
            link.notify()
            await wait_until(lambda: bool(server.messages()), 10, "audio")
            assert link.statistics().encode_failures == 2
            assert outbox.statistics().dropped_samples == {"unencodable": 320}
            assert link.connected and link.statistics().connects == 1
            await log.drain()
            nursery.cancel_scope.cancel()
    (message,) = server.messages()
    assert message["data"]["timestamp_ms"] == 14
    (warning,) = [e for e in _lines(out) if e["event"] == "warning"]
    assert "cannot encode a DtmfOut" in str(warning["message"])


class _Sends:
    """The connection's socket, every send() it makes recorded on the way through."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sizes: list[int] = []

    def send(self, data: bytes) -> int:
        self.sizes.append(len(data))
        return self._sock.send(data)

    def close(self) -> None:
        self._sock.close()


async def test_an_item_with_nothing_on_the_wire_makes_no_send(tmp_path: Path) -> None:
    """Attendee answers a clear by its marks: the ClearedOut the downlink queues
    makes no message, and must make no zero-byte send() either."""
    with trio.fail_after(20), WsServer() as server:
        config = _config(server.url, tmp_path)
        outbox = Outbox(config.replay_ms, 2000.0)
        log = events.EventLog(io.BytesIO())
        link = Link(config, outbox, Attendee(dialect_options(config)), _ignore, log)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.serve)
            nursery.start_soon(link.serve)
            await wait_until(lambda: link.accepting_audio, 10, "connected")
            conn = link._conn
            assert conn is not None
            spy = _Sends(conn.stream._raw)
            conn.stream._raw = cast(socket.socket, spy)
            outbox.put_control(ClearedOut())
            link.notify()
            outbox.put_audio(AudioOut(b"\x02\x03" * 320, 16000, 14))
            link.notify()
            await wait_until(lambda: bool(server.messages()), 10, "audio")
            assert link.statistics().messages_out == 1
            nursery.cancel_scope.cancel()
    assert len(spy.sizes) == 1 and spy.sizes[0] > 0, spy.sizes


async def test_an_opening_message_that_cannot_be_encoded_is_a_usage_error(
    tmp_path: Path,
) -> None:
    """A call SID that is not UTF-8 (as argv can carry it) makes Twilio's
    `start` unencodable: no connection will ever work, so exit 2, saying why."""
    with trio.fail_after(20), WsServer() as server:
        config = _config(server.url, tmp_path, "--protocol", "twilio")
        config = dataclasses.replace(config, call_sid="CA\udcff")
        out = io.BytesIO()
        sidecar = service.Sidecar(config, events.EventLog(out))
        code = await sidecar.run()
    assert code == service.EXIT_USAGE
    lines = _lines(out)
    (gave_up,) = [e for e in lines if e["event"] == "gave_up"]
    assert "opening message cannot be encoded" in str(gave_up["reason"])
    assert "surrogates not allowed" in str(gave_up["reason"])
    (stopped,) = [e for e in lines if e["event"] == "stopped"]
    assert stopped["exit_code"] == 2
    assert server.handshakes == 1  # not retried
    # The connection was up when the opening failed: it is counted down.
    names = [e["event"] for e in lines if e["event"] in ("connected", "disconnected", "gave_up")]
    assert names == ["connected", "disconnected", "gave_up"]
    (down,) = [e for e in lines if e["event"] == "disconnected"]
    assert "opening message cannot be encoded" in str(down["reason"])
    assert sidecar.link.statistics().connected is False


@pytest.mark.parametrize(
    ("header", "path"),
    [
        (("X-Team", "a\x0bb"), "/audio"),
        (("X-Team", "a\x00b"), "/audio"),
        (("X-Team", "line\r\nX-Injected: 1"), "/audio"),
        (("X(Y", "1"), "/audio"),
        (("X-Team", "blue"), "/au dio"),
        (("X-Team", "blue"), "/aud\u00efo"),
    ],
)
async def test_a_request_http_will_not_send_is_a_usage_error_not_a_crash(
    tmp_path: Path, header: tuple[str, str], path: str
) -> None:
    with trio.fail_after(20), WsServer() as server:
        config = _config(server.url, tmp_path)
        url = server.url.replace("/audio", path)
        config = dataclasses.replace(config, url=url, headers=(header,))
        out = io.BytesIO()
        log = events.EventLog(out)
        link = Link(config, Outbox(0, 2000.0), Attendee(dialect_options(config)), _ignore, log)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.serve)
            with pytest.raises(LinkUnusable, match="the upgrade request cannot be sent"):
                await link.serve()
            await log.drain()
            nursery.cancel_scope.cancel()
    (gave_up,) = [e for e in _lines(out) if e["event"] == "gave_up"]
    assert gave_up["attempts"] == 0
    assert server.handshakes == 0


async def test_a_tool_result_its_session_never_sent_is_named_in_a_warning(
    tmp_path: Path,
) -> None:
    """Accepted for a session that ended before it went: the next session
    does not know the call, so it goes and the bot is told; the rest of the
    control lane waits."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{probe.getsockname()[1]}/audio"  # nothing listens there
    with trio.fail_after(20):
        config = _config(url, tmp_path, "--max-retries", "1", "--retry-delay", "0.1")
        outbox = Outbox(0, 2000.0)
        outbox.put_control(ToolResult("call_7", "15:04"))
        outbox.put_control(Say("Hello"))
        out = io.BytesIO()
        log = events.EventLog(out)
        link = Link(config, outbox, Attendee(dialect_options(config)), _ignore, log)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.serve)
            with pytest.raises(LinkGaveUp):
                await link.serve()
            await log.drain()
            nursery.cancel_scope.cancel()
    (warning,) = [e for e in _lines(out) if e["event"] == "warning"]
    assert warning["code"] == "tool_result_unsent"
    assert "'call_7'" in str(warning["message"])
    assert outbox.statistics().dropped_messages == {"session_ended": 1}
    assert outbox.get() == Say("Hello")
