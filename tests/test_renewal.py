"""The routine end of a session, granted only to a session that lived: the
link in-process against the fake Realtime API, on trio's MockClock so a
quarter of an hour passes in a jump."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import trio
import trio.testing
from agent_servers import MAX_DURATION, RealtimeServer
from support import sidecar_args

from sidecar import cli, events, service
from sidecar.dialects.openai_realtime import OpenAIRealtime


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # Runs at real speed (the server is in threads); the test jumps it forward.
    return trio.testing.MockClock(rate=1.0)


def _named(out: io.BytesIO, name: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    return [e for e in lines if e["event"] == name]


def _connects(sidecar: service.Sidecar) -> int:
    stats = sidecar.link.statistics()
    return stats.connects if stats.connected else 0


async def _until(predicate: object, what: str) -> None:
    with trio.fail_after(10):
        while not predicate():  # type: ignore[operator]
            await trio.sleep(0.01)


async def test_a_session_that_lived_is_renewed_at_once_and_only_once(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    min_age = OpenAIRealtime.renew_after_s
    assert min_age is not None
    with RealtimeServer() as server:
        args = sidecar_args(
            server.url,
            tmp_path,
            *("--protocol", "openai-realtime"),
            *("--header", f"Authorization: Bearer {server.config.api_key}"),
            *("--retry-delay", "7", "--ping-interval", "3600", "--ping-timeout", "60"),
            stats_interval=3600,
        )
        config = cli.build_config(cli.parser().parse_args(["run", *args]))
        out = io.BytesIO()
        sidecar = service.Sidecar(config, events.EventLog(out))
        async with trio.open_nursery() as nursery:
            await nursery.start(sidecar.run)
            # The sidecar's side of each upgrade, not only the server's: a jump
            # or a close before the link counts the connection would be judged
            # against the wrong start (a race on a loaded machine).
            await _until(lambda: _connects(sidecar) == 1, "connected")
            clock.jump(min_age + 1)
            server.current.close(1001, MAX_DURATION)
            await _until(lambda: _connects(sidecar) == 2, "renewed")
            # The new session claims its end at once: no renewal for it.
            server.current.close(1001, MAX_DURATION)
            await _until(lambda: len(_named(out, "retrying")) == 2, "retried")
            sidecar.stop("test over")
        await sidecar.events.drain()
    renewed, retried = _named(out, "retrying")
    assert renewed["delay"] == 0 and "routine end" in str(renewed["reason"])
    assert retried["delay"] == 7 and "too soon" in str(retried["reason"])
