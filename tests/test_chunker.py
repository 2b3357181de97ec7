from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.chunker import Chunk, Chunker, ChunkerStatistics
from sidecar.resample import Resampler

PROPERTY = settings(max_examples=60, deadline=None)

T0 = 1_700_000_000_000.0
IN_RATE = 48000
OUT_RATE = 16000


def noise(samples: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(samples) * 2000).astype("<i2").tobytes()


def silence(samples: int) -> bytes:
    return bytes(2 * samples)


def duration_ms(chunk: Chunk, rate: int = OUT_RATE) -> float:
    return chunk.samples * 1000 / rate


class Pipeline:
    """Resampler feeding a chunker, as the sidecar wires them."""

    def __init__(self, chunk_ms: int = 20, gap_ms: float = 100.0) -> None:
        self.resampler = Resampler(IN_RATE, OUT_RATE)
        self.chunker = Chunker(IN_RATE, OUT_RATE, chunk_ms=chunk_ms, gap_ms=gap_ms)
        self.seed = 0

    def push(self, frame_ms: float, capture_ms: float) -> Chunk | None:
        samples = round(IN_RATE * frame_ms / 1000)
        self.seed += 1
        out = self.resampler.process(noise(samples, self.seed))
        return self.chunker.push(out, samples, capture_ms)

    def run(self, frame_ms: float, frames: int, start_ms: float = T0) -> list[Chunk | None]:
        return [self.push(frame_ms, start_ms + i * frame_ms) for i in range(frames)]


def emitted(results: list[Chunk | None]) -> list[Chunk]:
    return [chunk for chunk in results if chunk is not None]


def assert_continuous(chunks: list[Chunk], rate: int = OUT_RATE) -> None:
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.timestamp_ms >= prev.timestamp_ms
        assert abs(nxt.timestamp_ms - (prev.timestamp_ms + duration_ms(prev, rate))) <= 1


def test_20ms_frames_emit_on_every_push_with_short_first_chunk() -> None:
    pipeline = Pipeline()
    results = pipeline.run(20, 50)
    assert all(chunk is not None for chunk in results)
    chunks = emitted(results)
    # The resampler holds back its delay on the first frame; that chunk is a few ms short
    # and the held samples ride in later chunks, which are then a full 20 ms.
    held_back = round(pipeline.resampler.delay_ms * OUT_RATE / 1000)
    assert chunks[0].samples == 320 - held_back
    assert 0 < held_back < 320 // 2
    assert all(chunk.samples == 320 for chunk in chunks[1:])
    assert all(len(chunk.pcm) == 2 * chunk.samples for chunk in chunks)
    assert_continuous(chunks)


def test_10ms_frames_emit_on_every_second_push() -> None:
    results = Pipeline().run(10, 40)
    assert [chunk is not None for chunk in results] == [False, True] * 20
    chunks = emitted(results)
    assert all(chunk.samples == 320 for chunk in chunks[1:])
    assert_continuous(chunks)


def test_30ms_frames_emit_on_every_push_carrying_the_remainder() -> None:
    results = Pipeline(chunk_ms=20).run(30, 40)
    assert all(chunk is not None for chunk in results)
    chunks = emitted(results)
    assert all(chunk.samples == 480 for chunk in chunks[1:])
    assert_continuous(chunks)


