"""Live statistics of the audio messages a server receives (sans-I/O).

Fed each message with its arrival time and what the dialect's server session
made of it; reports message counts and rate, how much audio arrived versus
wall time, gaps and overlaps in the timestamps (each chunk should start where
the previous one ended), and RFC 3550 interarrival jitter: how irregularly
messages arrive relative to their timestamps; and how much of the audio was
digital silence (a quiet bot, the sidecar's fill on). Where the wire carries no
timestamp (Vonage), the audio's own time stands in: no gaps can show, jitter
still does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sidecar.dialects.base import MIXED, Invalid, Wire
from sidecar.dialects.server import AudioIn, ServerIncoming
from sidecar.pcm import SAMPLE_BYTES

# `timestamp_ms` is whole milliseconds, so consecutive chunks may look 1 ms off.
DEFAULT_GAP_TOLERANCE_MS = 2.0
_JITTER_GAIN = 1 / 16  # RFC 3550, section 6.4.1


@dataclass(slots=True)
class _Stream:
    """One audio stream: the mixed audio, or one participant."""

    next_ts_ms: float | None = None
    transit_ms: float | None = None
    jitter_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    messages: int
    by_trigger: dict[str, int]
    violations: int
    violations_by_code: dict[str, int]
    messages_per_s: float
    """Over the interval since the previous snapshot."""
    audio_s: float
    silent_s: float
    """Of `audio_s`, the chunks that were all zeros (the sidecar's fill, say)."""
    realtime_factor: float
    """Audio seconds per wall second over the span the audio arrived in (1.0 = live)."""
    sample_rates: list[int]
    gaps: int
    max_gap_ms: float
    overlaps: int
    jitter_ms: float

    def describe(self) -> str:
        rates = "/".join(str(r) for r in self.sample_rates) or "-"
        return (
            f"{self.messages} msgs ({self.messages_per_s:.1f}/s), "
            f"audio {self.audio_s:.2f} s at {rates} Hz ({self.realtime_factor:.2f}x real time, "
            f"{self.silent_s:.2f} s silent), "
            f"timestamp gaps {self.gaps} (max {self.max_gap_ms:.0f} ms), "
            f"overlaps {self.overlaps}, jitter {self.jitter_ms:.1f} ms, "
            f"violations {self.violations}"
        )


@dataclass(slots=True)
class Traffic:
    gap_tolerance_ms: float = DEFAULT_GAP_TOLERANCE_MS
    messages: int = 0
    by_trigger: Counter[str] = field(default_factory=Counter)
    violations: int = 0
    violations_by_code: Counter[str] = field(default_factory=Counter)
    audio_s: float = 0.0
    silent_s: float = 0.0
    sample_rates: set[int] = field(default_factory=set)
    gaps: int = 0
    max_gap_ms: float = 0.0
    overlaps: int = 0
    first_arrival_s: float | None = None
    first_audio_s: float = 0.0
    """The first chunk's duration: it was captured before it arrived."""
    audio_span_s: tuple[float, float] | None = None
    """When the first and the latest audio arrived."""
    _streams: dict[str, _Stream] = field(default_factory=dict)
    _last_snapshot: tuple[float, int] | None = None

    def received(self, arrival_s: float, message: Wire, heard: Sequence[ServerIncoming]) -> None:
        """Count one message and what it meant; `arrival_s` is any monotonic clock in seconds."""
        self.messages += 1
        if self.first_arrival_s is None:
            self.first_arrival_s = arrival_s
        self.by_trigger[kind_of(message)] += 1
        for item in heard:
            if isinstance(item, Invalid):
                self.violations += 1
                self.violations_by_code[item.error.code] += 1
            elif isinstance(item, AudioIn):
                key = "mixed" if item.stream == MIXED else f"participant:{item.stream}"
                self._audio(key, arrival_s, item.pcm, item.rate, item.timestamp_ms)

    def _audio(
        self, key: str, arrival_s: float, chunk: bytes, rate: int, stamp: int | None
    ) -> None:
        duration_ms = len(chunk) / SAMPLE_BYTES * 1000.0 / rate
        if self.audio_span_s is None:
            self.first_audio_s = duration_ms / 1000.0
            self.audio_span_s = (arrival_s, arrival_s)
        self.audio_span_s = (self.audio_span_s[0], arrival_s)
        self.audio_s += duration_ms / 1000.0
        if not any(chunk):
            self.silent_s += duration_ms / 1000.0
        self.sample_rates.add(rate)
        stream = self._streams.setdefault(key, _Stream())
        ts_ms = (stream.next_ts_ms or 0.0) if stamp is None else float(stamp)
        if stream.next_ts_ms is not None:
            gap = ts_ms - stream.next_ts_ms
            if gap > self.gap_tolerance_ms:
                self.gaps += 1
                self.max_gap_ms = max(self.max_gap_ms, gap)
            elif gap < -self.gap_tolerance_ms:
                self.overlaps += 1
        stream.next_ts_ms = ts_ms + duration_ms
        transit = arrival_s * 1000.0 - ts_ms
        if stream.transit_ms is not None:
            d = abs(transit - stream.transit_ms)
            stream.jitter_ms += (d - stream.jitter_ms) * _JITTER_GAIN
        stream.transit_ms = transit

    @property
    def jitter_ms(self) -> float:
        return max((s.jitter_ms for s in self._streams.values()), default=0.0)

    def snapshot(self, now_s: float) -> Snapshot:
        """Current figures; the message rate covers the time since the last snapshot."""
        if self._last_snapshot is None:
            since, count = (self.first_arrival_s or now_s), 0
        else:
            since, count = self._last_snapshot
        self._last_snapshot = (now_s, self.messages)
        interval = now_s - since
        rate = (self.messages - count) / interval if interval > 0 else 0.0
        first, last = self.audio_span_s or (now_s, now_s)
        wall = last - first + self.first_audio_s
        return Snapshot(
            messages=self.messages,
            by_trigger=dict(self.by_trigger),
            violations=self.violations,
            violations_by_code={str(k): v for k, v in self.violations_by_code.items()},
            messages_per_s=round(rate, 2),
            audio_s=round(self.audio_s, 3),
            silent_s=round(self.silent_s, 3),
            realtime_factor=round(self.audio_s / wall, 3) if wall > 0 else 0.0,
            sample_rates=sorted(self.sample_rates),
            gaps=self.gaps,
            max_gap_ms=round(self.max_gap_ms, 1),
            overlaps=self.overlaps,
            jitter_ms=round(self.jitter_ms, 2),
        )


class _Names(msgspec.Struct):
    trigger: Any = None
    event: Any = None
    action: Any = None
    type: Any = None
    user_audio_chunk: Any = None
    """ElevenLabs' audio names itself by its one field, no `type` (by design)."""


_names = msgspec.json.Decoder(_Names)
BINARY = "(binary)"
UNNAMED = "(invalid)"


def kind_of(message: Wire) -> str:
    """What a message calls itself, for counting: the field that names a JSON
    message in the dialects (`trigger`, `event`, `action`, `type`, or
    ElevenLabs' `user_audio_chunk`), `(binary)` for a binary one, `(invalid)`
    for text that names nothing."""
    if isinstance(message, bytes):
        return BINARY
    try:
        names = _names.decode(message)
    except (msgspec.MsgspecError, RecursionError, UnicodeError):
        return UNNAMED
    for name in (names.trigger, names.event, names.action, names.type):
        if isinstance(name, str):
            return name
    if isinstance(names.user_audio_chunk, str):
        return "user_audio_chunk"
    return UNNAMED
