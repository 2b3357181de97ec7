"""Groups resampled audio into outgoing chunks with capture timestamps.

Sans-I/O: the caller pushes, per input frame, whatever the resampler returned for it plus
the frame's input length and capture time; the chunker decides when a chunk is due and what
time its first sample was captured.

Chunk boundaries follow *input* time: a chunk is due once ``chunk_ms`` of input has been
pushed, and it takes all output held at that moment. The resampler's hold-back therefore
rides along in the next chunk instead of delaying every chunk by a whole chunk. A span that
ends with nothing held (the resampler still warming up) sends nothing, and its output waits
for the next boundary: sending it as soon as it appeared would put a sliver of a message
off the grid, and make the rest of that span a short one.

Timestamps come from a stream clock rather than from each frame's capture time, so jitter
in the caller's clock does not leak into the output. The resampler is time-aligned (output
sample ``j`` is input position ``j * in_rate / out_rate``), so an output sample's capture
time follows from its index alone. The clock only jumps, forwards, when the input has a gap
longer than ``gap_ms``.

A stream's input may change rate (`set_rate`, after a `flush`): the same chunker carries on
at the new rate, its clock continuing where its output ended unless the input had a gap.

A frame larger than a chunk is not split: it comes out as one correspondingly larger chunk.
Callers that want every chunk one span long cut their input at `Chunker.samples_to_boundary`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sidecar.pcm import SAMPLE_BYTES

GAP_MS: Final = 100.0
"""Input later than this (against the stream clock) is a gap, not jitter."""

# Output held without any input completing a chunk (only possible when callers push output
# with ``in_samples=0``, e.g. a resampler flush) is released once it reaches this many chunks.
_MAX_HELD_CHUNKS: Final = 4


@dataclass(frozen=True, slots=True)
class Chunk:
    pcm: bytes
    """s16le mono at the output rate."""
    timestamp_ms: int
    """Unix ms capture time of the chunk's first sample (floored)."""
    samples: int
    """``len(pcm) // SAMPLE_BYTES``."""


@dataclass(frozen=True, slots=True)
class ChunkerStatistics:
    chunks: int
    samples_out: int
    reanchors: int


@dataclass(frozen=True, slots=True)
class _Anchor:
    """Input position ``in_pos`` (samples since stream start) was captured at ``capture_ms``."""

    in_pos: int
    capture_ms: float
    ticks: int
    """``capture_ms`` in ticks of ``1 / (in_rate * out_rate)`` ms, floored. Any output
    sample lies a whole number of ticks from an anchor, so flooring the anchor leaves every
    floored timestamp exactly as the exact sum would give it."""


