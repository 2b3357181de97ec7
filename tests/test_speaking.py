"""agent_speaking: the bounds of an utterance as the bot hears them.

The playout (sans-I/O) says which frame starts an utterance and on which tick
its end became known; the voice keeps them through the resampler; the
downlink turns them into events as frames are written to a real socket.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from recording import RecordedLog
from support import tone

from sidecar import events, frames
from sidecar.config import Config, Endpoint
from sidecar.dialects.base import ClearedOut, ClearPlayout, Control, MarkIn, PlayAudio
from sidecar.downlink import MAX_SEGMENT_STARTS, Downlink
from sidecar.playout import Playout, Tick
from sidecar.voice import Voice

# --- the playout ------------------------------------------------------------------------------

# 8 kHz keeps the numbers small: 16 bytes per ms, 320 bytes per 20 ms frame.
RATE = 8000
BPMS = RATE * 2 // 1000
RESUME_MS = 100
RESUME_TICKS = RESUME_MS // 20
# The end of speech is known this many ticks after its last frame: the tick
# at which a dry spell right after it would have run out.
END_AFTER = RESUME_TICKS + 2


def ms(n: int) -> bytes:
    return b"\x01" * (n * BPMS)


def make(jitter_ms: int = 0) -> Playout:
    return Playout(rate=RATE, frame_ms=20, jitter_ms=jitter_ms, resume_ms=RESUME_MS)


def bounds(ticks: list[Tick]) -> list[tuple[str, int]]:
    """("start", i) and ("end", i) at the tick indices where they happened."""
    out: list[tuple[str, int]] = []
    for i, tick in enumerate(ticks):
        if tick.starts:
            out.append(("start", i))
        if tick.ended:
            out.append(("end", i))
    return out


def run(p: Playout, n: int) -> list[Tick]:
    return [p.tick() for _ in range(n)]


def speaking(p: Playout) -> bool:
    """Read afresh (mypy would keep what an earlier assert narrowed it to)."""
    return p.speaking


def last_frame(ticks: list[Tick]) -> int:
    return max(i for i, t in enumerate(ticks) if t.frame is not None)


def test_an_utterance_starts_with_its_first_frame_and_ends_after_the_resume_window() -> None:
    p = make(jitter_ms=40)
    p.push(ms(100))
    ticks = run(p, 30)
    first = next(i for i, t in enumerate(ticks) if t.frame is not None)
    assert first == 0  # 100 ms is past the jitter buffer: playing at once
    assert last_frame(ticks) == 4
    assert bounds(ticks) == [("start", 0), ("end", 4 + END_AFTER)]
    assert ticks[4 + END_AFTER].frame is None
    assert not p.speaking


def test_the_end_comes_when_the_dry_spell_would_run_out() -> None:
    # Both say "that was the end" on the same tick: one window, one rule.
    p = make()
    p.push(ms(40))
    ticks = run(p, 20)
    dry_until = None
    q = make()
    q.push(ms(40))
    for i in range(20):
        q.tick()
        if i > 2 and not q.dry and dry_until is None:
            dry_until = i
    assert bounds(ticks)[-1] == ("end", dry_until)


@pytest.mark.parametrize(("wait", "new_utterance"), [(END_AFTER - 1, False), (END_AFTER, True)])
def test_an_underrun_inside_speech_does_not_split_it(wait: int, new_utterance: bool) -> None:
    p = make()
    p.push(ms(40))
    ticks = run(p, 2)
    ticks += run(p, wait)  # a late server: the buffer runs dry
    assert ticks[2].underrun
    p.push(ms(40))
    ticks += run(p, 2 + END_AFTER + 3)
    expected = [("start", 0)]
    if new_utterance:
        expected += [("end", 1 + END_AFTER), ("start", 2 + wait)]
    expected.append(("end", 3 + wait + END_AFTER))
    assert bounds(ticks) == expected
    assert p.statistics().underruns == (0 if new_utterance else 1)


def test_a_padded_tail_does_not_end_speech_if_audio_follows_in_the_window() -> None:
    p = make()
    p.push(ms(30))
    ticks = run(p, 3)
    assert ticks[2].padding  # the tail: padded, the playout idle again
    assert not p.playing and p.speaking
    ticks += run(p, 3)
    p.push(ms(40))
    ticks += run(p, 30)
    assert [i for i, t in enumerate(ticks) if t.frame is not None] == [0, 2, 6, 7]
    assert bounds(ticks) == [("start", 0), ("end", 7 + END_AFTER)]


def test_a_padded_tail_then_quiet_is_the_end() -> None:
    p = make()
    p.push(ms(30))
    ticks = run(p, 20)
    assert ticks[2].padding
    assert bounds(ticks) == [("start", 0), ("end", 2 + END_AFTER)]


def test_a_mark_at_the_end_of_the_audio_ends_the_playing_not_the_speech() -> None:
    # A server that marks every piece (the bridge samples) at real time: the
    # playout goes idle after each, and the agent is still speaking throughout.
    p = make(jitter_ms=40)
    ticks: list[Tick] = []
    for _ in range(4):
        p.push(ms(20))
        assert p.mark("piece") == ()
        ticks += run(p, 1)
        assert not p.playing and p.speaking
    ticks += run(p, 20)
    assert [i for i, t in enumerate(ticks) if t.frame is not None] == [0, 1, 2, 3]
    assert all(len(t.marks) == 1 for t in ticks[:4])
    assert bounds(ticks) == [("start", 0), ("end", 3 + END_AFTER)]


def test_a_mark_arriving_after_everything_was_handed_out_leaves_the_end_to_the_quiet() -> None:
    p = make()
    p.push(ms(40))
    ticks = run(p, 3)
    assert ticks[2].underrun
    assert [m.played for m in p.mark("late")] == [True]
    assert p.speaking
    ticks += run(p, 20)
    assert bounds(ticks) == [("start", 0), ("end", 1 + END_AFTER)]


def test_clear_ends_speech_without_an_ended_tick() -> None:
    p = make()
    p.push(ms(200))
    ticks = run(p, 3)
    assert p.speaking
    p.clear()
    assert not speaking(p)
    ticks += run(p, 20)
    assert bounds(ticks) == [("start", 0)]
    p.push(ms(40))
    after = run(p, 20)
    assert bounds(after)[0] == ("start", 0)


def test_a_server_five_times_faster_than_real_time_is_one_utterance() -> None:
    p = make(jitter_ms=40)
    ticks: list[Tick] = []
    for _ in range(10):  # 100 ms of 20 ms pieces per 20 ms tick: 5x real time
        for _ in range(5):
            p.push(ms(20))
        ticks += run(p, 1)
    ticks += run(p, 60)
    assert sum(t.frame is not None for t in ticks) == 50
    assert bounds(ticks) == [("start", 0), ("end", 49 + END_AFTER)]


_op = st.one_of(
    st.tuples(st.just("push"), st.integers(1, 60)),
    st.tuples(st.just("mark"), st.just(0)),
    st.tuples(st.just("clear"), st.just(0)),
    st.tuples(st.just("tick"), st.integers(1, 12)),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(ops=st.lists(_op, max_size=40), jitter_ms=st.sampled_from([0, 40]))
def test_starts_and_ends_alternate_and_every_frame_is_inside_speech(
    ops: list[tuple[str, int]], jitter_ms: int
) -> None:
    p = make(jitter_ms)
    open_ = False

    def tick() -> None:
        nonlocal open_
        t = p.tick()
        assert not (t.starts and t.ended)
        if t.starts:
            assert t.frame is not None and not open_
            open_ = True
        elif t.frame is not None:
            assert open_
        if t.ended:
            assert t.frame is None and open_
            open_ = False
        assert p.speaking == open_

    for op, n in ops:
        if op == "push":
            p.push(ms(n))
        elif op == "mark":
            p.mark("m")
        elif op == "clear":
            p.clear()
            open_ = False
        else:
            for _ in range(n):
                tick()
    for _ in range(3000 // 20 + END_AFTER + 5):
        tick()
    assert not open_


# --- the voice: through the resampler ---------------------------------------------------------

OUT = 48000


def idle(voice: Voice) -> bool:
    return voice.idle


def voice_bounds(voice: Voice, n: int) -> list[tuple[str, int]]:
    return bounds([voice.tick() for _ in range(n)])


@pytest.mark.parametrize(
    ("piece_ms", "late_at", "late_ticks", "inside"),
    [(20, 10, 3, "underrun"), (30, 5, 5, "padding")],
)
def test_a_late_resampled_server_is_one_utterance(
    piece_ms: int, late_at: int, late_ticks: int, inside: str
) -> None:
    # 16 kHz pieces, one per tick, then a server late by a few ticks: the
    # playout runs dry (20 ms pieces), or the voice flushes the resampler's
    # tail into a padded frame and the playout goes idle (30 ms pieces). The
    # audio that follows within the window is the same utterance either way.
    voice = Voice(OUT)
    pcm = tone(440, 0.4, 16000)
    piece = 16000 * piece_ms // 1000 * 2
    ticks: list[Tick] = []
    for n, i in enumerate(range(0, len(pcm), piece)):
        if n == late_at:
            ticks += [voice.tick() for _ in range(late_ticks)]
        voice.audio(pcm[i : i + piece], 16000)
        ticks.append(voice.tick())
    mid = ticks[: last_frame(ticks)]
    if inside == "underrun":
        assert any(t.underrun for t in mid)
    else:
        assert any(t.padding for t in mid) and not any(t.underrun for t in mid)
    assert not idle(voice)
    while not voice.idle:
        ticks.append(voice.tick())
    assert [kind for kind, _ in bounds(ticks)] == ["start", "end"]
    assert bounds(ticks)[-1][1] == len(ticks) - 1  # idle only once the end is known


def test_a_pause_longer_than_the_window_makes_two_utterances() -> None:
    voice = Voice(OUT)
    voice.audio(tone(440, 0.1, 24000), 24000)
    first = voice_bounds(voice, 40)
    voice.audio(tone(440, 0.1, 24000), 24000)
    second = voice_bounds(voice, 40)
    assert [k for k, _ in first] == ["start", "end"]
    assert [k for k, _ in second] == ["start", "end"]
    assert voice.idle


def test_voice_clear_ends_speech() -> None:
    voice = Voice(OUT)
    voice.audio(tone(440, 1.0, 16000), 16000)
    assert [k for k, _ in voice_bounds(voice, 5)] == ["start"]
    voice.clear()
    assert not voice.playout.speaking and voice.idle


# --- the downlink: events as frames are written to a real socket ------------------------------

FRAME_BYTES = OUT * 20 // 1000 * 2
WIRE_FRAME = FRAME_BYTES + 3


class WrittenLog(RecordedLog):
    """Each agent_speaking with the number of frames written when it was emitted."""

    downlink: Downlink | None = None

    def __init__(self) -> None:
        super().__init__()
        self.speaking: list[tuple[bool, str | None, str, int]] = []

    def emit(self, event: events.Event) -> None:
        super().emit(event)
        if isinstance(event, events.AgentSpeaking):
            assert self.downlink is not None
            written = self.downlink.statistics().frames_written
            self.speaking.append((event.speaking, event.segment, event.cause, written))


def make_downlink() -> tuple[Downlink, WrittenLog, list[Control]]:
    config = Config(
        url="ws://127.0.0.1:9/a",
        audio_in=Endpoint(path=Path("in.sock")),
        audio_out=Endpoint(path=Path("out.sock")),
        bot_id="bot_test",
    )
    log = WrittenLog()
    replies: list[Control] = []
    downlink = Downlink(config, log, replies.append)
    log.downlink = downlink
    return downlink, log, replies


class Bot:
    """The bot's end of audio-out: a real socket pair, read when the test says."""

    def __init__(self) -> None:
        ours, self.sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        self.decoder = frames.FrameDecoder()
        self.frames = 0

    async def read(self, budget: int = 1 << 20) -> None:
        """What is there now, up to `budget` bytes."""
        while budget > 0:
            try:
                data = self.sock.recv(min(65536, budget))
            except BlockingIOError:
                return
            budget -= len(data)
            self.decoder.feed(data)
            self.frames += sum(isinstance(f, frames.Audio) for f in self.decoder)
            await trio.lowlevel.checkpoint()

    async def keep_reading(self) -> None:
        while True:
            await trio.sleep(0.005)
            await self.read()


