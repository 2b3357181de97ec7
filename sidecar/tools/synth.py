"""Test signals the tools generate instead of shipping recordings.

`speech_like` is voiced speech in miniature: a gliding pitch with its
harmonics shaped by vowel formants, cut into syllables and words. It
exercises a voice path the way speech does (bursty level, energy up to a few
kHz, pauses) and, unlike a steady tone, has one unambiguous alignment, so a
round trip's latency can be found by cross-correlation.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from sidecar.tools.wavio import FloatArray

# Formant centre frequencies (Hz) and bandwidths of five vowels, a rough
# average adult voice.
_VOWELS: Final = (
    ((730, 1090, 2440), (80, 90, 120)),  # a
    ((530, 1840, 2480), (60, 100, 120)),  # e
    ((270, 2290, 3010), (60, 90, 100)),  # i
    ((570, 840, 2410), (70, 80, 100)),  # o
    ((300, 870, 2240), (60, 80, 100)),  # u
)
_SYLLABLE_S: Final = 0.22
_SYLLABLES_PER_WORD: Final = (2, 3, 1, 4, 2, 3)
_PAUSE_S: Final = 0.18
_MAX_HARMONIC_HZ: Final = 3800.0


def tone(freq: float, seconds: float, rate: int, level: float = 0.5) -> FloatArray:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * level).astype(np.float32)


def _formant_gain(
    freq: FloatArray, centres: tuple[int, ...], widths: tuple[int, ...]
) -> FloatArray:
    gain = np.zeros_like(freq)
    for centre, width in zip(centres, widths, strict=True):
        gain += 1.0 / (1.0 + ((freq - centre) / (width / 2.0)) ** 2)
    # Natural voices lose about 6 dB per octave above the first formant.
    return (gain * np.minimum(1.0, 500.0 / np.maximum(freq, 1.0))).astype(np.float32)


def speech_like(seconds: float, rate: int, seed: int = 7, level_dbfs: float = -20.0) -> FloatArray:
    """Deterministic voiced "speech" of `seconds`, RMS `level_dbfs` while voiced."""
    n = round(seconds * rate)
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64) / rate
    # Lay out words: syllables back to back, a pause after each word.
    envelope = np.zeros(n, dtype=np.float64)
    vowel_at = np.zeros(n, dtype=np.int64)
    pitch_at = np.full(n, 140.0)
    pos, word = 0.0, 0
    while pos < seconds:
        for _ in range(_SYLLABLES_PER_WORD[word % len(_SYLLABLES_PER_WORD)]):
            length = _SYLLABLE_S * rng.uniform(0.7, 1.3)
            a, b = round(pos * rate), min(n, round((pos + length) * rate))
            if a >= n:
                break
            span = np.arange(b - a) / max(1, b - a)
            # Raised-cosine syllable with a soft onset, never fully silent inside a word.
            envelope[a:b] = 0.15 + 0.85 * np.sin(np.pi * span) ** 1.5
            vowel_at[a:b] = rng.integers(len(_VOWELS))
            start_f0 = rng.uniform(110, 190)
            pitch_at[a:b] = start_f0 * (1 + 0.12 * (span - 0.5) * rng.choice((-1.0, 1.0)))
            pos += length
        pos += _PAUSE_S * rng.uniform(0.6, 1.6)
        word += 1
    # Fade the word edges so pauses start and end without clicks.
    kernel = np.hanning(max(3, round(0.02 * rate)))
    envelope = np.convolve(envelope, kernel / kernel.sum(), mode="same")
    pitch = np.convolve(pitch_at, np.ones(round(0.03 * rate)) / round(0.03 * rate), mode="same")
    pitch *= 1 + 0.01 * np.sin(2 * np.pi * 5.5 * t)  # a little vibrato
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    signal = np.zeros(n, dtype=np.float64)
    for vowel, (centres, widths) in enumerate(_VOWELS):
        mask = vowel_at == vowel
        if not mask.any():
            continue
        part = np.zeros(int(mask.sum()))
        f0 = pitch[mask]
        ph = phase[mask]
        for k in range(1, int(_MAX_HARMONIC_HZ // 100) + 1):
            fk = (f0 * k).astype(np.float32)
            gain = _formant_gain(fk, centres, widths) * (fk < _MAX_HARMONIC_HZ)
            part += gain * np.sin(k * ph)
        signal[mask] = part
    signal *= envelope
    voiced = envelope > 0.3
    rms = float(np.sqrt(np.mean(signal[voiced] ** 2))) if voiced.any() else 1.0
    signal *= 10 ** (level_dbfs / 20) / max(rms, 1e-9)
    return np.clip(signal, -0.99, 0.99).astype(np.float32)
