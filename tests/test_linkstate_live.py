"""The link's states (sidecar/linkstate.py) as a real link walks them, against
a real websocket server: what `connected`, the outbox's limit and the live
connection read from the state at each step. In-process."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
from support import WsServer, sidecar_args, wait_until

from sidecar import cli, events
from sidecar.config import Config, dialect_options
from sidecar.dialects.attendee import Attendee, AttendeeSession
from sidecar.dialects.base import Incoming, Wire
from sidecar.link import Link
from sidecar.linkstate import IllegalTransition, LinkState
from sidecar.memory import MemorySnapshot
from sidecar.outbox import Outbox

GO = '{"test": "go"}'


class _GoAheadSession(AttendeeSession):
    """Takes audio only after the server's go-ahead, as Gemini's setupComplete."""

    def __init__(self, bot_id: str, max_message_bytes: int) -> None:
        super().__init__(bot_id, max_message_bytes)
        self._ready = False

    @property
    def audio_ready(self) -> bool:
        return self._ready

    def receive(self, message: Wire) -> Sequence[Incoming]:
        if message == GO:
            self._ready = True
            return ()
        return super().receive(message)


class _GoAheadDialect(Attendee):
    def session(self, history: MemorySnapshot | None = None) -> AttendeeSession:
        return _GoAheadSession(self.options.bot_id, self.options.max_message_bytes)


def _config(url: str, tmp: Path) -> Config:
    # A fixed, long retry delay: the wait is there to be seen, and a stop ends it.
    args = sidecar_args(url, tmp, "--backoff", "fixed", "--retry-delay", "30")
    return cli.build_config(cli.parser().parse_args(["run", *args]))


def _events(out: io.BytesIO) -> list[str]:
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    return [str(e["event"]) for e in lines if e["event"] != "warning"]


async def _ignore(incoming: Incoming) -> None:
    pass


def _link(url: str, tmp: Path, dialect: type[Attendee]) -> tuple[Link, events.EventLog, io.BytesIO]:
    """A link to `url` speaking `dialect`, its event log, and what the log wrote."""
    config = _config(url, tmp)
    out = io.BytesIO()
    log = events.EventLog(out)
    link = Link(
        config, Outbox(config.replay_ms, 2000.0), dialect(dialect_options(config)), _ignore, log
    )
    return link, log, out


def _facts(link: Link) -> tuple[LinkState, bool, bool, bool, bool]:
    return (
        link.state,
        link.connected,
        link.statistics().connected,
        link.accepting_audio,
        link._conn is not None,
    )


async def test_a_go_ahead_a_drop_a_retry_wait_and_a_stop(tmp_path: Path) -> None:
    with trio.fail_after(20), WsServer() as server:
        link, log, out = _link(server.url, tmp_path, _GoAheadDialect)
        assert _facts(link) == (LinkState.IDLE, False, False, False, False)
        served = trio.Event()

        async def serve() -> None:
            await link.serve()
            served.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.serve)
            nursery.start_soon(serve)
            await wait_until(lambda: link.connected and bool(server.connections), 10, "up")
            # Up, but the session waits for its go-ahead: the replay limit holds.
            assert _facts(link) == (LinkState.OPEN, True, True, False, True)
            server.send(GO)
            await wait_until(lambda: link.accepting_audio, 10, "go-ahead")
            assert _facts(link) == (LinkState.OPEN, True, True, True, True)
            # In a thread: the server's close waits for our answer, which this
            # thread gives.
            await trio.to_thread.run_sync(server.current.ws.close, 4000, "try again later")
            await wait_until(lambda: link.state is LinkState.RETRY_WAIT, 10, "retry wait")
            assert _facts(link) == (LinkState.RETRY_WAIT, False, False, False, False)
            link.stop()
            with trio.fail_after(5):
                await served.wait()
            assert _facts(link) == (LinkState.STOPPED, False, False, False, False)
            await log.drain()
            nursery.cancel_scope.cancel()
    assert _events(out) == ["connected", "disconnected", "retrying"]
    assert server.handshakes == 1


async def test_a_stop_while_open_closes_with_1000_and_ends_stopped(tmp_path: Path) -> None:
    with trio.fail_after(20), WsServer() as server:
        link, log, out = _link(server.url, tmp_path, Attendee)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.serve)
            nursery.start_soon(link.serve)
            await wait_until(lambda: link.accepting_audio and bool(server.connections), 10, "up")
            first = server.current
            link.stop()
            await wait_until(lambda: link.state is LinkState.STOPPED, 10, "stopped")
            assert _facts(link) == (LinkState.STOPPED, False, False, False, False)
            # A link serves once.
            with pytest.raises(IllegalTransition, match="STOPPED cannot move to STOPPED"):
                await link.serve()
            await log.drain()
            nursery.cancel_scope.cancel()
    assert first.close_code == 1000
    assert _events(out) == ["connected", "disconnected"]
