"""Silence fill: the decision (sidecar/fill.py), the silence itself
(CaptureStream.fill) and the uplink's timer, on trio's MockClock."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from recording import RecordedLog
from support import tone

from sidecar import frames
from sidecar.capture import CaptureStream
from sidecar.chunker import Chunk
from sidecar.config import Config, Endpoint
from sidecar.dialects.base import AudioOut
from sidecar.fill import Filler
from sidecar.outbox import Outbox
from sidecar.uplink import Route, Uplink

CHUNK_MS = 20
IN_RATE = 48000
OUT_RATE = 16000
FRAME = tone(440, 0.02, IN_RATE)  # 960 samples


# -- the decision --------------------------------------------------------------------


def test_nothing_is_due_before_the_first_frame_nor_within_the_hold() -> None:
    filler = Filler(100, CHUNK_MS)
    assert filler.deadline(0.0, 20.0) is None
    assert filler.due(10_000.0, 0.0, 20.0) == 0
    filler.heard(1000.0)
    assert filler.deadline(1000.0, 20.0) == 1100.0
    assert filler.due(1099.9, 1000.0, 20.0) == 0
    assert not filler.filling


def test_after_the_hold_the_time_already_passed_is_filled_then_one_chunk_per_period() -> None:
    filler = Filler(100, CHUNK_MS)
    filler.heard(1000.0)
    # At the hold: the chunks from where the bot's audio ended up to now.
    assert filler.due(1100.0, 1000.0, 20.0) == 5
    assert filler.filling
    assert filler.deadline(1100.0, 20.0) == 1120.0
    assert filler.due(1119.0, 1100.0, 20.0) == 0
    assert filler.due(1120.0, 1100.0, 20.0) == 1
    # A bot that stopped mid-chunk: the chunk being gathered is completed first.
    filler.heard(2000.0)
    assert filler.due(2100.0, 2000.0, 8.0) == 5
    assert filler.statistics().fills == 2


def test_a_bot_frame_ends_the_fill_at_once() -> None:
    filler = Filler(100, CHUNK_MS)
    filler.heard(1000.0)
    assert filler.due(1100.0, 1000.0, 20.0) == 5
    filler.heard(1110.0)
    assert not filler.filling
    assert filler.due(1130.0, 1120.0, 20.0) == 0
    assert filler.deadline(1120.0, 20.0) == 1220.0


def test_a_bot_writing_ahead_of_real_time_is_not_filled_over() -> None:
    filler = Filler(100, CHUNK_MS)
    filler.heard(1000.0)
    # Its audio reaches 3 s past its arrival: the line is covered until then.
    assert filler.deadline(4000.0, 20.0) == 4100.0
    assert filler.due(4050.0, 4000.0, 20.0) == 0


def test_mute_wins_over_fill() -> None:
    filler = Filler(100, CHUNK_MS)
    filler.heard(1000.0)
    filler.mute(True)
    assert filler.deadline(1000.0, 20.0) is None
    assert filler.due(5000.0, 1000.0, 20.0) == 0
    filler.mute(False)
    assert filler.due(5000.0, 1000.0, 20.0) > 0


def test_a_long_stall_is_not_made_up_in_one_burst() -> None:
    filler = Filler(100, CHUNK_MS)
    filler.heard(1000.0)
    assert filler.due(60_000.0, 1000.0, 20.0) == 5 + 3


def test_a_stopped_stream_is_not_filled() -> None:
    filler = Filler(100, CHUNK_MS)
    filler.heard(1000.0)
    filler.stop()
    assert filler.due(5000.0, 1000.0, 20.0) == 0


@pytest.mark.parametrize(("hold", "chunk"), [(0, 20), (100, 0)])
def test_a_filler_needs_positive_times(hold: int, chunk: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        Filler(hold, chunk)


# -- the silence: the bot's own path -------------------------------------------------


def assert_continuous(chunks: list[Chunk], rate: int) -> None:
    """Each chunk starts where the one before ended (timestamps are floored)."""
    start = chunks[0].timestamp_ms
    done = 0
    for chunk in chunks:
        assert chunk.timestamp_ms == int(start + done * 1000 / rate), chunks.index(chunk)
        done += chunk.samples


@pytest.mark.parametrize("in_rate", [48000, 44100, 16000, 8000])
def test_fill_continues_the_stream_clock_and_counts_exactly(in_rate: int) -> None:
    capture = CaptureStream(OUT_RATE, CHUNK_MS)
    frame = frames.Audio(in_rate, tone(300, 0.02, in_rate))
    # A bot that writes 10 ms frames stops mid-chunk.
    half = frames.Audio(in_rate, frame.pcm[: len(frame.pcm) // 2])
    t = 1_000_000.0
    chunks: list[Chunk] = []
    for _ in range(25):
        t += 10
        chunks += capture.push(half, t)
    end = capture.input_end_ms
    assert end is not None and capture.to_boundary_ms == pytest.approx(10.0)
    t += 100
    chunks += capture.fill(6, t)
    for _ in range(40):
        t += 20
        chunks += capture.fill(1, t)
    for _ in range(10):
        t += 20
        chunks += capture.push(frame, t)
    chunks += capture.flush()
    assert_continuous(chunks, OUT_RATE)
    bot = (25 * half.samples + 10 * frame.samples) * OUT_RATE // in_rate
    # The mid-chunk rest (10 ms), 5 + 40 whole chunks.
    assert capture.samples_filled == (10 + 45 * CHUNK_MS) * OUT_RATE // 1000
    assert capture.samples_out == bot + capture.samples_filled
    assert capture.samples_in == 25 * half.samples + 10 * frame.samples
    # The fill is silent; the bot's audio, before and after, is not.
    out = b"".join(c.pcm for c in chunks)
    gap = out[2 * (bot // 2 + 2000) : 2 * (bot // 2 + 10000)]
    assert gap == bytes(len(gap))


@pytest.mark.parametrize("bot_frames", [50, 51, 54, 57])
@pytest.mark.parametrize(("chunk_ms", "hold_ms"), [(20, 100), (200, 500), (250, 1000)])
def test_long_chunks_are_filled_without_a_jump_in_the_clock(
    chunk_ms: int, hold_ms: int, bot_frames: int
) -> None:
    """With --chunk-ms over the chunker's gap rule (100 ms), silence placed
    by the time of the fill would start up to a chunk after the input ends,
    and the clock would jump: it continues the input exactly instead. The
    bot stops anywhere in a chunk; the timer wakes at its deadlines."""
    capture = CaptureStream(OUT_RATE, chunk_ms)
    filler = Filler(hold_ms, chunk_ms)
    frame = frames.Audio(IN_RATE, FRAME)
    t = 1_000_000.0
    chunks: list[Chunk] = []
    for _ in range(bot_frames):
        t += 20
        filler.heard(t)
        chunks += capture.push(frame, t)
    for _ in range(40):
        end = capture.input_end_ms
        assert end is not None
        deadline = filler.deadline(end, capture.to_boundary_ms)
        assert deadline is not None
        t = max(t, deadline)
        chunks += capture.fill(filler.due(t, end, capture.to_boundary_ms), t)
    assert capture.samples_filled > 0
    assert_continuous(chunks, OUT_RATE)


def test_nothing_is_filled_before_the_first_frame() -> None:
    capture = CaptureStream(OUT_RATE, CHUNK_MS)
    assert capture.fill(5, 1000.0) == []
    assert capture.samples_filled == 0


# -- the timer: in the uplink, on the mock clock --------------------------------------


@dataclass
class Wire:
    """What the route carried, with the trio time each item left."""

    outbox: Outbox
    sent: list[tuple[float, AudioOut]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.outbox.accepting = True

    def notify(self) -> None:
        while (item := self.outbox.get()) is not None:
            assert isinstance(item, AudioOut)
            self.sent.append((trio.current_time(), item))


def uplink_on_mock_clock(**config: Any) -> tuple[Uplink, Wire]:
    settings = Config(
        url="ws://127.0.0.1:9/a",
        audio_in=Endpoint(path=Path("in.sock")),
        audio_out=Endpoint(path=Path("out.sock")),
        bot_id="bot_test",
        sample_rate=OUT_RATE,
        **config,
    )
    wire = Wire(Outbox(settings.replay_ms, 60_000))
    route = Route(wire.outbox, wire.notify)
    participants = route if settings.per_participant else None
    uplink = Uplink(
        settings, route, participants, RecordedLog(), clock_ms=lambda: trio.current_time() * 1000
    )
    return uplink, wire


async def speak(bot: trio.abc.SendStream, seconds: float, pcm: bytes = FRAME) -> None:
    for _ in range(round(seconds / 0.02)):
        await trio.sleep(0.02)
        await bot.send_all(frames.encode_audio(pcm, IN_RATE))


def samples(wire: Wire) -> int:
    return sum(item.samples for _, item in wire.sent)


async def test_a_quiet_bot_gets_silence_on_the_grid_and_its_next_frame_goes_out_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    uplink, wire = uplink_on_mock_clock()
    ours, bot = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(uplink.serve_fill)
        nursery.start_soon(uplink.serve_connection, ours)
        await speak(bot, 1.0)
        await trio.testing.wait_all_tasks_blocked()
        spoken = len(wire.sent)
        await trio.sleep(2.0)
        filled = wire.sent[spoken:]
        resumed_at = trio.current_time()
        await speak(bot, 1.0)
        await bot.aclose()
        await trio.sleep(0.5)
        uplink.flush()
        nursery.cancel_scope.cancel()
    # Silence covers the gap, in whole chunks, from where the bot stopped.
    assert all(not any(item.pcm) for _, item in filled[1:])
    gap_ms = sum(item.ms for _, item in filled)
    assert 1980 <= gap_ms <= 2020 + CHUNK_MS
    # Paced: after the hold's catch-up, one chunk per period, never ahead of time.
    times = [at for at, _ in filled]
    assert times[0] - (resumed_at - 2.0) == pytest.approx(0.1, abs=0.021)
    assert all(b - a == pytest.approx(0.02, abs=1e-6) for a, b in itertools.pairwise(times[6:]))
    # The bot's first frame back leaves as it arrives, not behind silence.
    back = next(at for at, item in wire.sent[spoken:] if any(item.pcm) and at > resumed_at)
    assert back == pytest.approx(resumed_at + 0.02, abs=1e-6)
    # One clock, as if the line had never paused.
    stamps = [item.timestamp_ms for _, item in wire.sent]
    ends = [item.timestamp_ms + item.ms for _, item in wire.sent]
    assert all(abs(b - e) <= 1 for e, b in zip(ends, stamps[1:], strict=False))
    stats = uplink.statistics()
    assert samples(wire) == stats.samples_in // 3 + stats.samples_filled


async def test_no_wakeups_while_the_bot_writes_continuously(
    autojump_clock: trio.testing.MockClock,
) -> None:
    uplink, _ = uplink_on_mock_clock()
    looks = 0
    fill_now = uplink._fill_now

    def counted() -> None:
        nonlocal looks
        looks += 1
        fill_now()

    uplink._fill_now = counted  # type: ignore[method-assign]
    ours, bot = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(uplink.serve_fill)
        nursery.start_soon(uplink.serve_connection, ours)
        await speak(bot, 3.0)
        assert looks == 0
        await trio.sleep(1.0)
        # In the gap: one look at the hold, then one per chunk.
        assert 45 <= looks <= 47
        nursery.cancel_scope.cancel()
    assert uplink.statistics().samples_filled > 0


@pytest.mark.parametrize("option", ["mute", "fill_off", "link_down"])
async def test_no_fill_when_muted_off_or_disconnected(
    autojump_clock: trio.testing.MockClock, option: str
) -> None:
    uplink, wire = uplink_on_mock_clock(fill_silence=option != "fill_off")
    ours, bot = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(uplink.serve_fill)
        nursery.start_soon(uplink.serve_connection, ours)
        await speak(bot, 0.5)
        if option == "mute":
            uplink.mute(True)
        wire.outbox.accepting = option != "link_down"
        sent = len(wire.sent)
        await trio.sleep(2.0)
        assert uplink.statistics().samples_filled == 0
        assert all(any(item.pcm) for _, item in wire.sent[sent:])
        if option == "mute":
            # Unmuted, the line's clock comes back; nothing of the mute is made up.
            uplink.mute(False)
            await trio.sleep(1.0)
            filled = uplink.statistics().samples_filled
            assert 0 < filled <= (1.0 + 0.2) * OUT_RATE
        nursery.cancel_scope.cancel()


async def test_a_stream_the_bot_ended_is_not_filled_until_it_writes_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    uplink, _ = uplink_on_mock_clock()
    ours, bot = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(uplink.serve_fill)
        nursery.start_soon(uplink.serve_connection, ours)
        await speak(bot, 0.5)
        await bot.send_all(frames.encode_terminate())
        await trio.sleep(2.0)
        assert uplink.statistics().samples_filled == 0
        # A bot that comes back and writes: the line keeps its clock again.
        ours, bot = trio.testing.memory_stream_pair()
        nursery.start_soon(uplink.serve_connection, ours)
        await speak(bot, 0.2)
        await trio.sleep(1.0)
        assert 0 < uplink.statistics().samples_filled <= (1.0 + 0.2) * OUT_RATE
        nursery.cancel_scope.cancel()


async def test_a_participant_stream_is_not_filled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    uplink, wire = uplink_on_mock_clock(per_participant=True)
    ours, bot = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(uplink.serve_fill)
        nursery.start_soon(uplink.serve_connection, ours)
        await bot.send_all(frames.encode_uuid(uuid.uuid4()))
        await speak(bot, 0.5)
        await trio.sleep(2.0)
        nursery.cancel_scope.cancel()
    assert uplink.statistics().samples_filled == 0
    assert all(item.stream != "mixed" for _, item in wire.sent)
