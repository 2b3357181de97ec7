"""CaptureStream: the uplink's frames -> resample -> chunk composition (synchronous)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.capture import CaptureStream
from sidecar.chunker import Chunk
from sidecar.frames import Audio
from sidecar.resample import resample_once

T0 = 1_700_000_000_000.0


def tone(freq: float, samples: int, rate: int, start: int = 0) -> bytes:
    t = (np.arange(samples) + start) / rate
    return (np.sin(2 * np.pi * freq * t) * 16000).round().astype("<i2").tobytes()


def dominant(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[0] = 0
    return float(np.argmax(spectrum) * rate / len(x))


class Bot:
    """Feeds a CaptureStream like a bot writing in real time (arrival = end of frame)."""

    def __init__(self, stream: CaptureStream, start_ms: float = T0) -> None:
        self.stream = stream
        self.now_ms = start_ms
        self.chunks: list[Chunk] = []

    def play(self, pcm: bytes, rate: int, frame_ms: float = 20, late_ms: float = 0) -> None:
        step = round(rate * frame_ms / 1000)
        n = len(pcm) // 2
        for i in range(0, n, step):
            part = pcm[2 * i : 2 * (i + step)]
            self.now_ms += len(part) // 2 * 1000 / rate
            self.chunks += self.stream.push(Audio(rate, part), self.now_ms + late_ms)

    def wait(self, ms: float) -> None:
        self.now_ms += ms

    def flush(self) -> None:
        self.chunks += self.stream.flush()

    @property
    def pcm(self) -> bytes:
        return b"".join(c.pcm for c in self.chunks)


def assert_continuous(chunks: list[Chunk], rate: int) -> None:
    """Never backwards; each chunk starts where the previous one's audio ended (±1 ms)."""
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.timestamp_ms >= prev.timestamp_ms
        assert abs(nxt.timestamp_ms - prev.timestamp_ms - prev.samples * 1000 / rate) <= 1