def test_7ms_frames_emit_when_the_span_completes() -> None:
    chunker = Chunker(IN_RATE, OUT_RATE)
    frame = 7 * 48
    due = []
    for i in range(20):
        chunk = chunker.push(silence(7 * 16), frame, T0 + 7 * i)
        due.append(chunk is not None)
    # Input time reaches 21, 42, 63, ... ms; each of those pushes completes a 20 ms span.
    assert due == [(i + 1) * 7 // 20 > i * 7 // 20 for i in range(20)]


def test_huge_frame_is_one_big_chunk_and_leaves_no_debt() -> None:
    chunker = Chunker(IN_RATE, OUT_RATE)
    big = chunker.push(silence(16000), 48000, T0)
    assert big is not None
    assert big.samples == 16000
    # No debt from the big frame: the next 10 ms frame must not complete a span by itself.
    assert chunker.push(silence(160), 480, T0 + 1000) is None
    after = chunker.push(silence(160), 480, T0 + 1010)
    assert after is not None
    assert after.samples == 320
    assert after.timestamp_ms == int(T0) + 1000


def test_a_span_completed_without_output_leaves_its_output_for_the_next_boundary() -> None:
    chunker = Chunker(IN_RATE, OUT_RATE)
    # Warm-up: the resampler has produced nothing yet although 20 ms went in.
    assert chunker.push(b"", 960, T0) is None
    # The first output waits for the grid instead of leaving as a sliver mid-span (which
    # would leave the rest of the span a short message too).
    assert chunker.push(silence(10), 48, T0 + 20) is None
    assert chunker.push(silence(300), 900, T0 + 21) is None
    chunk = chunker.push(silence(20), 12, T0 + 39.75)
    assert chunk is not None
    assert chunk.samples == 330
    assert chunk.timestamp_ms == int(T0)
    full = chunker.push(silence(320), 960, T0 + 40)
    assert full is not None
    assert full.samples == 320


def test_timestamps_follow_the_stream_clock() -> None:
    pipeline = Pipeline()
    chunks = emitted(pipeline.run(20, 100))
    total = 0
    for chunk in chunks:
        assert isinstance(chunk.timestamp_ms, int)
        assert chunk.timestamp_ms == math.floor(T0 + total * 1000 / OUT_RATE)
        total += chunk.samples
    assert_continuous(chunks)


def test_jittery_capture_times_do_not_leak_into_timestamps() -> None:
    rng = np.random.default_rng(7)
    captures = [T0 + 20 * i + float(rng.uniform(-15, 40)) for i in range(100)]
    pipeline = Pipeline()
    chunks = emitted([pipeline.push(20, capture) for capture in captures])
    assert pipeline.chunker.statistics().reanchors == 0
    total = 0
    for chunk in chunks:
        # Anchored at the first frame's capture time, then driven purely by sample count.
        assert chunk.timestamp_ms == math.floor(captures[0] + total / 16)
        total += chunk.samples


def test_gap_reanchors_the_clock_forward() -> None:
    # Passthrough rates make output index == input index, so timestamps are exact.
    chunker = Chunker(16000, 16000, gap_ms=100)
    chunks = [chunker.push(silence(320), 320, T0 + 20 * i) for i in range(5)]
    resumed = T0 + 100 + 500.25  # frames 0-4 covered 100 ms; then half a second of nothing
    chunks += [chunker.push(silence(320), 320, resumed + 20 * i) for i in range(5)]
    stamps = [chunk.timestamp_ms for chunk in emitted(chunks)]
    base = int(T0)
    assert stamps == [base + 20 * i for i in range(5)] + [
        math.floor(resumed + 20 * i) for i in range(5)
    ]
    assert chunker.statistics().reanchors == 1


def test_gap_with_resampler_keeps_held_back_samples_on_the_old_clock() -> None:
    pipeline = Pipeline()
    before = emitted(pipeline.run(20, 10))
    resumed = T0 + 200 + 1000
    after = emitted(pipeline.run(20, 10, start_ms=resumed))
    assert pipeline.chunker.statistics().reanchors == 1
    # The chunk emitted by the first frame after the gap starts with audio captured before
    # the gap (the resampler's hold-back), so it continues the old clock ...
    assert_continuous(before + after[:1])
    # ... and every later chunk starts inside the new segment, 200 ms of input after the
    # old anchor, so sample index 16 * 200 maps to the resumed capture time.
    position = sum(chunk.samples for chunk in before + after[:1])
    assert after[1].timestamp_ms == math.floor(resumed + (position - 3200) / 16)
    assert after[1].timestamp_ms > after[0].timestamp_ms + duration_ms(after[0]) + 900
    assert_continuous(after[1:])


def test_early_frames_never_move_the_clock_backwards() -> None:
    chunker = Chunker(16000, 16000)
    # The bot writes faster than real time: capture times advance by 5 ms per 20 ms frame.
    chunks = emitted([chunker.push(silence(320), 320, T0 + 5 * i) for i in range(20)])
    assert [chunk.timestamp_ms for chunk in chunks] == [int(T0) + 20 * i for i in range(20)]
    assert chunker.statistics().reanchors == 0


def test_slow_drift_reanchors_once_it_exceeds_the_gap() -> None:
    chunker = Chunker(16000, 16000, gap_ms=100)
    # Each frame arrives 30 ms after the previous one although it holds 20 ms of audio.
    chunks = emitted([chunker.push(silence(320), 320, T0 + 30 * i) for i in range(12)])
    stamps = [chunk.timestamp_ms for chunk in chunks]
    assert chunker.statistics().reanchors == 1
    assert stamps == sorted(stamps)
    # Frame i is predicted at +20i ms but arrives at +30i ms; frame 11 is the first to be
    # more than 100 ms late (110 ms), so the clock jumps to its capture time.
    assert stamps[:11] == [int(T0) + 20 * i for i in range(11)]
    assert stamps[11] == int(T0) + 330


def test_flush_returns_the_remainder_with_its_timestamp_and_allows_continuing() -> None:
    pipeline = Pipeline()
    chunks = emitted(pipeline.run(10, 5))  # 50 ms in: chunks at 20 and 40 ms, 10 ms held
    tail = pipeline.chunker.flush()
    assert tail is not None
    assert tail.samples == 160
    assert pipeline.chunker.flush() is None
    assert_continuous([*chunks, tail])

    # The stream carries on seamlessly after a flush.
    more = emitted(pipeline.run(10, 4, start_ms=T0 + 50))
    assert len(more) == 2
    assert_continuous([*chunks, tail, *more])


def test_flush_of_resampler_tail_completes_the_stream() -> None:
    pipeline = Pipeline()
    chunks = emitted(pipeline.run(20, 10))
    last = pipeline.chunker.push(pipeline.resampler.flush(), 0, T0 + 200)
    assert last is None  # no input time passed, and the tail is far below the held limit
    tail = pipeline.chunker.flush()
    assert tail is not None
    chunks.append(tail)
    assert sum(chunk.samples for chunk in chunks) == 3200
    assert_continuous(chunks)


def test_held_output_is_bounded_even_without_input_time() -> None:
    chunker = Chunker(IN_RATE, OUT_RATE)
    results = [chunker.push(silence(320), 0, T0) for _ in range(8)]
    assert [chunk is not None for chunk in results] == [False, False, False, True] * 2
    assert all(chunk.samples == 1280 for chunk in emitted(results))


def test_flush_with_nothing_held() -> None:
    chunker = Chunker(IN_RATE, OUT_RATE)
    assert chunker.flush() is None
    assert chunker.statistics() == ChunkerStatistics(chunks=0, samples_out=0, reanchors=0)


def test_statistics() -> None:
    pipeline = Pipeline()
    chunks = emitted(pipeline.run(20, 10))
    chunks += emitted(pipeline.run(20, 10, start_ms=T0 + 5000))
    stats = pipeline.chunker.statistics()
    assert stats == ChunkerStatistics(
        chunks=20, samples_out=sum(chunk.samples for chunk in chunks), reanchors=1
    )


def test_invalid_input_is_rejected() -> None:
    chunker = Chunker(IN_RATE, OUT_RATE)
    with pytest.raises(ValueError, match="even"):
        chunker.push(b"\x00", 1, T0)
    with pytest.raises(ValueError):
        chunker.push(b"", -1, T0)
    with pytest.raises(ValueError):
        Chunker(0, 16000)
    with pytest.raises(ValueError):
        Chunker(IN_RATE, OUT_RATE, chunk_ms=0)


@PROPERTY
@given(
    frames=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=3000), st.floats(min_value=-30, max_value=300)
        ),
        min_size=1,
        max_size=60,
    )
)
def test_random_frames_keep_every_invariant(frames: list[tuple[int, float]]) -> None:
    resampler = Resampler(IN_RATE, OUT_RATE, "fastest")
    chunker = Chunker(IN_RATE, OUT_RATE, gap_ms=100)
    chunks: list[Chunk] = []
    produced = 0
    in_time_ms = 0.0
    # Reference model of the emission rule, in input samples (20 ms = 960).
    accumulated = 0
    held = 0
    for samples, lateness in frames:
        out = resampler.process(silence(samples))
        produced += len(out) // 2
        chunk = chunker.push(out, samples, T0 + in_time_ms + lateness)
        in_time_ms += samples / 48

        accumulated += samples
        boundary = accumulated >= 960
        accumulated %= 960
        held += len(out) // 2
        should_emit = held > 0 and (boundary or held >= 4 * 320)
        assert (chunk is not None) == should_emit
        if chunk is not None:
            assert chunk.samples == held
            chunks.append(chunk)
            held = 0
        # Bounded: what stays behind is less than a span of output plus the hold-back.
        assert held < 320 + 20
    tail = chunker.flush()
    if tail is not None:
        chunks.append(tail)
    assert sum(c.samples for c in chunks) == produced
    for prev, nxt in itertools.pairwise(chunks):
        # Re-anchoring only ever jumps forward; without it the clock is continuous.
        assert nxt.timestamp_ms >= prev.timestamp_ms + duration_ms(prev) - 1
    if chunker.statistics().reanchors == 0:
        assert_continuous(chunks)


