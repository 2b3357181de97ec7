"""PauseGate: Attendee's pause_threshold, on RMS of the meeting's frames."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar.gate import HOLD_S, PauseGate


def frame(rms: float, samples: int = 960) -> bytes:
    """A square wave: its RMS is its amplitude."""
    wave = np.where(np.arange(samples) % 2, rms, -rms)
    return np.rint(wave).astype("<i2").tobytes()


def test_loud_frames_pause_and_each_one_extends_the_pause() -> None:
    gate = PauseGate(1000)
    assert not gate.observe(frame(999), 0.0)
    assert not gate.paused(0.0)
    assert gate.observe(frame(1000), 1.0)  # "at or above"
    assert gate.paused(1.0 + HOLD_S - 0.001)
    assert not gate.paused(1.0 + HOLD_S)
    # Speech goes on: every loud frame pushes the end out.
    assert gate.observe(frame(3000), 1.5)
    assert gate.paused(1.5 + HOLD_S - 0.001)
    stats = gate.statistics()
    assert stats.pauses == 1
    assert stats.paused_s == pytest.approx(0.5 + HOLD_S)
    # Quiet in between: a second pause.
    gate.observe(frame(5000), 5.0)
    assert gate.statistics().pauses == 2
    assert gate.statistics().paused_s == pytest.approx(0.5 + 2 * HOLD_S)


def test_quiet_and_empty_frames_change_nothing() -> None:
    gate = PauseGate(200)
    assert not gate.observe(b"", 0.0)
    assert not gate.observe(frame(0), 0.0)
    assert not gate.observe(frame(150), 0.0)
    assert gate.statistics().pauses == 0


def test_threshold_zero_pauses_on_anything_and_the_range_is_checked() -> None:
    assert PauseGate(0).observe(frame(0), 0.0)
    for bad in (-1, 32768):
        with pytest.raises(ValueError, match="0-32767"):
            PauseGate(bad)


def test_full_scale_does_not_overflow() -> None:
    gate = PauseGate(32767)
    assert gate.observe(np.full(960, -32768, "<i2").tobytes(), 0.0)
