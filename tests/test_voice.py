"""Voice: bot_output -> resample -> playout, driven tick by tick (no clock, no I/O)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import dominant_frequency, tone, tone_snr_db

from sidecar.dialects import Options, make
from sidecar.dialects.base import MarkIn, PlayAudio
from sidecar.dialects.server import SERVER_SESSIONS, ServerSession, server_session
from sidecar.playout import MarkResolved, Tick
from sidecar.resample import Resampler
from sidecar.voice import Voice

OUT = 48000
FRAME = OUT // 50  # samples per 20 ms frame


def run_until_idle(voice: Voice, limit: int = 10_000) -> list[bytes]:
    frames: list[bytes] = []
    for _ in range(limit):
        if voice.idle:
            return frames
        tick = voice.tick()
        if tick.frame is not None:
            frames.append(tick.frame)
    raise AssertionError("the voice never went idle")


def feed(voice: Voice, pcm: bytes, rate: int, piece_ms: int = 20) -> None:
    step = rate * piece_ms // 1000 * 2
    for i in range(0, len(pcm), step):
        voice.audio(pcm[i : i + step], rate)


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
def test_every_sample_comes_out_including_the_resampler_tail(rate: int) -> None:
    voice = Voice(OUT)
    feed(voice, tone(1000, 0.5, rate), rate)
    frames = run_until_idle(voice)
    pcm = b"".join(frames)
    assert len(pcm) // 2 == 24000  # exactly 0.5 s: 25 whole frames, no padding
    assert abs(dominant_frequency(pcm, OUT) - 1000) < 10
    # The tone lasts to the end: the tail was flushed, not left in the filter.
    end = np.frombuffer(pcm[-FRAME * 2 :], dtype="<i2")
    assert np.abs(end).max() > 8000


def test_a_partial_last_frame_is_padded_with_silence() -> None:
    voice = Voice(OUT)
    feed(voice, tone(1000, 0.51, 16000), 16000)
    frames = run_until_idle(voice)
    pcm = b"".join(frames)
    assert len(pcm) // 2 == 26 * FRAME
    assert not np.frombuffer(pcm[24480 * 2 :], dtype="<i2").any()


def test_the_padding_of_the_last_frame_is_reported() -> None:
    voice = Voice(OUT)
    voice.audio(tone(1000, 0.05, OUT), OUT)  # two frames and a half
    voice.mark("end")
    paddings = []
    while not voice.idle:
        tick = voice.tick()
        if tick.frame is not None:
            paddings.append(tick.padding)
    assert paddings == [0, 0, FRAME // 2]


def test_rate_change_mid_stream_keeps_all_samples() -> None:
    voice = Voice(OUT)
    feed(voice, tone(500, 0.3, 16000), 16000)
    feed(voice, tone(1500, 0.3, 24000), 24000)
    feed(voice, tone(700, 0.2, 8000), 8000)
    pcm = b"".join(run_until_idle(voice))
    assert len(pcm) // 2 == int(0.8 * OUT)
    assert voice.statistics().rate_changes == 2
    assert voice.statistics().samples_received == 4800 + 7200 + 1600
    assert abs(dominant_frequency(pcm[: 12000 * 2], OUT) - 500) < 20
    assert abs(dominant_frequency(pcm[16000 * 2 : 27000 * 2], OUT) - 1500) < 20
    assert abs(dominant_frequency(pcm[30000 * 2 :], OUT) - 700) < 20


def test_idle_only_when_nothing_is_left_to_play() -> None:
    voice = Voice(OUT, jitter_ms=40)
    states = [voice.idle]
    voice.audio(tone(1000, 0.1, 16000), 16000)
    states.append(voice.idle)
    frames = run_until_idle(voice)
    states.append(voice.idle)
    assert states == [True, False, True]
    assert len(frames) == 5
    # Idle means idle: ticking on finds nothing.
    assert voice.tick().frame is None


def test_after_an_utterance_the_jitter_buffer_applies_again() -> None:
    voice = Voice(OUT, jitter_ms=40)
    voice.audio(tone(1000, 0.1, OUT), OUT)
    run_until_idle(voice)
    # A server streaming 20 ms at a time: the first piece must wait for the
    # jitter buffer, not go out at once as if the last utterance never ended.
    voice.audio(tone(1000, 0.02, OUT), OUT)
    assert voice.tick().frame is None


def test_mark_resolves_with_the_frame_that_completes_it() -> None:
    voice = Voice(OUT)
    voice.audio(tone(1000, 0.1, 16000), 16000)
    assert voice.mark("m") == ()
    resolved_at = None
    for n in range(1, 20):
        tick = voice.tick()
        if tick.marks:
            assert tick.frame is not None
            assert tick.marks == (MarkResolved("m", True),)
            resolved_at = n
            break
    assert resolved_at == 5  # a pending mark starts playback at once: frames 1..5


def test_mark_on_an_empty_queue_is_played_at_once() -> None:
    voice = Voice(OUT)
    assert voice.mark("now") == (MarkResolved("now", True),)


def test_clear_drops_queued_audio_and_answers_pending_marks() -> None:
    voice = Voice(OUT)
    voice.audio(tone(1000, 1.0, 16000), 16000)
    voice.mark("a")
    voice.audio(tone(1000, 0.5, 16000), 16000)
    voice.mark("b")
    for _ in range(5):
        voice.tick()
    assert voice.clear() == (MarkResolved("a", False), MarkResolved("b", False))
    assert voice.idle
    assert voice.tick().frame is None
    assert voice.mark("after") == (MarkResolved("after", True),)
    stats = voice.statistics().playout
    assert stats.bytes_cleared > 0
    assert stats.marks_cleared == 2


def test_audio_after_clear_starts_a_fresh_stream() -> None:
    voice = Voice(OUT)
    voice.audio(tone(500, 0.5, 16000), 16000)
    voice.tick()
    voice.clear()
    feed(voice, tone(2000, 0.2, 16000), 16000)
    pcm = b"".join(run_until_idle(voice))
    assert len(pcm) // 2 == int(0.2 * OUT)
    assert abs(dominant_frequency(pcm, OUT) - 2000) < 20


def test_the_cap_refuses_the_excess() -> None:
    voice = Voice(OUT, max_ms=100)
    refused = voice.audio(tone(1000, 0.5, OUT), OUT)
    assert refused == int(0.4 * OUT) * 2
    assert voice.statistics().playout.bytes_dropped_overflow == refused
    assert len(run_until_idle(voice)) == 5


def test_a_gap_inside_speech_is_an_underrun_the_end_of_speech_is_not() -> None:
    voice = Voice(OUT)
    voice.audio(tone(1000, 0.1, OUT), OUT)
    ticks = [voice.tick() for _ in range(10)]  # 5 frames after the jitter wait, then dry
    assert any(t.underrun for t in ticks)
    assert voice.statistics().playout.underruns == 0
    voice.audio(tone(1000, 0.1, OUT), OUT)  # the server was late, not done
    assert voice.statistics().playout.underruns == 1
    voice.mark("end")
    run_until_idle(voice)
    voice.audio(tone(1000, 0.1, OUT), OUT)  # a new utterance after a mark
    run_until_idle(voice)  # ends without a mark: the dry spell runs out
    voice.audio(tone(1000, 0.1, OUT), OUT)  # much later: a new utterance
    assert voice.statistics().playout.underruns == 1


def test_a_slightly_late_server_never_gets_its_filter_flushed_mid_utterance() -> None:
    # 35 x 20 ms messages at 16 kHz, every other one landing just after the tick
    # that wanted it: the output must be the continuous resampling, sample for sample.
    src = tone(440, 0.7, 16000)
    step = 16000 // 50 * 2
    voice = Voice(OUT)
    out: list[bytes] = []
    for n, i in enumerate(range(0, len(src), step)):
        if n % 2:
            out += [t.frame for t in [voice.tick()] if t.frame is not None]
            voice.audio(src[i : i + step], 16000)
        else:
            voice.audio(src[i : i + step], 16000)
            out += [t.frame for t in [voice.tick()] if t.frame is not None]
    voice.mark("end")
    out += run_until_idle(voice)
    reference = Resampler(16000, OUT).process(src)
    played = b"".join(out)
    assert played[: len(reference)] == reference


# -- marks never touch the audio ------------------------------------------------------------


def _served(protocol: str, rate: int) -> ServerSession:
    """A server of `protocol`, past the client's opening, so it may speak."""
    server = server_session(protocol)
    for wire in make(protocol, Options(sample_rate=rate)).session().opening():
        server.receive(wire)
    return server


