"""When the line is quiet, it keeps its clock: silence fill on the mixed stream (sans-I/O).

Telephone carriers send audio every 20 ms for as long as a call lasts, and
servers are built on that: agents with server-side VAD (OpenAI Realtime,
Deepgram, Gemini Live, ElevenLabs) end a user's turn on the silence after
speech, and Twilio samples count `media` messages as the call's clock. Many
bots write nothing while nobody speaks. So once the bot has written nothing
for a hold (longer than ordinary jitter), the stream is filled with silence
on its chunk grid, paced in real time, from where the bot's audio ended:
the stream clock runs on as if the line had never paused. The bot's next
frame ends the fill at once; nothing is queued ahead of it, since silence is
only ever made for time that has already passed.

This module decides *when* and *how much*; `CaptureStream.fill` makes the
silence, and `Uplink.serve_fill` is the timer, which runs only in gaps.
Times are ms on the caller's clock (the one the capture's arrivals use).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

HOLD_MS: Final = 100
"""Default wait after the bot's last audio before filling: above a bot's jitter."""
HOLD_RANGE_MS: Final = range(20, 5001)
# A fill that finds more than this behind it (the process stalled, the link
# was down) does not make up the past in one burst: the stream clock jumps
# forward over the rest, as it does for any real gap.
CATCH_UP_CHUNKS: Final = 3


@dataclass(frozen=True, slots=True)
class FillStatistics:
    fills: int
    """Gaps filled (times the fill started)."""


class Filler:
    """Decides when the mixed stream needs silence, and how many chunks of it."""

    def __init__(self, hold_ms: float, chunk_ms: int) -> None:
        if hold_ms <= 0 or chunk_ms <= 0:
            raise ValueError(f"hold and chunk must be positive, got {hold_ms} and {chunk_ms}")
        self.hold_ms = hold_ms
        self.chunk_ms = chunk_ms
        self._max_spans = math.ceil(hold_ms / chunk_ms) + CATCH_UP_CHUNKS
        # Arrival of the bot's newest frame; None before its first: a stream
        # with no audio yet has no clock to keep (and no rate).
        self._heard: float | None = None
        self._filling = False
        self._muted = False
        self._stopped = False
        self._fills = 0

    @property
    def filling(self) -> bool:
        return self._filling and self.active

    @property
    def active(self) -> bool:
        """Whether silence may be due at all: a muted agent gets nothing."""
        return self._heard is not None and not self._muted and not self._stopped

    def heard(self, arrival_ms: float) -> None:
        """A bot frame arrived: the fill, if running, ends here."""
        self._heard = arrival_ms
        self._filling = False

    def ended(self) -> None:
        """The bot declared the end of its stream (Terminate): nothing is
        filled until it writes again, when the fill's hold starts over."""
        self._heard = None
        self._filling = False

    def mute(self, muted: bool) -> None:
        """Mute wins over fill: while muted, no silence is made either."""
        self._muted = muted
        self._filling = False

    def stop(self) -> None:
        """The stream is ending for good (the sidecar stops)."""
        self._stopped = True

    def deadline(self, end_ms: float, to_boundary_ms: float) -> float | None:
        """When `due` may next return something; None: not until `heard` or unmute.

        `end_ms`: where the stream's input ends on its clock; `to_boundary_ms`:
        input time that completes the chunk being gathered.
        """
        if not self.active:
            return None
        assert self._heard is not None
        if self._filling:
            return end_ms + to_boundary_ms
        # A bot writing ahead of real time has covered the line until end_ms.
        return max(self._heard, end_ms) + self.hold_ms

    def due(self, now_ms: float, end_ms: float, to_boundary_ms: float) -> int:
        """Chunks of silence to add now: the one being gathered first, then
        whole ones, each only once its time has passed."""
        if not self.active:
            return 0
        assert self._heard is not None
        if not self._filling:
            if now_ms < max(self._heard, end_ms) + self.hold_ms:
                return 0
            self._filling = True
            self._fills += 1
        first_end = end_ms + to_boundary_ms
        if now_ms < first_end:
            return 0
        spans = 1 + math.floor((now_ms - first_end) / self.chunk_ms)
        return min(spans, self._max_spans)

    def statistics(self) -> FillStatistics:
        return FillStatistics(self._fills)
