"""Measurements on recorded audio: level, alignment (latency), SNR."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sidecar.tools.wavio import FloatArray


def level_dbfs(samples: FloatArray) -> float:
    """RMS level relative to full scale; -inf-ish (-200) for silence."""
    if not len(samples):
        return -200.0
    rms = math.sqrt(float(np.mean(np.square(samples, dtype=np.float64))))
    return 20 * math.log10(max(rms, 1e-10))


@dataclass(frozen=True, slots=True)
class Alignment:
    lag: int
    """Samples by which `received` trails `sent`."""
    correlation: float
    """Normalised correlation at that lag, 0..1: how alike the two are once aligned."""


def align(sent: FloatArray, received: FloatArray, max_lag: int | None = None) -> Alignment:
    """Find where `sent` occurs in `received` by FFT cross-correlation (lags >= 0)."""
    if not len(sent) or not len(received):
        return Alignment(0, 0.0)
    size = 1 << (len(sent) + len(received) - 1).bit_length()
    spectrum = np.fft.rfft(received.astype(np.float64), size) * np.conj(
        np.fft.rfft(sent.astype(np.float64), size)
    )
    xcorr = np.fft.irfft(spectrum, size)
    limit = len(received) if max_lag is None else min(max_lag + 1, len(received))
    lags = xcorr[:limit]
    lag = int(np.argmax(lags))
    # Normalise by the energy of the overlapping parts only.
    overlap = min(len(sent), len(received) - lag)
    a = sent[:overlap].astype(np.float64)
    b = received[lag : lag + overlap].astype(np.float64)
    denom = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return Alignment(lag, float(np.dot(a, b)) / denom if denom else 0.0)


def snr_db(sent: FloatArray, received: FloatArray, lag: int) -> float:
    """How far `received` (shifted by `lag`) is from a scaled copy of `sent`.

    The best-fitting gain is removed first, so a path that only changes the
    level scores as clean; what remains (filtering, distortion, dropouts,
    clicks) is counted as noise.
    """
    overlap = min(len(sent), len(received) - lag)
    if overlap <= 0:
        return -200.0
    a = sent[:overlap].astype(np.float64)
    b = received[lag : lag + overlap].astype(np.float64)
    energy = float(np.dot(a, a))
    if energy == 0:
        return -200.0
    gain = float(np.dot(a, b)) / energy
    noise = b - gain * a
    noise_energy = float(np.dot(noise, noise))
    signal_energy = gain * gain * energy
    if noise_energy == 0:
        return 200.0
    if signal_energy == 0:
        return -200.0
    return 10 * math.log10(signal_energy / noise_energy)


def band_limit(samples: FloatArray, rate: int, cutoff_hz: float) -> FloatArray:
    """Zero everything above `cutoff_hz` (FFT brick wall), for fair comparisons."""
    spectrum = np.fft.rfft(samples.astype(np.float64))
    spectrum[int(cutoff_hz * len(samples) / rate) + 1 :] = 0
    return np.fft.irfft(spectrum, len(samples)).astype(np.float32)
