"""One captured stream on its way up: frames -> resample -> chunk (sans-I/O).

A stream outlives bot connections: a bot that reconnects continues the same
resampler and stream clock, so its listener hears one continuous stream.
"""

from __future__ import annotations

from sidecar.chunker import Chunk, Chunker
from sidecar.frames import Audio
from sidecar.resample import Quality, Resampler


class CaptureStream:
    def __init__(self, out_rate: int, chunk_ms: int = 20, quality: Quality = "medium") -> None:
        self.out_rate = out_rate
        self.chunk_ms = chunk_ms
        self.quality = quality
        self._resampler: Resampler | None = None
        self._chunker: Chunker | None = None
        self._last_ms = 0.0
        self.samples_in = 0

    @property
    def in_rate(self) -> int | None:
        return self._resampler.in_rate if self._resampler else None

    def push(self, frame: Audio, arrival_ms: float) -> list[Chunk]:
        """`arrival_ms`: unix ms at which the frame's last sample was read."""
        chunks: list[Chunk] = []
        if self._resampler is None or self._resampler.in_rate != frame.rate:
            chunks += self.flush()
            self._resampler = Resampler(frame.rate, self.out_rate, self.quality)
            self._chunker = Chunker(frame.rate, self.out_rate, self.chunk_ms)
        assert self._chunker is not None
        self.samples_in += frame.samples
        capture_ms = arrival_ms - frame.samples * 1000.0 / frame.rate
        out = self._resampler.process(frame.pcm)
        chunk = self._chunker.push(out, frame.samples, capture_ms)
        if chunk is not None:
            chunks.append(self._monotonic(chunk))
        return chunks

    def flush(self) -> list[Chunk]:
        """End of the stream (or of a rate): emit everything still held."""
        if self._resampler is None or self._chunker is None:
            return []
        chunks = []
        tail = self._resampler.flush()
        for chunk in (self._chunker.push(tail, 0, self._last_ms), self._chunker.flush()):
            if chunk is not None:
                chunks.append(self._monotonic(chunk))
        return chunks

    def _monotonic(self, chunk: Chunk) -> Chunk:
        # A new rate starts a new chunker clock; never let it run backwards.
        if chunk.timestamp_ms < int(self._last_ms):
            chunk = Chunk(chunk.pcm, int(self._last_ms), chunk.samples)
        self._last_ms = chunk.timestamp_ms + chunk.samples * 1000.0 / self.out_rate
        return chunk
