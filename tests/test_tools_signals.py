"""The tools' sans-I/O parts: test signals, analysis, traffic statistics, timeline, pacing."""

from __future__ import annotations

import numpy as np
import pytest
import trio
import trio.testing

from sidecar import frames, messages
from sidecar.dialects.base import Wire
from sidecar.dialects.server import server_session
from sidecar.tools import analysis, synth
from sidecar.tools.pacing import Pacer
from sidecar.tools.record import GAP_TOLERANCE_S, RecordResult, Timeline, capture
from sidecar.tools.traffic import Traffic, kind_of
from sidecar.tools.wavio import convert, from_s16le

RATE = 48000


def test_speech_like_is_deterministic_voiced_and_band_limited() -> None:
    a = synth.speech_like(2.0, RATE)
    assert np.array_equal(a, synth.speech_like(2.0, RATE))
    assert not np.array_equal(a, synth.speech_like(2.0, RATE, seed=8))
    assert len(a) == 2 * RATE
    spectrum = np.abs(np.fft.rfft(a)) ** 2
    freqs = np.fft.rfftfreq(len(a), 1 / RATE)
    # Voice-band energy only: it survives an 8 kHz websocket rate intact.
    assert spectrum[freqs > 4000].sum() / spectrum.sum() < 1e-3
    assert spectrum[(freqs > 80) & (freqs < 1000)].sum() / spectrum.sum() > 0.5
    # Syllables and pauses: the level moves a lot over 50 ms windows.
    windows = np.sqrt(np.mean(a[: len(a) // 2400 * 2400].reshape(-1, 2400) ** 2, axis=1))
    assert windows.max() > 10 * max(windows.min(), 1e-6)
    assert -24 < analysis.level_dbfs(a) < -18


def test_align_finds_the_lag_of_a_resampled_copy() -> None:
    sent = synth.speech_like(2.0, RATE)
    through = from_s16le(convert(from_s16le(convert(sent, RATE, 16000)), 16000, RATE))
    lag = 3377
    received = np.concatenate([np.zeros(lag, np.float32), 0.5 * through, np.zeros(500, np.float32)])
    found = analysis.align(sent, received, max_lag=RATE)
    assert found.lag == lag
    assert found.correlation > 0.99
    assert analysis.snr_db(sent, received, lag) > 40
    # Half a level is a gain, not noise.
    assert analysis.level_dbfs(received[lag : lag + len(sent)]) == pytest.approx(
        analysis.level_dbfs(sent) - 6.02, abs=0.1
    )


def test_snr_and_correlation_see_noise() -> None:
    rng = np.random.default_rng(1)
    sent = synth.speech_like(1.0, RATE)
    noisy = sent + rng.normal(0, 10 ** (-30 / 20), len(sent)).astype(np.float32)
    assert analysis.snr_db(sent, noisy, 0) == pytest.approx(8, abs=2)
    unrelated = rng.normal(0, 0.1, len(sent)).astype(np.float32)
    assert analysis.align(sent, unrelated).correlation < 0.1
    assert analysis.align(sent, np.zeros(0, np.float32)).correlation == 0


def _mixed(ts_ms: int, samples: int = 320, rate: int = 16000) -> str:
    data = messages.MixedData(chunk=b"\0" * 2 * samples, sample_rate=rate, timestamp_ms=ts_ms)  # type: ignore[arg-type]
    return messages.encode(messages.MixedAudio(bot_id="b", data=data)).decode()


class _Heard:
    """Messages into a Traffic, decoded by a dialect's server session as serve does."""

    def __init__(self, protocol: str = "attendee") -> None:
        self.traffic = Traffic()
        self.session = server_session(protocol)

    def __call__(self, arrival_s: float, message: Wire) -> None:
        self.traffic.received(arrival_s, message, self.session.receive(message))


def test_traffic_counts_rate_gaps_overlaps_and_jitter() -> None:
    heard = _Heard()
    traffic = heard.traffic
    # 50 chunks of 20 ms, arriving exactly on time: no gaps, no jitter.
    for n in range(50):
        heard(10.0 + n * 0.02, _mixed(1_000_000 + n * 20))
    snap = traffic.snapshot(11.0)
    assert (snap.messages, snap.gaps, snap.overlaps) == (50, 0, 0)
    assert snap.jitter_ms == pytest.approx(0, abs=1e-6)
    assert snap.audio_s == pytest.approx(1.0)
    assert snap.realtime_factor == pytest.approx(1.0, abs=0.01)
    assert snap.messages_per_s == pytest.approx(50, rel=0.05)
    # A 100 ms hole in the timestamps, then a chunk that starts 10 ms too early.
    heard(11.1, _mixed(1_000_000 + 50 * 20 + 100))
    heard(11.12, _mixed(1_000_000 + 51 * 20 + 100 - 10))
    # Arrivals 30 ms late then on time again: jitter grows.
    heard(11.17, _mixed(1_000_000 + 52 * 20 + 90))
    heard(11.16, _mixed(1_000_000 + 53 * 20 + 90))
    snap = traffic.snapshot(12.0)
    assert snap.gaps == 1
    assert snap.max_gap_ms == pytest.approx(100)
    assert snap.overlaps == 1
    assert snap.jitter_ms > 1
    assert snap.messages_per_s == pytest.approx(4, rel=0.01)  # 4 messages in the last second


def test_traffic_counts_violations_and_other_messages() -> None:
    heard = _Heard()
    heard.session.mark("m")
    heard(1.0, '{"trigger": "realtime_audio.mixed"}')
    echo = messages.MarkEcho(bot_id="b", data=messages.MarkEchoData("m", "played"))
    heard(1.0, messages.encode(echo).decode())
    snap = heard.traffic.snapshot(2.0)
    assert snap.violations == 1
    assert snap.violations_by_code == {"invalid_field": 1}
    assert snap.by_trigger == {"realtime_audio.mixed": 1, "realtime_audio.mark": 1}
    assert "violations 1" in snap.describe()


def test_traffic_without_timestamps_uses_the_audios_own_time() -> None:
    """Vonage's binary frames carry no timestamp: no gap can show, jitter still does."""
    heard = _Heard("vonage")
    heard(0.0, '{"event":"websocket:connected","content-type":"audio/l16;rate=16000"}')
    for n in range(50):
        heard(1.0 + n * 0.02, bytes(640))
    snap = heard.traffic.snapshot(2.0)
    assert (snap.gaps, snap.overlaps, snap.violations) == (0, 0, 0)
    assert snap.jitter_ms == pytest.approx(0, abs=1e-6)
    # All of it zeros: silence, as the sidecar's fill sends for a quiet bot.
    assert snap.silent_s == pytest.approx(1.0)
    assert "1.00 s silent" in snap.describe()
    # Only the audio's span counts for the real-time factor, not the opening before it.
    assert snap.realtime_factor == pytest.approx(1.0, abs=0.01)
    heard(2.5, bytes(640))  # 480 ms late
    assert heard.traffic.snapshot(3.0).jitter_ms > 10
    assert heard.traffic.by_trigger == {"websocket:connected": 1, "(binary)": 51}
    heard(2.52, b"\x01\x00" * 320)  # not silence
    snap = heard.traffic.snapshot(3.0)
    assert (snap.audio_s, snap.silent_s) == pytest.approx((1.04, 1.02))


def test_kind_of_names_what_a_message_calls_itself() -> None:
    assert kind_of('{"trigger": "realtime_audio.mixed", "data": {}}') == "realtime_audio.mixed"
    assert kind_of('{"event": "media", "media": {}}') == "media"
    assert kind_of('{"action": "notify"}') == "notify"
    assert kind_of('{"type": "Welcome"}') == "Welcome"
    assert kind_of('{"user_audio_chunk": "AAA="}') == "user_audio_chunk"
    assert kind_of(b"\0\0") == "(binary)"
    for unnamed in (
        '{"trigger": 5}',
        '{"user_audio_chunk": 5}',
        "[1]",
        "not json",
        '{"event": "\ud800"',
        "\ud800",
    ):
        assert kind_of(unnamed) == "(invalid)", unnamed


def _frame(value: int, samples: int = 960, rate: int = RATE) -> frames.Audio:
    return frames.Audio(rate, np.full(samples, value, "<i2").tobytes())


def test_timeline_places_frames_in_real_time() -> None:
    timeline = Timeline(RATE)
    # The first frame fixes the time base exactly, even for a short wait.
    first = timeline.add(_frame(1), 0.030)
    assert len(first) // 2 == round(0.030 * RATE) + 960
    # Jitter within the tolerance inserts nothing.
    late = timeline.add(_frame(2), 0.050 + GAP_TOLERANCE_S * 0.9)
    assert len(late) // 2 == 960
    # A real pause becomes silence, so later audio keeps its time.
    after_pause = timeline.add(_frame(3), 1.0)
    assert len(after_pause) // 2 == round(1.0 * RATE) - (round(0.030 * RATE) + 1920) + 960
    assert timeline.seconds == pytest.approx(1.02)
    assert timeline.audio_samples == 3 * 960
    assert timeline.pad_to(1.02 + GAP_TOLERANCE_S / 2) == b""
    assert len(timeline.pad_to(2.0)) // 2 == round(0.98 * RATE)


def test_timeline_without_silence_and_with_another_rate() -> None:
    timeline = Timeline(RATE, keep_silence=False)
    assert len(timeline.add(_frame(1), 5.0)) // 2 == 960
    assert timeline.pad_to(9.0) == b""
    # 16 kHz frames come out at the timeline's rate (the resampler holds a little back).
    out = b"".join(timeline.add(_frame(1000, 320, 16000), 5.0 + n * 0.02) for n in range(10))
    assert 9000 <= len(out) // 2 <= 9600
    assert from_s16le(out[-200:]).mean() == pytest.approx(1000 / 32768, rel=0.01)


async def test_capture_dates_frames_read_together_by_their_queueing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Frames that queued while the recorder was busy are not a pause in the
    audio; a frame that came late on its own is."""
    send, receive = trio.testing.memory_stream_one_way_pair()
    recorded = bytearray()
    timeline = Timeline(RATE)
    start = trio.current_time()

    async def sidecar_side() -> None:
        await send.send_all(frames.encode_audio(_frame(1).pcm, RATE))
        # The recorder was stalled: nine frames, written 20 ms apart, wait in the socket.
        await trio.sleep(0.2)
        await send.send_all(b"".join(frames.encode_audio(_frame(2).pcm, RATE) for _ in range(9)))
        # Then the sidecar itself goes quiet for half a second: that is a real pause.
        await trio.sleep(0.5)
        await send.send_all(frames.encode_audio(_frame(3).pcm, RATE))
        await send.aclose()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sidecar_side)
            await capture(receive, timeline, recorded.extend, RecordResult(), start)
    samples = from_s16le(bytes(recorded))
    speech = np.nonzero(samples)[0]
    # The first ten frames are contiguous; silence only before the last one.
    assert speech[0] == 0
    assert np.count_nonzero(samples[: 10 * 960]) == 10 * 960
    assert len(samples) == round(0.7 * RATE) + 960
    assert np.count_nonzero(samples) == 11 * 960


async def test_pacer_keeps_an_absolute_schedule(autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer()
    sent: list[float] = []
    start = trio.current_time()
    for n in range(5):
        await pacer.wait(0.02)
        sent.append(trio.current_time() - start)
        if n == 1:
            await trio.sleep(0.03)  # a hiccup shorter than 3 periods is caught up
    assert sent == pytest.approx([0.0, 0.02, 0.05, 0.06, 0.08])
    await trio.sleep(1.0)  # a long stall restarts the grid instead of bursting
    before = trio.current_time()
    await pacer.wait(0.02)
    await pacer.wait(0.02)
    assert trio.current_time() - before == pytest.approx(0.02)
    assert pacer.restarts == 1


async def test_fast_pacer_never_sleeps(autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer(fast=True)
    start = trio.current_time()
    for _ in range(100):
        await pacer.wait(0.02)
    assert trio.current_time() == start
    assert pacer.elapsed_audio == pytest.approx(2.0)
