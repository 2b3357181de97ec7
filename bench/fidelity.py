"""Fidelity of each converter: THD+N, alias/image rejection, passband edge, delay.

Every measurement streams a test signal through a fresh converter in 20 ms
chunks (the way the sidecar feeds it), drops the onset, and analyses one
window of the steady-state output with a plain FFT. All test frequencies are
multiples of the bin width and the window is 1 / bin seconds long at every
rate, so each tone, alias and image falls exactly on a bin: no window
function, no leakage.

THD+N goes through the 16-bit path the sidecar runs (s16le in, s16le out), at
997 Hz: the usual choice, because 1 kHz fits a whole number of cycles into
every 20 ms chunk and would hide exactly the chunk-edge artefacts a stateless
converter makes. Its reference is an ideal converter: the same quantized
input, resampled exactly in the frequency domain (the window is periodic) and
quantized once at the output rate; that is the 16-bit floor for the signal.

Alias and image rejection and the passband describe the filter, so they use
the float path where a converter has one (ours, soxr): a 16-bit output rounds
anything below half an LSB (about -96 dB re full scale) to silence and could
not show a rejection beyond that. The naive converter is 16-bit only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bench.converters import (
    CONVERTERS,
    LABELS,
    ConverterName,
    make,
    make_float,
    reported_delay_ms,
)

FloatArray = npt.NDArray[np.float64]

BIN_HZ: Final = 5
THD_BIN_HZ: Final = 1
CHUNK_MS: Final = 20
SETTLE_S: Final = 0.15
# Output still owed when input stops (soxr's block-wise stream holds the most).
MARGIN_S: Final = 0.25
TONE_HZ: Final = 997
ALIAS_TONE_HZ: Final = 1000
TONE_AMPLITUDE: Final = 10 ** (-3 / 20)
PEAK_LIMIT: Final = 0.9
BAND_LOW_HZ: Final = 20
BAND_HIGH_HZ: Final = 20000
BOT_RATE: Final = 48000
OTHER_RATES: Final = (8000, 16000, 24000)


@dataclass(frozen=True, slots=True)
class Pair:
    in_rate: int
    out_rate: int

    @property
    def down(self) -> bool:
        return self.out_rate < self.in_rate

    @property
    def key(self) -> str:
        return f"{self.in_rate // 1000}k->{self.out_rate // 1000}k"


PAIRS: Final = tuple(Pair(BOT_RATE, r) for r in OTHER_RATES) + tuple(
    Pair(r, BOT_RATE) for r in OTHER_RATES
)


@dataclass(slots=True)
class PairResult:
    converter: ConverterName
    label: str
    pair: str
    direction: str
    thd_n_db: float
    ideal_thd_n_db: float
    rejection_db: float
    """Alias rejection (down) or image rejection (up) for the named test tone."""
    rejection_tone_hz: int
    worst_rejection_db: float
    """Worst case over the out-of-band (down) or in-band (up) sweep."""
    worst_rejection_tone_hz: int
    passband_01_hz: float | None
    passband_3_hz: float | None
    passband_limit_hz: float
    delay_ms: float
    holdback_ms_mean: float
    holdback_ms_max: float
    alignment_ms: float
    reported_delay_ms: float | None
    response_hz: list[float] = field(default_factory=list)
    response_db: list[float] = field(default_factory=list)
    sweep_hz: list[float] = field(default_factory=list)
    sweep_db: list[float] = field(default_factory=list)
    """Level of the worst alias/image per sweep tone, dB relative to the input tone."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- signals and streaming ------------------------------------------------------------


def quantize(x: FloatArray) -> bytes:
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype("<i2").tobytes()


def from_pcm(pcm: bytes) -> FloatArray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0


def tones(
    freqs: Sequence[float], amps: Sequence[float], phases: Sequence[float], n: int, rate: int
) -> FloatArray:
    t = np.arange(n) / rate
    x = np.zeros(n)
    for f, a, p in zip(freqs, amps, phases, strict=True):
        x += a * np.sin(2 * np.pi * f * t + p)
    return x


