"""The link moves to a new session when the server says its session is
expiring (a neutral `SessionExpiring`, as Gemini's goAway will be): at the
first quiet moment, or at the time given when none comes. In-process, against
a real websocket server."""

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
from sidecar.dialects.base import Incoming, SessionExpiring, Wire
from sidecar.link import Link
from sidecar.memory import MemorySnapshot
from sidecar.outbox import Outbox

EXPIRING = '{"test": "expiring"}'


class _ExpiringSession(AttendeeSession):
    def receive(self, message: Wire) -> Sequence[Incoming]:
        if message == EXPIRING:
            return (SessionExpiring(within_s=1.5),)
        return super().receive(message)


class _ExpiringDialect(Attendee):
    def session(self, history: MemorySnapshot | None = None) -> AttendeeSession:
        return _ExpiringSession(self.options.bot_id, self.options.max_message_bytes)


def _config(url: str, tmp: Path) -> Config:
    return cli.build_config(cli.parser().parse_args(["run", *sidecar_args(url, tmp)]))


def _lines(out: io.BytesIO, name: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    return [e for e in lines if e["event"] == name]


async def _ignore(incoming: Incoming) -> None:
    pass


@pytest.mark.parametrize("quiet", [True, False])
async def test_an_expiring_session_is_rotated_quiet_or_at_its_time(
    tmp_path: Path, quiet: bool
) -> None:
    with trio.fail_after(20), WsServer() as server:
        config = _config(server.url, tmp_path)
        out = io.BytesIO()
        log = events.EventLog(out)
        dialect = _ExpiringDialect(dialect_options(config))
        link = Link(config, Outbox(2000, 2000.0), dialect, _ignore, log, quiet=lambda: quiet)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.serve)
            nursery.start_soon(link.serve)
            await wait_until(lambda: link.connected and bool(server.connections), 10, "connected")
            first = server.current
            told = trio.current_time()
            server.send(EXPIRING)
            await wait_until(lambda: server.handshakes == 2 and link.connected, 10, "rotated")
            took = trio.current_time() - told
            await log.drain()
            nursery.cancel_scope.cancel()
    assert first.close_code == 1000
    (rotated,) = _lines(out, "session_rotated")
    assert rotated["reason"] == "expiring"
    assert not _lines(out, "retrying")  # at once, not a failure
    # Quiet: at once. Never quiet: at the time the server gave, not later.
    assert took < 1.2 if quiet else 1.4 <= took < 3.0
