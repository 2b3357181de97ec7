"""One captured stream on its way up: frames -> resample -> chunk (sans-I/O).

A stream outlives bot connections: a bot that reconnects continues the same
resampler and stream clock, so its listener hears one continuous stream.

Guarantees, whatever the bot sends:
- timestamps never go backwards, and consecutive chunks are spaced by the
  audio they carry unless the input had a real gap (the clock then jumps
  forward); a change of input rate continues the same clock;
- after `flush`, the stream's output is exactly `round(n * out / in)` samples
  for every run of `n` input samples at one rate `in`;
- no chunk carries much more than `chunk_ms` of audio, even when a bot (or raw
  input, which arrives in whatever pieces the socket delivers) writes long frames;
- whatever the frame sizes, every chunk carries `out * chunk_ms / 1000` samples
  to within one, except the one a flush or drain sends and the first after the
  start, a flush or a rate change (short by the resampler's warm-up). Within
  `ceil(out / in)` when upsampling a span of fractional input samples, which
  no AudioSocket rate has.
"""

from __future__ import annotations

import math

from sidecar.chunker import GAP_MS, Chunk, Chunker
from sidecar.frames import Audio
from sidecar.pcm import SAMPLE_BYTES
from sidecar.resample import Quality, Resampler


class CaptureStream:
    def __init__(
        self,
        out_rate: int,
        chunk_ms: int = 20,
        quality: Quality = "medium",
        gap_ms: float = GAP_MS,
    ) -> None:
        self.out_rate = out_rate
        self.chunk_ms = chunk_ms
        self.quality = quality
        self.gap_ms = gap_ms
        self._resampler: Resampler | None = None
        # One for the stream's life: it carries its clock over a change of rate.
        self._chunker: Chunker | None = None
        self._last_capture_ms = 0.0
        self.samples_in = 0
        self.samples_out = 0
        # Silence added by `fill`, at the output rate.
        self.samples_filled = 0

    @property
    def in_rate(self) -> int | None:
        return self._resampler.in_rate if self._resampler else None

    @property
    def input_end_ms(self) -> float | None:
        """Where, on the stream clock, the input so far ends; None before any."""
        return self._chunker.input_end_ms() if self._chunker else None

    @property
    def to_boundary_ms(self) -> float:
        """Input time that completes the chunk being gathered."""
        if self._chunker is None or self._resampler is None:
            return float(self.chunk_ms)
        return self._chunker.samples_to_boundary() * 1000.0 / self._resampler.in_rate

    def push(self, frame: Audio, arrival_ms: float) -> list[Chunk]:
        """`arrival_ms`: unix ms at which the frame's last sample was read."""
        self.samples_in += frame.samples
        return self._push(frame, arrival_ms)

    def fill(self, spans: int, arrival_ms: float) -> list[Chunk]:
        """Silence, as if the bot had written it: up to the next chunk boundary, and
        `spans - 1` whole chunks after it, the last of it read at `arrival_ms`.

        It takes the bot's own way (same resampler, chunker and clock), so the
        bot's last samples held in the resampler come out in order, the
        stream's clock runs on unbroken, and the bot's next frame continues it.
        Nothing happens before the stream's first frame: there is no rate yet.
        """
        if self._resampler is None or self._chunker is None or spans <= 0:
            return []
        rate = self._resampler.in_rate
        # Whole multiples of this give a whole number of output samples, so
        # `samples_filled` is exact and the bot's own audio, resampled, is
        # what remains of the output (the first piece runs past the boundary
        # by less than it; the chunker's grid carries that over).
        unit = rate // math.gcd(rate, self.out_rate)
        span = self._chunker.samples_to_boundary() + (spans - 1) * rate * self.chunk_ms // 1000
        n = -(-span // unit) * unit
        self.samples_filled += n * self.out_rate // rate
        # Where the silence ends when it continues the input exactly. Placed by
        # `arrival_ms` instead, it would start up to a chunk after the input
        # ends (the chunks due end at the last boundary passed), which with
        # --chunk-ms over the chunker's gap rule moves the clock on. Only a fill
        # capped at its catch-up (far behind: a stall) starts from now, and
        # there the clock is meant to move on over what was not made up.
        end = self.input_end_ms
        assert end is not None
        contiguous = end + n * 1000.0 / rate
        if arrival_ms - contiguous < self.chunk_ms:
            arrival_ms = contiguous
        return self._push(Audio(rate, bytes(SAMPLE_BYTES * n)), arrival_ms)

    def _push(self, frame: Audio, arrival_ms: float) -> list[Chunk]:
        chunks: list[Chunk] = []
        rate = frame.rate
        samples = frame.samples
        start_ms = arrival_ms - samples * 1000.0 / rate
        resampler, chunker = self._resampler, self._chunker
        if resampler is None or chunker is None:
            resampler = self._resampler = Resampler(rate, self.out_rate, self.quality)
            chunker = self._chunker = Chunker(rate, self.out_rate, self.chunk_ms, self.gap_ms)
        elif resampler.in_rate != rate:
            chunks += self.flush()
            resampler = self._resampler = Resampler(rate, self.out_rate, self.quality)
            chunker.set_rate(rate)
        # The chunker never splits a frame and sends all it holds once a chunk's
        # worth of input is in, so input that straddles a chunk boundary would
        # make a long message (up to twice --chunk-ms; a 680 ms frame, one of
        # 680 ms). Cut the input where the chunker's grid says the next chunk
        # ends: it counts spans exactly, so a span of fractional input samples
        # (25 ms at 44.1 kHz) cannot drift away from where we cut. Bots writing
        # whole chunk-sized frames never take the slicing path.
        pcm = frame.pcm
        offset = 0
        while offset < samples:
            take = min(samples - offset, chunker.samples_to_boundary())
            if take == samples:
                part = pcm
            else:
                part = pcm[SAMPLE_BYTES * offset : SAMPLE_BYTES * (offset + take)]
            capture_ms = start_ms + offset * 1000.0 / rate
            self._last_capture_ms = capture_ms
            chunk = chunker.push(resampler.process(part), take, capture_ms)
            if chunk is not None:
                self.samples_out += chunk.samples
                chunks.append(chunk)
            offset += take
        return chunks

    def drain(self) -> list[Chunk]:
        """Emit what is chunked so far but keep the resampler's state.

        For a pause that may be followed by more of the same stream (a bot
        reconnecting): nothing said waits for the bot to come back, and the
        continuation has no seam. The few samples inside the resampler come out
        with the next audio or on `flush`.
        """
        if self._chunker is None:
            return []
        chunk = self._chunker.flush()
        if chunk is None:
            return []
        self.samples_out += chunk.samples
        return [chunk]

    def flush(self) -> list[Chunk]:
        """End of the stream (or of a rate): emit everything still held."""
        if self._resampler is None or self._chunker is None:
            return []
        chunks = []
        tail = self._resampler.flush()
        # The capture time of a push without input only feeds gap detection;
        # the newest frame's is never a gap.
        held = self._chunker.push(tail, 0, self._last_capture_ms)
        for chunk in (held, self._chunker.flush()):
            if chunk is not None:
                self.samples_out += chunk.samples
                chunks.append(chunk)
        return chunks