def stream_through(name: ConverterName, pair: Pair, x: FloatArray, exact: bool) -> FloatArray:
    """Feed `x` in 20 ms chunks; `exact` takes the float path when there is one."""
    step = pair.in_rate * CHUNK_MS // 1000
    floating = make_float(name, pair.in_rate, pair.out_rate) if exact else None
    if floating is not None:
        x32 = x.astype(np.float32)
        parts = [floating.process_float(x32[i : i + step]) for i in range(0, len(x32), step)]
        return np.concatenate(parts).astype(np.float64)
    converter = make(name, pair.in_rate, pair.out_rate)
    pcm = quantize(x)
    out = b"".join(converter.process(pcm[2 * i : 2 * (i + step)]) for i in range(0, len(x), step))
    return from_pcm(out)


def window_length(rate: int, bin_hz: int = BIN_HZ) -> int:
    return rate // bin_hz


def input_length(rate: int, bin_hz: int = BIN_HZ) -> int:
    return round((SETTLE_S + 1 / bin_hz + MARGIN_S) * rate)


def steady_window(y: FloatArray, rate: int, bin_hz: int = BIN_HZ) -> FloatArray:
    start = round(SETTLE_S * rate)
    n = window_length(rate, bin_hz)
    if len(y) < start + n:
        raise RuntimeError(f"converter returned {len(y)} samples, need {start + n}")
    return y[start : start + n]


def amplitudes(window: FloatArray) -> FloatArray:
    """Amplitude per bin: a sine of amplitude A on bin m reads A at index m."""
    spectrum: FloatArray = np.abs(np.fft.rfft(window)) / (len(window) / 2)
    return spectrum


def run_tones(
    name: ConverterName,
    pair: Pair,
    freqs: Sequence[float],
    amp: float,
    *,
    exact: bool,
    bin_hz: int = BIN_HZ,
) -> tuple[FloatArray, float]:
    """Spectrum of the steady output for equal-amplitude tones, and the amplitude used
    (lowered when the tones' sum would otherwise clip)."""
    rng = np.random.default_rng(len(freqs))
    phases = list(rng.uniform(0, 2 * np.pi, len(freqs))) if len(freqs) > 1 else [0.0]
    x = tones(freqs, [amp] * len(freqs), phases, input_length(pair.in_rate, bin_hz), pair.in_rate)
    peak = float(np.max(np.abs(x)))
    if peak > PEAK_LIMIT:
        x *= PEAK_LIMIT / peak
        amp *= PEAK_LIMIT / peak
    y = stream_through(name, pair, x, exact)
    return amplitudes(steady_window(y, pair.out_rate, bin_hz)), amp


def bin_of(freq: float, bin_hz: int = BIN_HZ) -> int:
    index = round(freq / bin_hz)
    if index * bin_hz != freq:
        raise ValueError(f"{freq} Hz is not on the {bin_hz} Hz analysis grid")
    return index


def on_grid(freq: float) -> int:
    return int(round(freq / BIN_HZ) * BIN_HZ)


def db(ratio: float) -> float:
    return 20 * math.log10(max(ratio, 1e-12))


# -- THD+N ----------------------------------------------------------------------------