def _play_through(protocol: str, rate: int, *, marks: bool, burst: bool) -> tuple[bytes, list[str]]:
    """2 s of 440 Hz from a server of `protocol` in 20 ms pieces, a mark after
    each piece if `marks`; decoded by the dialect, played by a Voice. Paced one
    piece per tick, or (`burst`) all at once as agents send faster than real time."""
    server = _served(protocol, rate)
    client = make(protocol, Options(sample_rate=rate)).session()
    voice = Voice(OUT)
    src = tone(440, 2.0, rate)
    step = rate // 50 * 2
    out: list[bytes] = []
    answered: list[str] = []
    sent: list[str] = []
    played = 0  # audio samples handed out, padding not counted

    def play(tick_result: Tick) -> None:
        nonlocal played
        if tick_result.frame is not None:
            out.append(tick_result.frame)
            played += len(tick_result.frame) // 2 - tick_result.padding
        for m in tick_result.marks:
            assert m.played
            # Answered with the frame holding its piece's last sample: not before, not later.
            end = (len(answered) + 1) * FRAME
            assert end <= played < end + FRAME, (m.name, played)
            answered.append(m.name)

    for n, i in enumerate(range(0, len(src), step)):
        wires = list(server.audio(src[i : i + step], rate))
        if marks:
            wires += server.mark(f"m{n}")
        for wire in wires:
            for incoming in client.receive(wire):
                match incoming:
                    case PlayAudio(pcm=pcm, rate=r):
                        voice.audio(pcm, r)
                    case MarkIn(name=name):
                        sent.append(name)
                        assert voice.mark(name) == ()  # its audio is still to play
                    case _:
                        raise AssertionError(f"unexpected {incoming}")
        if not burst:
            play(voice.tick())
    for wire in server.flush():
        for incoming in client.receive(wire):
            assert isinstance(incoming, PlayAudio)
            voice.audio(incoming.pcm, incoming.rate)
    while not voice.idle:
        play(voice.tick())
    assert len(sent) == (100 if marks else 0)
    assert answered == sent  # every mark answered, in order, as played
    return b"".join(out), sent