class Chunker:
    def __init__(
        self, in_rate: int, out_rate: int, chunk_ms: int = 20, gap_ms: float = GAP_MS
    ) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        if chunk_ms <= 0:
            raise ValueError(f"chunk_ms must be positive, got {chunk_ms}")
        if gap_ms < 0:
            raise ValueError(f"gap_ms must not be negative, got {gap_ms}")
        self._out_rate = out_rate
        self._chunk_ms = chunk_ms
        self._gap_ms = gap_ms
        self._in_rate = in_rate
        self._ticks_per_ms = in_rate * out_rate
        # Input accounting is kept in units of samples * 1000 so spans such as 20 ms at
        # 11025 Hz (220.5 samples) stay exact.
        self._span = in_rate * chunk_ms
        self._accumulated = 0
        self._max_held = _MAX_HELD_CHUNKS * out_rate * chunk_ms // 1000
        # Joined only when a chunk leaves: a chunk made of one push costs no copy at all.
        self._held_parts: list[bytes] = []
        self._held = 0  # samples in _held_parts
        # Positions since the stream (or its current rate) started.
        self._in_pos = 0
        self._out_pos = 0  # index of the first held output sample
        self._out_before = 0  # output samples at earlier rates
        # Oldest first; older anchors are kept only while held samples still precede the
        # newest one.
        self._anchors: list[_Anchor] = []
        self._end_ms: float | None = None
        """Where the newest chunk ends on the stream clock; None before the first."""
        self._chunks = 0
        self._reanchors = 0

    def push(self, pcm_out: bytes, in_samples: int, capture_ms: float) -> Chunk | None:
        """Take the resampler output for one input frame; return a chunk if one is due.

        ``capture_ms`` is the unix ms capture time of the frame's first input sample.
        """
        if len(pcm_out) % SAMPLE_BYTES:
            raise ValueError(f"s16le PCM must have an even byte count, got {len(pcm_out)}")
        if in_samples < 0:
            raise ValueError(f"in_samples must not be negative, got {in_samples}")
        self._observe_capture(capture_ms)
        self._in_pos += in_samples
        if pcm_out:
            self._held_parts.append(pcm_out)
            self._held += len(pcm_out) // SAMPLE_BYTES

        self._accumulated += in_samples * 1000
        boundary = self._accumulated >= self._span
        if boundary:
            # Carry only the part of a span; a huge frame must not leave a debt that would
            # make the following pushes emit tiny chunks.
            self._accumulated %= self._span
        if self._held and (boundary or self._held >= self._max_held):
            return self._emit()
        return None

    def set_rate(self, in_rate: int) -> None:
        """The input goes on at `in_rate` (call `flush` first: nothing may be held).

        The stream clock carries on: the first input at the new rate starts where the
        output so far ends, unless it was captured over ``gap_ms`` later than that (then
        at its capture time), so arrival jitter opens no crack (nor overlap) at the
        switch; and no timestamp ever goes back before that end.
        """
        if in_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate}")
        if self._held:
            raise ValueError("flush the chunker before changing its rate")
        self._in_rate = in_rate
        self._ticks_per_ms = in_rate * self._out_rate
        self._span = in_rate * self._chunk_ms
        self._accumulated = 0
        self._in_pos = 0
        self._out_before += self._out_pos
        self._out_pos = 0
        self._anchors.clear()

    def samples_to_boundary(self) -> int:
        """Input samples that complete the current chunk span (at least 1).

        The chunk grid: a caller that cuts its input here, never pushing more in one go,
        gets chunks that each cover one span of input, without drift, also when a span is
        not a whole number of input samples.
        """
        return -(-(self._span - self._accumulated) // 1000)

    def input_end_ms(self) -> float | None:
        """Capture time, on the stream clock, just after the last input sample pushed."""
        if not self._anchors:
            return None
        newest = self._anchors[-1]
        return newest.capture_ms + (self._in_pos - newest.in_pos) * 1000 / self._in_rate

    def flush(self) -> Chunk | None:
        """Return whatever is held (end of stream). The stream clock keeps running, so the
        chunker can carry on if more audio follows."""
        self._accumulated = 0
        return self._emit() if self._held else None

    def statistics(self) -> ChunkerStatistics:
        return ChunkerStatistics(
            chunks=self._chunks,
            samples_out=self._out_before + self._out_pos,
            reanchors=self._reanchors,
        )

    def _anchor(self, capture_ms: float) -> _Anchor:
        numerator, denominator = capture_ms.as_integer_ratio()
        ticks = numerator * self._ticks_per_ms // denominator
        return _Anchor(self._in_pos, capture_ms, ticks)

    def _observe_capture(self, capture_ms: float) -> None:
        if not self._anchors:
            # The first input (at this rate): it continues the output unless it came late.
            if self._end_ms is not None and capture_ms - self._end_ms <= self._gap_ms:
                capture_ms = self._end_ms
            self._anchors.append(self._anchor(capture_ms))
            return
        newest = self._anchors[-1]
        predicted = newest.capture_ms + (self._in_pos - newest.in_pos) * 1000 / self._in_rate
        # Frames arriving early (bot writing faster than real time) or with small jitter keep
        # the predicted clock; only a real gap moves it, and only forwards.
        if capture_ms - predicted > self._gap_ms:
            if newest.in_pos == self._in_pos:
                self._anchors[-1] = self._anchor(capture_ms)
            else:
                self._anchors.append(self._anchor(capture_ms))
            self._reanchors += 1

    def _timestamp_of_output(self, out_index: int) -> int:
        # Positions on the input timeline, scaled by out_rate so they stay integers.
        scaled_pos = out_index * self._in_rate
        anchors = self._anchors
        i = len(anchors) - 1
        while i > 0 and anchors[i].in_pos * self._out_rate > scaled_pos:
            i -= 1
        anchor = anchors[i]
        ticks = anchor.ticks + (scaled_pos - anchor.in_pos * self._out_rate) * 1000
        return ticks // self._ticks_per_ms

    def _emit(self) -> Chunk:
        timestamp = self._timestamp_of_output(self._out_pos)
        # Never before the previous chunk's end. At one rate this cannot trigger with
        # forward-only anchors (kept so the guarantee does not hinge on it); after a rate
        # change it keeps a clock anchored on the first frame's rounding from going back.
        if self._end_ms is not None and timestamp < int(self._end_ms):
            timestamp = int(self._end_ms)
        pcm = b"".join(self._held_parts)
        samples = self._held
        self._held_parts.clear()
        self._held = 0
        self._out_pos += samples
        self._end_ms = timestamp + samples * 1000.0 / self._out_rate
        self._chunks += 1
        self._drop_stale_anchors()
        return Chunk(pcm=pcm, timestamp_ms=timestamp, samples=samples)

    def _drop_stale_anchors(self) -> None:
        scaled_pos = self._out_pos * self._in_rate
        while len(self._anchors) > 1 and self._anchors[1].in_pos * self._out_rate <= scaled_pos:
            del self._anchors[0]