def test_a_rate_change_continues_the_clock_where_the_output_ended() -> None:
    chunker = Chunker(16000, 16000)
    first = chunker.push(silence(320), 320, T0)
    assert first is not None and first.timestamp_ms == T0
    chunker.set_rate(8000)
    # Arrival jitter at the switch (3 ms late) opens no crack in the timestamps.
    after = chunker.push(silence(160), 160, T0 + 23)
    assert after is not None and after.timestamp_ms == T0 + 20
    assert chunker.statistics() == ChunkerStatistics(chunks=2, samples_out=480, reanchors=0)


def test_a_rate_change_after_a_gap_starts_at_the_capture_time() -> None:
    chunker = Chunker(16000, 16000, gap_ms=100)
    chunker.push(silence(320), 320, T0)
    chunker.set_rate(8000)
    after = chunker.push(silence(160), 160, T0 + 20 + 101)
    assert after is not None and after.timestamp_ms == T0 + 121


def test_a_rate_change_never_moves_a_timestamp_before_the_previous_end() -> None:
    chunker = Chunker(16000, 16000)
    chunker.push(silence(320), 320, T0)
    chunker.set_rate(8000)
    # Early (a bot writing ahead of real time): still after the previous chunk.
    after = chunker.push(silence(160), 160, T0 + 5)
    assert after is not None and after.timestamp_ms == T0 + 20


def test_a_rate_change_with_output_held_is_refused() -> None:
    chunker = Chunker(16000, 16000)
    assert chunker.push(silence(100), 100, T0) is None
    with pytest.raises(ValueError, match="flush"):
        chunker.set_rate(8000)
    assert chunker.flush() is not None
    chunker.set_rate(8000)
    with pytest.raises(ValueError):
        chunker.set_rate(0)