@pytest.mark.parametrize("burst", [False, True], ids=["paced", "burst"])
@pytest.mark.parametrize(
    ("protocol", "rate"),
    [(p, 8000 if p == "twilio" else 16000) for p in sorted(SERVER_SESSIONS)],
)
def test_a_mark_after_every_piece_does_not_touch_the_audio(
    protocol: str, rate: int, burst: bool
) -> None:
    plain, _ = _play_through(protocol, rate, marks=False, burst=burst)
    marked, _ = _play_through(protocol, rate, marks=True, burst=burst)
    assert len(marked) == len(plain)
    clean = tone_snr_db(plain, OUT, 440)
    assert clean > 30  # mu-law (Twilio) limits it; the others are far above
    assert tone_snr_db(marked, OUT, 440) > clean - 1


def test_a_mark_is_answered_only_once_its_last_sample_was_played() -> None:
    # A mark waits for what the filter still holds: the frame that answers it
    # holds the mark's last sample, and no frame before it does.
    voice = Voice(OUT)
    src = tone(440, 0.1, 16000)
    voice.audio(src, 16000)
    assert voice.mark("m") == ()
    played = 0
    while True:
        tick = voice.tick()
        if tick.frame is not None:
            played += len(tick.frame) // 2 - tick.padding
        if tick.marks:
            assert tick.marks == (MarkResolved("m", True),)
            break
    assert played >= 0.1 * OUT > played - FRAME


def test_a_mark_waiting_on_the_filter_is_answered_without_more_audio() -> None:
    voice = Voice(OUT)
    voice.audio(tone(440, 0.001, 16000), 16000)  # shorter than the filter's hold-back
    assert voice.mark("m") == ()
    answered: list[MarkResolved] = []
    for _ in range(10):
        answered += voice.tick().marks
    assert answered == [MarkResolved("m", True)]
    assert voice.idle


def test_an_utterance_shorter_than_the_filters_hold_back_is_played_without_a_mark() -> None:
    voice = Voice(OUT, jitter_ms=40)
    voice.audio(tone(440, 0.001, 16000), 16000)  # 16 samples: all still in the filter
    frames = run_until_idle(voice)
    assert sum(len(f) // 2 for f in frames) == FRAME  # its 48 samples, padded to a frame
    assert voice.statistics().playout.pad_bytes == (FRAME - 48) * 2


def test_an_empty_first_message_leaves_the_voice_idle() -> None:
    voice = Voice(OUT)
    voice.audio(b"", 16000)
    assert voice.idle


_voice_op = st.one_of(
    st.tuples(st.just("audio"), st.integers(0, 500)),
    st.tuples(st.just("mark"), st.just(0)),
    st.tuples(st.just("tick"), st.just(0)),
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(ops=st.lists(_voice_op, max_size=60))
def test_every_mark_is_answered_in_order_with_the_frame_holding_its_last_sample(
    ops: list[tuple[str, int]],
) -> None:
    # 16 -> 48 kHz: a mark after n input samples ends at output sample 3n exactly.
    voice = Voice(OUT)
    src = tone(440, 0.5, 16000)
    taken = 0
    played = 0
    ends: dict[str, int] = {}
    answered: list[str] = []

    def answer(marks: tuple[MarkResolved, ...]) -> None:
        for m in marks:
            assert m.played
            assert ends[m.name] <= played < ends[m.name] + FRAME, (m.name, played)
            answered.append(m.name)

    def tick() -> None:
        nonlocal played
        result = voice.tick()
        if result.frame is not None:
            played += len(result.frame) // 2 - result.padding
        answer(result.marks)

    for op, n in ops:
        if op == "audio":
            n = min(n, len(src) // 2 - taken)
            voice.audio(src[taken * 2 : (taken + n) * 2], 16000)
            taken += n
        elif op == "mark":
            name = f"m{len(ends)}"
            ends[name] = 3 * taken
            answer(voice.mark(name))
        else:
            tick()
    for _ in range(1000):
        if voice.idle:
            break
        tick()
    assert voice.idle
    assert answered == sorted(ends, key=lambda name: int(name[1:]))
    assert played == 3 * taken