@pytest.mark.parametrize("out_rate", [8000, 16000, 24000])
def test_flush_gives_exact_totals(out_rate: int) -> None:
    bot = Bot(CaptureStream(out_rate))
    bot.play(tone(1000, 48000 * 7 // 10, 48000), 48000)
    before = sum(c.samples for c in bot.chunks)
    assert before < out_rate * 7 // 10  # the resampler holds some back
    bot.flush()
    assert sum(c.samples for c in bot.chunks) == out_rate * 7 // 10
    assert bot.stream.samples_out == out_rate * 7 // 10
    assert_continuous(bot.chunks, out_rate)
    assert bot.chunks[0].timestamp_ms == int(T0)
    assert abs(dominant(bot.pcm, out_rate) - 1000) <= 2


def test_flush_is_idempotent_and_the_stream_goes_on() -> None:
    bot = Bot(CaptureStream(16000))
    bot.play(tone(500, 4800, 48000), 48000)
    bot.flush()
    assert bot.stream.flush() == []
    bot.play(tone(500, 4800, 48000, start=4800), 48000)
    bot.flush()
    assert sum(c.samples for c in bot.chunks) == 3200
    assert_continuous(bot.chunks, 16000)


@pytest.mark.parametrize("second_rate", [32000, 16000, 8000, 44100])
def test_rate_change_keeps_samples_and_timestamps(second_rate: int) -> None:
    out_rate = 16000
    bot = Bot(CaptureStream(out_rate))
    first = tone(1000, 24000, 48000)  # 0.5 s
    second = tone(1000, second_rate // 2, second_rate)  # 0.5 s
    bot.play(first, 48000)
    switch_at = len(bot.chunks)
    bot.play(second, second_rate)
    bot.flush()
    # Each run at one rate is flushed whole when the rate changes.
    assert sum(c.samples for c in bot.chunks) == 8000 + 8000
    assert sum(c.samples for c in bot.chunks[: switch_at + 2]) >= 8000
    assert_continuous(bot.chunks, out_rate)
    pcm = bot.pcm
    assert abs(dominant(pcm[: 2 * 8000], out_rate) - 1000) <= 2
    assert abs(dominant(pcm[2 * 8000 :], out_rate) - 1000) <= 2
    assert bot.stream.in_rate == second_rate


def test_rate_change_with_early_or_late_arrival_stays_monotonic() -> None:
    bot = Bot(CaptureStream(16000))
    bot.play(tone(1000, 9600, 48000), 48000)
    # The first 32 kHz frame arrives 15 ms "early" (bot clock jitter): no overlap.
    bot.play(tone(1000, 3200, 32000), 32000, late_ms=-15)
    # Back to 48 kHz, arriving 40 ms late but within the gap: still continuous.
    bot.play(tone(1000, 4800, 48000), 48000, late_ms=40)
    bot.flush()
    assert sum(c.samples for c in bot.chunks) == 3200 + 1600 + 1600
    assert_continuous(bot.chunks, 16000)


def test_a_gap_moves_the_clock_forward_only() -> None:
    bot = Bot(CaptureStream(16000))
    bot.play(tone(1000, 4800, 48000), 48000)
    bot.wait(500)
    bot.play(tone(1000, 4800, 48000), 48000)
    bot.flush()
    stamps = [c.timestamp_ms for c in bot.chunks]
    assert stamps == sorted(stamps)
    jumps = [b - a for a, b in itertools.pairwise(stamps) if b - a > 30]
    assert len(jumps) == 1
    assert 480 <= jumps[0] <= 540
    assert sum(c.samples for c in bot.chunks) == 3200


def test_a_gap_at_a_rate_change_moves_the_clock_forward() -> None:
    bot = Bot(CaptureStream(16000))
    bot.play(tone(1000, 4800, 48000), 48000)
    bot.wait(300)
    bot.play(tone(1000, 1600, 16000), 16000)
    bot.flush()
    stamps = [c.timestamp_ms for c in bot.chunks]
    assert stamps == sorted(stamps)
    assert max(b - a for a, b in itertools.pairwise(stamps)) >= 300


@pytest.mark.parametrize(
    ("rate", "frame_ms"), [(48000, 500), (16000, 680), (44100, 100), (48000, 30), (32000, 7)]
)
def test_long_frames_leave_as_chunk_sized_messages(rate: int, frame_ms: int) -> None:
    out_rate = 24000
    bot = Bot(CaptureStream(out_rate, chunk_ms=20))
    samples = rate * 2  # 2 s
    bot.play(tone(700, samples, rate), rate, frame_ms=frame_ms)
    bot.flush()
    sizes = [c.samples for c in bot.chunks]
    assert sum(sizes) == out_rate * 2
    # 20 ms is 480 samples; the resampler's output per call varies by a few.
    assert max(sizes[:-1]) <= 480 + 8
    assert len(sizes) >= 2000 // 20 - 1
    assert_continuous(bot.chunks, out_rate)


def test_drain_emits_everything_chunked_without_a_seam() -> None:
    pcm = tone(1000, 48000, 48000)
    bot = Bot(CaptureStream(16000))
    # 0.5 s in 20 ms frames then 10 ms: the last half chunk waits in the chunker.
    bot.play(pcm[: 2 * 24480], 48000)
    drained = bot.stream.drain()
    assert drained
    bot.chunks += drained
    assert bot.stream.drain() == []
    bot.play(pcm[2 * 24480 :], 48000, frame_ms=7)
    bot.flush()
    # The resampler kept its state across the drain: the output is sample for
    # sample what one uninterrupted stream gives.
    assert bot.pcm == resample_once(pcm, 48000, 16000)
    assert_continuous(bot.chunks, 16000)


def test_drain_before_any_audio_is_empty() -> None:
    stream = CaptureStream(16000)
    assert stream.drain() == []
    assert stream.flush() == []
    assert stream.in_rate is None


@settings(max_examples=40, deadline=None)
@given(
    runs=st.lists(
        st.tuples(
            st.sampled_from([8000, 16000, 24000, 32000, 44100, 48000]),
            st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=12),
            st.floats(min_value=-30, max_value=300),
        ),
        min_size=1,
        max_size=5,
    ),
    out_rate=st.sampled_from([8000, 16000, 24000]),
    drain_between=st.booleans(),
)
def test_any_sequence_keeps_totals_and_monotonic_time(
    runs: list[tuple[int, list[int], float]], out_rate: int, drain_between: bool
) -> None:
    stream = CaptureStream(out_rate)
    chunks: list[Chunk] = []
    now = T0
    expected = 0
    pending: dict[int, int] = {}  # input samples of the current run, by rate
    previous_rate: int | None = None
    for rate, sizes, late_ms in runs:
        if rate != previous_rate and previous_rate is not None:
            expected += round(pending.pop(previous_rate, 0) * out_rate / previous_rate)
        for n in sizes:
            now += n * 1000 / rate
            chunks += stream.push(Audio(rate, bytes(2 * n)), now + late_ms)
            pending[rate] = pending.get(rate, 0) + n
        if drain_between:
            chunks += stream.drain()
        previous_rate = rate
    chunks += stream.flush()
    assert previous_rate is not None
    expected += round(pending.pop(previous_rate, 0) * out_rate / previous_rate)
    assert sum(c.samples for c in chunks) == expected
    assert all(c.samples > 0 for c in chunks)
    stamps = [c.timestamp_ms for c in chunks]
    assert stamps == sorted(stamps)
