"""Pause the bot's playback while the meeting is loud (sans-I/O).

Attendee's `pause_threshold`: whenever a frame of the meeting's mixed audio
has an RMS amplitude at or above the threshold (int16 units, 0-32767), the
bot's realtime audio output pauses for 800 ms, so the bot does not talk over
people. Every loud frame extends the pause. Paused audio is held, not
dropped: playback resumes where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from sidecar.pcm import SAMPLE_BYTES, SAMPLE_DTYPE

HOLD_S: Final = 0.8


@dataclass(frozen=True, slots=True)
class GateStatistics:
    pauses: int
    """Times playback went from playing to paused."""
    paused_s: float
    """Total time paused (a pause still running counts up to its end)."""


MAX_THRESHOLD = 32767
"""The largest RMS a 16-bit signal can have."""


class PauseGate:
    def __init__(self, threshold: int, hold_s: float = HOLD_S) -> None:
        if not 0 <= threshold <= MAX_THRESHOLD:
            raise ValueError(f"pause threshold must be 0-{MAX_THRESHOLD}, not {threshold}")
        self.threshold = threshold
        self.hold_s = hold_s
        self._until = -math.inf
        self._pauses = 0
        self._paused_s = 0.0

    def observe(self, pcm: bytes, now: float) -> bool:
        """A frame of the meeting's s16le audio, read at `now` (seconds); True if loud."""
        n = len(pcm) // SAMPLE_BYTES
        if n == 0:
            return False
        samples = np.frombuffer(pcm, dtype=SAMPLE_DTYPE, count=n).astype(np.float64)
        if math.sqrt(float(np.dot(samples, samples)) / n) < self.threshold:
            return False
        until = now + self.hold_s
        if now >= self._until:
            self._pauses += 1
        self._paused_s += until - max(now, self._until)
        self._until = until
        return True

    def paused(self, now: float) -> bool:
        return now < self._until

    def statistics(self) -> GateStatistics:
        return GateStatistics(self._pauses, self._paused_s)