async def test_true_with_the_first_written_frame_false_after_the_last(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downlink, log, _ = make_downlink()
    bot = Bot()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(downlink.serve_clock)
        nursery.start_soon(downlink.serve_connection, bot.stream)
        nursery.start_soon(bot.keep_reading)
        await trio.sleep(0.1)
        # 0.3 s at 5x real time, then another after a long pause.
        for _ in range(3):
            await downlink.on_incoming(PlayAudio(tone(440, 0.1, 24000), 24000))
            await trio.sleep(0.02)
        await trio.sleep(1)
        await downlink.on_incoming(PlayAudio(tone(440, 0.1, 24000), 24000))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert bot.frames == 20 == downlink.statistics().frames_written
    # The first true as frame 1 is written (none written before it), the
    # false after the 15th; every frame in between reached the bot.
    assert log.speaking == [
        (True, None, "started", 0),
        (False, None, "finished", 15),
        (True, None, "started", 15),
        (False, None, "finished", 20),
    ]


async def test_the_end_waits_for_a_slow_bot_to_take_the_last_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downlink, log, _ = make_downlink()
    bot = Bot()
    # A small send buffer: a bot that does not read fills it in a few frames.
    bot.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * WIRE_FRAME)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(downlink.serve_clock)
        nursery.start_soon(downlink.serve_connection, bot.stream)
        await trio.sleep(0.1)
        await downlink.on_incoming(PlayAudio(tone(440, 0.16, 48000), 48000))
        await trio.sleep(1)  # the utterance is over for the playout
        assert downlink.statistics().dropped_frames["bot_not_reading"] == 0
        assert [s[:3] for s in log.speaking] == [(True, None, "started")]
        assert downlink.statistics().frames_written < 8
        while bot.frames < 8:
            await bot.read(WIRE_FRAME)
            await trio.sleep(0.001)
        await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert log.speaking == [(True, None, "started", 0), (False, None, "finished", 8)]