def thd_n_db(spectrum: FloatArray, tone_hz: float, bin_hz: int) -> float:
    """(everything in 20 Hz .. min(20 kHz, below Nyquist) except the tone) / tone, in dB."""
    low = math.ceil(BAND_LOW_HZ / bin_hz)
    high = min(BAND_HIGH_HZ // bin_hz, len(spectrum) - 2)  # the Nyquist bin is left out
    power = spectrum[low : high + 1] ** 2
    tone = bin_of(tone_hz, bin_hz) - low
    signal = float(power[tone])
    noise = float(power.sum()) - signal
    return 10 * math.log10(max(noise, 1e-30) / signal)


def ideal_output(pair: Pair, window_in: FloatArray, bin_hz: int = BIN_HZ) -> FloatArray:
    """Exact band-limited resampling of one period (the window is periodic)."""
    n_in = len(window_in)
    n_out = window_length(pair.out_rate, bin_hz)
    spectrum = np.fft.rfft(window_in)
    out = np.zeros(n_out // 2 + 1, dtype=complex)
    keep = min(len(spectrum), len(out)) - 1  # both Nyquist bins dropped: no ambiguity
    out[:keep] = spectrum[:keep]
    y: FloatArray = np.fft.irfft(out, n_out) * (n_out / n_in)
    return y


def thd_n(name: ConverterName, pair: Pair) -> float:
    spectrum, _ = run_tones(name, pair, [TONE_HZ], TONE_AMPLITUDE, exact=False, bin_hz=THD_BIN_HZ)
    return thd_n_db(spectrum, TONE_HZ, THD_BIN_HZ)


def ideal_thd_n(pair: Pair) -> float:
    n_in = window_length(pair.in_rate, THD_BIN_HZ)
    x = from_pcm(quantize(tones([TONE_HZ], [TONE_AMPLITUDE], [0.0], n_in, pair.in_rate)))
    y = from_pcm(quantize(ideal_output(pair, x, THD_BIN_HZ)))
    return thd_n_db(amplitudes(y), TONE_HZ, THD_BIN_HZ)


# -- alias / image rejection ----------------------------------------------------------


def fold(freq: float, rate: int) -> float:
    f = freq % rate
    return min(f, rate - f)


def alias_sweep(pair: Pair) -> list[int]:
    """Out-of-band input tones whose aliases land inside the output band."""
    nyquist = pair.out_rate / 2
    candidates = np.linspace(1.02 * nyquist, 0.98 * pair.in_rate / 2, 24)
    chosen: list[int] = []
    for f in candidates:
        g = on_grid(float(f))
        alias = fold(g, pair.out_rate)
        if 50 <= alias <= nyquist - 50 and g not in chosen:
            chosen.append(g)
    return chosen


def named_alias_tone(pair: Pair) -> int:
    """1.25 x the output Nyquist: 10 kHz at 16 kHz (CONTEXT.md's example), 5 kHz, 15 kHz."""
    return on_grid(1.25 * pair.out_rate / 2)


def image_sweep(pair: Pair) -> list[int]:
    nyquist = pair.in_rate / 2
    return sorted({on_grid(float(f)) for f in np.linspace(0.05 * nyquist, 0.9 * nyquist, 12)})


def images_of(freq: float, pair: Pair) -> list[float]:
    """Where upsampling images of `freq` land below the output Nyquist."""
    found: set[float] = set()
    k = 1
    while k * pair.in_rate - freq < pair.out_rate / 2:
        for f in (k * pair.in_rate - freq, k * pair.in_rate + freq):
            if f < pair.out_rate / 2 - BIN_HZ:
                found.add(f)
        k += 1
    return sorted(found)


def leak_db(name: ConverterName, pair: Pair, freq: int) -> float:
    """Level of the worst alias or image of a full tone, dB relative to that tone."""
    spectrum, amp = run_tones(name, pair, [freq], TONE_AMPLITUDE, exact=True)
    spots = [fold(freq, pair.out_rate)] if pair.down else images_of(freq, pair)
    worst = max(float(spectrum[bin_of(f)]) for f in spots)
    return db(worst / amp)


# -- passband ---------------------------------------------------------------------------


def response_grid(pair: Pair) -> list[int]:
    limit = min(pair.in_rate, pair.out_rate) / 2
    low = np.geomspace(50, 0.5 * limit, 40)
    high = np.linspace(0.5 * limit, limit - BIN_HZ, 120)
    grid = sorted({on_grid(float(f)) for f in np.concatenate([low, high])})
    return [f for f in grid if 0 < f < limit]


def response(name: ConverterName, pair: Pair) -> tuple[list[float], list[float]]:
    freqs = response_grid(pair)
    spectrum, amp = run_tones(name, pair, freqs, 0.05, exact=True)
    gains = [db(float(spectrum[bin_of(f)]) / amp) for f in freqs]
    return [float(f) for f in freqs], gains


def crossing(freqs: Sequence[float], gains: Sequence[float], level_db: float) -> float | None:
    """First frequency (from low) where the gain falls below `level_db`, interpolated."""
    for i in range(1, len(freqs)):
        if gains[i] < level_db <= gains[i - 1]:
            f0, f1, g0, g1 = freqs[i - 1], freqs[i], gains[i - 1], gains[i]
            return f0 + (f1 - f0) * (g0 - level_db) / (g0 - g1)
        if gains[i] < level_db:
            return freqs[i]
    return None


# -- delay ----------------------------------------------------------------------------------


def band_limited_noise(n: int, rate: int, cutoff: float, seed: int = 7) -> FloatArray:
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum[freqs > cutoff] = 0
    spectrum[0] = 0
    x: FloatArray = np.fft.irfft(spectrum, n)
    peak = float(np.max(np.abs(x)))
    scaled: FloatArray = x * (0.25 / peak)
    return scaled


def delay(name: ConverterName, pair: Pair) -> tuple[float, float, float]:
    """(mean hold-back, max hold-back, alignment), all in output samples.

    Hold-back: samples owed (input so far x ratio) minus samples returned, after each
    20 ms chunk once the stream is running. Alignment: lag of the output against an
    exact resampling of the same periodic noise (0 for a time-aligned converter).
    """
    cutoff = 0.4 * min(pair.in_rate, pair.out_rate) / 2
    n_in = window_length(pair.in_rate)
    period = band_limited_noise(n_in, pair.in_rate, cutoff)
    periods = 6
    x = np.tile(period, periods)
    pcm = quantize(x)
    converter = make(name, pair.in_rate, pair.out_rate)
    step = pair.in_rate * CHUNK_MS // 1000
    ratio = pair.out_rate / pair.in_rate
    parts: list[bytes] = []
    fed = got = 0
    held: list[float] = []
    for i in range(0, len(x), step):
        chunk = pcm[2 * i : 2 * (i + step)]
        out = converter.process(chunk)
        parts.append(out)
        fed += len(chunk) // 2
        got += len(out) // 2
        if i >= len(x) // 3:
            held.append(fed * ratio - got)
    y = from_pcm(b"".join(parts))
    n_out = window_length(pair.out_rate)
    ideal = ideal_output(pair, from_pcm(quantize(period)))
    segment = y[2 * n_out : 3 * n_out]
    # Circular cross-correlation: both are one period of the same periodic signal.
    corr = np.fft.irfft(np.fft.rfft(segment) * np.conj(np.fft.rfft(ideal)), n_out)
    k = int(np.argmax(corr))
    lag = float(k)
    left, mid, right = corr[k - 1], corr[k], corr[(k + 1) % n_out]
    denom = left - 2 * mid + right
    if denom != 0:
        lag += 0.5 * (left - right) / denom
    if lag > n_out / 2:
        lag -= n_out
    return float(np.mean(held)), float(np.max(held)), lag


# -- all together -----------------------------------------------------------------------------


def measure(name: ConverterName, pair: Pair) -> PairResult:
    if pair.down:
        named = named_alias_tone(pair)
        sweep = alias_sweep(pair)
    else:
        named = ALIAS_TONE_HZ
        sweep = image_sweep(pair)
    sweep_db = [leak_db(name, pair, f) for f in sweep]
    named_db = leak_db(name, pair, named)
    worst = int(np.argmax(sweep_db))
    freqs, gains = response(name, pair)
    held_mean, held_max, lag = delay(name, pair)
    ms = 1000.0 / pair.out_rate
    return PairResult(
        converter=name,
        label=LABELS[name],
        pair=pair.key,
        direction="down" if pair.down else "up",
        thd_n_db=thd_n(name, pair),
        ideal_thd_n_db=ideal_thd_n(pair),
        rejection_db=-named_db,
        rejection_tone_hz=named,
        worst_rejection_db=-sweep_db[worst],
        worst_rejection_tone_hz=sweep[worst],
        passband_01_hz=crossing(freqs, gains, -0.1),
        passband_3_hz=crossing(freqs, gains, -3.0),
        passband_limit_hz=freqs[-1],
        delay_ms=(held_mean + lag) * ms,
        holdback_ms_mean=held_mean * ms,
        holdback_ms_max=held_max * ms,
        alignment_ms=lag * ms,
        reported_delay_ms=reported_delay_ms(name, pair.in_rate, pair.out_rate),
        response_hz=freqs,
        response_db=gains,
        sweep_hz=[float(f) for f in sweep],
        sweep_db=sweep_db,
    )


def measure_all(
    progress: Callable[[str], None] | None = None,
    converters: Sequence[ConverterName] = CONVERTERS,
) -> list[PairResult]:
    results = []
    for pair in PAIRS:
        for name in converters:
            if progress is not None:
                progress(f"fidelity {LABELS[name]} {pair.key}")
            results.append(measure(name, pair))
    return results
