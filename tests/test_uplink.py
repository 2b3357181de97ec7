"""The Uplink in-process, on real socketpairs: who gets a stream when a bot
reconnects at once, and what happens to audio that is refused."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any

import trio
import trio.testing
from recording import RecordedLog
from support import tone

from sidecar import events, frames
from sidecar.config import Config, Endpoint
from sidecar.dialects.base import AudioOut
from sidecar.outbox import Outbox
from sidecar.uplink import Route, Uplink

FRAME_SAMPLES = 960  # 20 ms at 48 kHz
FRAME = frames.encode_audio(tone(1000, 0.02), 48000)


def in_process_uplink(**config: Any) -> tuple[Uplink, Outbox, RecordedLog]:
    settings = Config(
        url="ws://127.0.0.1:9/a",
        audio_in=Endpoint(path=Path("in.sock")),
        audio_out=Endpoint(path=Path("out.sock")),
        bot_id="bot_test",
        **config,
    )
    outbox = Outbox(settings.replay_ms, 60_000)
    # Link "up", so nothing is dropped for being disconnected; nobody sends,
    # and the backlog is large enough to hold every test's audio.
    route = Route(outbox, lambda: None)
    log = RecordedLog()
    participants = route if settings.per_participant else None
    return Uplink(settings, route, participants, log), outbox, log


def connection() -> tuple[trio.SocketStream, trio.socket.SocketType]:
    """(the sidecar's end as a stream, the bot's end)."""
    ours, theirs = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return trio.SocketStream(ours), theirs


def refusals(log: RecordedLog) -> list[str]:
    return [e.message for e in log.named(events.InvalidFrame)]


def connected_in(log: RecordedLog) -> int:
    return sum(1 for e in log.named(events.BotConnected) if e.socket == "in")


async def test_a_bot_that_reconnects_at_once_gets_the_mixed_stream_every_time() -> None:
    uplink, _, log = in_process_uplink()
    cycles = 1000
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(cycles):
                stream, bot = connection()
                nursery.start_soon(uplink.serve_connection, stream)
                await bot.send(FRAME)
                # Closed at once: its EOF may not have been read when the next
                # connection's first frame asks for the stream.
                bot.close()
    stats = uplink.statistics()
    assert refusals(log) == []
    assert not stats.refused
    assert connected_in(log) == cycles
    assert stats.samples_in == cycles * FRAME_SAMPLES
    assert stats.streams["mixed"].samples == cycles * FRAME_SAMPLES


async def test_a_departing_connection_finishes_its_audio_before_the_next_takes_over() -> None:
    uplink, _, log = in_process_uplink()
    # What the stream had received when each connection got it.
    heard_before: list[int] = []
    emit = log.emit

    def emit_noting(event: events.Event) -> None:
        if isinstance(event, events.BotConnected):
            heard_before.append(uplink.statistics().streams["mixed"].samples)
        emit(event)

    log.emit = emit_noting  # type: ignore[method-assign]
    first, first_bot = connection()
    second, second_bot = connection()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(uplink.serve_connection, first)
            await first_bot.send(FRAME)
            await trio.testing.wait_all_tasks_blocked()
            # Half a second the first connection has not read yet (a dozen
            # reads away), then it closes, and the second connection speaks at once.
            await first_bot.send(FRAME * 25)
            first_bot.close()
            await second_bot.send(FRAME)
            second_bot.close()
            await uplink.serve_connection(second)
    assert refusals(log) == []
    assert heard_before == [0, 26 * FRAME_SAMPLES]
    assert uplink.statistics().samples_in == 27 * FRAME_SAMPLES
    kinds = [type(e).__name__ for e in log.events]
    assert kinds == ["BotConnected", "BotDisconnected", "BotConnected", "BotDisconnected"]


async def test_a_live_connection_keeps_the_stream_and_refused_audio_is_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    uplink, _, log = in_process_uplink()
    first, first_bot = connection()
    second, second_bot = connection()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(uplink.serve_connection, first)
        await first_bot.send(FRAME)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        # Two frames in one read: both are read, neither is forwarded.
        await second_bot.send(FRAME * 2)
        with trio.fail_after(5):
            await uplink.serve_connection(second)
        # Refused at once: a connection whose bot is still there is no departure.
        assert trio.current_time() == start
        decoder = frames.FrameDecoder()
        decoder.feed(await second_bot.recv(65536))
        (reply,) = decoder
        assert isinstance(reply, frames.ErrorFrame) and reply.code == frames.ErrorCode.BUSY
        second_bot.close()
        first_bot.close()
    stats = uplink.statistics()
    assert stats.refused == {"busy": 1}
    assert stats.refused_samples == {"busy": 2 * FRAME_SAMPLES}
    # Every sample the bot wrote is either in a stream or counted as refused.
    assert stats.samples_in == 3 * FRAME_SAMPLES
    assert stats.streams["mixed"].samples == FRAME_SAMPLES
    assert len(refusals(log)) == 1


async def test_refused_participant_audio_is_counted() -> None:
    uplink, _, log = in_process_uplink()  # per-participant audio off
    stream, bot = connection()
    await bot.send(frames.encode_uuid(uuid.uuid4()) + FRAME * 2)
    with trio.fail_after(5):
        await uplink.serve_connection(stream)
    bot.close()
    stats = uplink.statistics()
    assert stats.refused == {"per_participant_disabled": 1}
    assert stats.refused_samples == {"per_participant_disabled": 2 * FRAME_SAMPLES}
    assert stats.samples_in == 2 * FRAME_SAMPLES
    assert len(refusals(log)) == 1


async def test_a_participant_that_reconnects_at_once_is_accepted_every_time() -> None:
    uplink, _, log = in_process_uplink(per_participant=True, max_participants=1)
    who = uuid.uuid4()
    cycles = 300
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for n in range(cycles):
                stream, bot = connection()
                nursery.start_soon(uplink.serve_connection, stream)
                # Alternate between one participant reconnecting and another
                # taking the only place (--max-participants 1) the moment it frees.
                await bot.send(frames.encode_uuid(who if n % 2 else uuid.uuid4()) + FRAME)
                bot.close()
    assert refusals(log) == []
    assert len(log.named(events.ParticipantJoined)) == cycles
    assert len(log.named(events.ParticipantLeft)) == cycles
    assert uplink.statistics().samples_in == cycles * FRAME_SAMPLES


async def test_the_reader_makes_way_only_for_a_backlog_the_link_takes() -> None:
    uplink, outbox, _ = in_process_uplink()
    chunk = bytes(2 * 16000 * 20 // 1000)  # 20 ms at 16 kHz, the default chunk
    outbox.accepting = True
    assert not uplink.needs_way()
    for i in range(2):
        outbox.put_audio(AudioOut(chunk, 16000, i * 20))
    # Two chunks queued is not yet a backlog (over twice --chunk-ms).
    assert outbox.depth_ms == 40.0
    assert not uplink.needs_way()
    outbox.put_audio(AudioOut(chunk, 16000, 40))
    assert uplink.needs_way()
    with trio.testing.assert_checkpoints():
        await uplink.make_way()
    # A link that is down takes nothing: yielding to it would not help.
    outbox.accepting = False
    assert not uplink.needs_way()
    with trio.testing.assert_no_checkpoints():
        await uplink.make_way()
    outbox.accepting = True
    while outbox.get() is not None:
        pass
    assert outbox.depth_ms == 0.0
    assert not uplink.needs_way()