async def test_no_bot_means_no_events_and_a_bot_arriving_mid_utterance_is_told(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downlink, log, _ = make_downlink()
    bot = Bot()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(downlink.serve_clock)
        await downlink.on_incoming(PlayAudio(tone(440, 0.2, 48000), 48000))
        await trio.sleep(1)
        assert downlink.statistics().dropped_frames["no_bot"] == 10
        assert log.speaking == []  # nobody heard it: nothing to announce
        await downlink.on_incoming(PlayAudio(tone(440, 0.4, 48000), 48000))
        await trio.sleep(0.1)
        nursery.start_soon(downlink.serve_connection, bot.stream)
        nursery.start_soon(bot.keep_reading)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    dropped = downlink.statistics().dropped_frames["no_bot"] - 10
    assert 0 < dropped < 20
    assert bot.frames == 20 - dropped
    assert log.speaking == [(True, None, "started", 0), (False, None, "finished", 20 - dropped)]


async def test_a_bot_that_leaves_mid_utterance_still_gets_its_false(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downlink, log, _ = make_downlink()
    bot = Bot()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(downlink.serve_clock)
        nursery.start_soon(downlink.serve_connection, bot.stream)
        await trio.sleep(0.1)
        await downlink.on_incoming(PlayAudio(tone(440, 1.0, 48000), 48000))
        await trio.sleep(0.2)
        await bot.read()
        bot.sock.close()
        await trio.sleep(0.1)
        assert [s[0] for s in log.speaking] == [True]
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert [s[:3] for s in log.speaking] == [(True, None, "started"), (False, None, "finished")]


@pytest.mark.parametrize("by_bot", [False, True])
async def test_a_clear_ends_speech_with_cause_cleared(
    autojump_clock: trio.testing.MockClock, by_bot: bool
) -> None:
    downlink, log, replies = make_downlink()
    bot = Bot()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(downlink.serve_clock)
        nursery.start_soon(downlink.serve_connection, bot.stream)
        nursery.start_soon(bot.keep_reading)
        await trio.sleep(0.1)
        await downlink.on_incoming(PlayAudio(tone(440, 1.0, 24000), 24000, "item_1:0"))
        await trio.sleep(0.3)
        if by_bot:
            downlink.clear(by_bot=True)
        else:
            await downlink.on_incoming(ClearPlayout())
        written = downlink.statistics().frames_written
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert 0 < written < 50
    assert log.speaking == [
        (True, "item_1:0", "started", 0),
        (False, "item_1:0", "cleared", written),
    ]
    assert next(r for r in replies if isinstance(r, ClearedOut)).by_bot is by_bot
    assert bot.frames == written


async def test_a_clear_while_a_frame_is_being_written_ends_speech_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downlink, log, _ = make_downlink()
    ours, theirs = trio.testing.lockstep_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(downlink.serve_clock)
        nursery.start_soon(downlink.serve_connection, ours)
        await trio.sleep(0.1)
        await downlink.on_incoming(PlayAudio(tone(440, 1.0, 48000), 48000))
        await trio.sleep(0.1)  # the writer is stuck on the first frame: nobody reads
        assert log.speaking == []
        downlink.clear(by_bot=True)
        assert log.speaking == []  # the bot will still get that frame
        got = 0
        while got < WIRE_FRAME:
            got += len(await theirs.receive_some(65536))
        await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert log.speaking == [(True, None, "started", 0), (False, None, "cleared", 1)]


async def test_segment_is_the_one_the_utterance_began_with(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downlink, log, _ = make_downlink()
    bot = Bot()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(downlink.serve_clock)
        nursery.start_soon(downlink.serve_connection, bot.stream)
        nursery.start_soon(bot.keep_reading)
        await trio.sleep(0.1)
        # Two replies back to back, faster than real time: one utterance, the
        # first reply's; the third after a pause is an utterance of its own.
        await downlink.on_incoming(PlayAudio(tone(440, 0.2, 24000), 24000, "item_1:0"))
        await downlink.on_incoming(PlayAudio(tone(440, 0.2, 24000), 24000, "item_2:0"))
        await trio.sleep(0.2)  # item_2 is reached mid-utterance
        await trio.sleep(1)
        await downlink.on_incoming(PlayAudio(tone(440, 0.1, 24000), 24000, "item_3:0"))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert [s[:3] for s in log.speaking] == [
        (True, "item_1:0", "started"),
        (False, "item_1:0", "finished"),
        (True, "item_3:0", "started"),
        (False, "item_3:0", "finished"),
    ]


async def test_marks_and_speaking_follow_the_written_frames_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    downlink, log, _ = make_downlink()
    bot = Bot()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(downlink.serve_clock)
        nursery.start_soon(downlink.serve_connection, bot.stream)
        nursery.start_soon(bot.keep_reading)
        await trio.sleep(0.1)
        pcm = tone(440, 0.1, 48000)
        for n in range(5):
            await downlink.on_incoming(PlayAudio(pcm[n * FRAME_BYTES : (n + 1) * FRAME_BYTES], OUT))
            await downlink.on_incoming(MarkIn(f"f{n}"))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    order = [
        f"speaking={e.speaking}" if isinstance(e, events.AgentSpeaking) else e.name
        for e in log.events
        if isinstance(e, events.AgentSpeaking | events.MarkPlayed)
    ]
    assert order == ["speaking=True", "f0", "f1", "f2", "f3", "f4", "speaking=False"]


async def test_after_the_bots_clear_the_rest_of_the_cut_reply_is_not_played(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The bot's clear reaches the server after it sent more of that reply:
    # the sidecar plays none of it, and counts it as cleared.
    downlink, log, _ = make_downlink()
    bot = Bot()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(downlink.serve_clock)
        nursery.start_soon(downlink.serve_connection, bot.stream)
        nursery.start_soon(bot.keep_reading)
        await trio.sleep(0.1)
        await downlink.on_incoming(PlayAudio(tone(440, 0.5, 24000), 24000, "item_1:0"))
        await trio.sleep(0.2)
        downlink.clear(by_bot=True)
        written = downlink.statistics().frames_written
        await downlink.on_incoming(PlayAudio(tone(440, 0.5, 24000), 24000, "item_1:0"))
        await trio.sleep(1)
        assert downlink.statistics().frames_written == written
        await downlink.on_incoming(PlayAudio(tone(440, 0.1, 24000), 24000, "item_2:0"))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    stats = downlink.statistics()
    assert stats.cut_samples == 12000 and stats.cut_resampled == 24000
    assert stats.frames_written == written + 5 == bot.frames
    assert log.speaking == [
        (True, "item_1:0", "started", 0),
        (False, "item_1:0", "cleared", written),
        (True, "item_2:0", "started", written),
        (False, "item_2:0", "finished", written + 5),
    ]


async def test_segment_starts_ahead_of_the_playout_are_bounded_and_counted() -> None:
    downlink, _, _ = make_downlink()
    # No clock runs: nothing is played, so nothing remembered can be forgotten.
    for n in range(MAX_SEGMENT_STARTS + 44):
        await downlink.on_incoming(PlayAudio(b"\x01\x00" * 8, 48000, f"item_{n}:0"))
    assert downlink.statistics().segment_starts_dropped == 44
    assert len(downlink._segment_starts) == MAX_SEGMENT_STARTS
    # Once played past, they make room again (pruned as each new one comes).
    downlink.voice.clear()
    await downlink.on_incoming(PlayAudio(b"\x01\x00" * 8, 48000, "item_new:0"))
    assert [s for _, s in downlink._segment_starts] == [
        f"item_{MAX_SEGMENT_STARTS - 1}:0",
        "item_new:0",
    ]
