"""Streaming sample-rate conversion of s16le mono PCM on top of libsamplerate.

Sans-I/O: one `Resampler` per audio stream, fed frames as they arrive.

libsamplerate's sinc converters are time-aligned: output sample ``j`` corresponds to input
position ``j * in_rate / out_rate`` exactly (no phase shift). To produce a sample it needs
half a filter length of *future* input, so each call holds a few samples back; they come out
on later calls or on `flush`. That hold-back is the converter's real-time latency and is what
`Resampler.delay_ms` reports.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import samplerate

from sidecar.pcm import SAMPLE_BYTES, SAMPLE_DTYPE

Quality = Literal["fastest", "medium", "best"]

QUALITY_CONVERTERS: Final[dict[Quality, str]] = {
    "fastest": "sinc_fastest",
    "medium": "sinc_medium",
    "best": "sinc_best",
}

FloatArray = npt.NDArray[np.float32]

# libsamplerate rejects ratios outside [1/256, 256].
_MAX_RATIO: Final = 256

_INT16_SCALE: Final = 32768.0
_INV_INT16_SCALE: Final = np.float32(1.0 / _INT16_SCALE)
# float32 operands for `_to_s16le`'s ufuncs: a Python float is converted on every call.
_F32_SCALE: Final = np.float32(_INT16_SCALE)
_F32_MAX: Final = np.float32(32767.0)
_F32_MIN: Final = np.float32(-32768.0)

# Zero padding fed per drain step in `flush`, beyond what the owed output needs: enough
# that one step is usually all it takes. Padding is not free: every zero is filtered,
# and a fixed 4096 made a flush cost 1.7 ms (medium) to 5 ms (best) at 16 -> 48 kHz,
# paid on the playout clock at the end of each utterance.
_DRAIN_MARGIN: Final = 64
# A converter that stops releasing samples must not spin the drain loop forever.
_DRAIN_STEPS: Final = 64

# Hold-back in output samples per (converter, out/in ratio). Measuring builds and runs a
# converter, so do it once per process rather than per stream.
_HOLDBACK_CACHE: dict[tuple[str, Fraction], int] = {}


def _measure_holdback(converter: str, ratio: Fraction) -> int:
    """Output samples a converter withholds once it has reached steady state.

    Because the sinc converters are time-aligned, this is exactly how long an impulse waits
    inside the converter before its peak is emitted (checked in the tests).
    """
    key = (converter, ratio)
    cached = _HOLDBACK_CACHE.get(key)
    if cached is not None:
        return cached
    # Hold-back is at most a few hundred samples on the slower side of the converter, so
    # 4096 samples on both sides is plenty for sinc_best at any ratio.
    n_in = max(4096, -(-4096 * ratio.denominator // ratio.numerator))
    probe = np.zeros(n_in, dtype=np.float32)
    probe[n_in // 2] = 1.0
    state = samplerate.Resampler(converter, channels=1)
    produced = len(state.process(probe, float(ratio), end_of_input=False))
    holdback = round(n_in * ratio) - produced
    _HOLDBACK_CACHE[key] = holdback
    return holdback


class Resampler:
    """Stateful s16le mono resampler for one stream; output length varies per call.

    ``samples_in`` / ``samples_out`` count input and output samples over the object's
    lifetime (they are not cleared by `reset` or `flush`).
    """

    __slots__ = (
        "_converter",
        "_in_rate",
        "_out_rate",
        "_quality",
        "_ratio",
        "_ratio_f",
        "_state",
        "_stream_in",
        "_stream_out",
        "samples_in",
        "samples_out",
    )

    def __init__(self, in_rate: int, out_rate: int, quality: Quality = "medium") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        if quality not in QUALITY_CONVERTERS:
            raise ValueError(f"unknown quality {quality!r}")
        ratio = Fraction(out_rate, in_rate)
        if not Fraction(1, _MAX_RATIO) <= ratio <= _MAX_RATIO:
            raise ValueError(f"ratio {out_rate}/{in_rate} outside libsamplerate's range")
        self._in_rate = in_rate
        self._out_rate = out_rate
        self._quality: Quality = quality
        self._converter = QUALITY_CONVERTERS[quality]
        self._ratio = ratio
        self._ratio_f = float(ratio)
        self._state = (
            None if in_rate == out_rate else samplerate.Resampler(self._converter, channels=1)
        )
        # Per-stream positions; `flush` needs them to know exactly how much is still owed.
        self._stream_in = 0
        self._stream_out = 0
        self.samples_in = 0
        self.samples_out = 0

    @property
    def in_rate(self) -> int:
        return self._in_rate

    @property
    def out_rate(self) -> int:
        return self._out_rate

    @property
    def quality(self) -> Quality:
        return self._quality

    @property
    def passthrough(self) -> bool:
        return self._state is None

    @property
    def owed(self) -> int:
        """Output samples this stream still owes for the input it consumed: what
        `flush` would return now. Where the last sample taken in will come out."""
        return round(self._stream_in * self._ratio) - self._stream_out

    @property
    def delay_ms(self) -> float:
        """Real-time latency added by the converter (0 for passthrough)."""
        if self._state is None:
            return 0.0
        return _measure_holdback(self._converter, self._ratio) * 1000.0 / self._out_rate

    def process_float(self, samples: FloatArray) -> FloatArray:
        """Resample float32 samples in [-1, 1); the core that `process` wraps.

        The returned array is owned by the caller (never a view of `samples` unless
        passthrough, where it is `samples` itself).
        """
        n = len(samples)
        self._stream_in += n
        self.samples_in += n
        if self._state is None:
            out = samples
        elif n == 0:
            # Nothing new can be released without new input (or end_of_input in `flush`).
            out = np.empty(0, dtype=np.float32)
        else:
            out = self._state.process(samples, self._ratio_f, end_of_input=False)
        self._stream_out += len(out)
        self.samples_out += len(out)
        return out

    def flush_float(self) -> FloatArray:
        """End the stream: return what is still owed, then start a fresh stream."""
        owed = self.owed
        parts: list[FloatArray] = []
        if self._state is not None and owed > 0:
            # python-samplerate returns nothing for an empty end_of_input call, so push real
            # zeros; the converter treats them like the padding it would have used itself.
            padding = np.zeros(math.ceil(owed / self._ratio) + _DRAIN_MARGIN, dtype=np.float32)
            got = 0
            for _ in range(_DRAIN_STEPS):
                if got >= owed:
                    break
                chunk = self._state.process(padding, self._ratio_f, end_of_input=True)
                parts.append(chunk)
                got += len(chunk)
            if got < owed:
                # Never seen; the stream's length is part of the contract, so pad.
                parts.append(np.zeros(owed - got, dtype=np.float32))
        out = np.concatenate(parts)[:owed] if parts else np.empty(0, dtype=np.float32)
        self.samples_out += len(out)
        self.reset()
        return out

    def process(self, pcm: bytes) -> bytes:
        """Resample s16le mono; may return fewer samples than the ratio implies."""
        if len(pcm) % SAMPLE_BYTES:
            raise ValueError(f"s16le PCM must have an even byte count, got {len(pcm)}")
        if self._state is None:
            n = len(pcm) // SAMPLE_BYTES
            self._stream_in += n
            self._stream_out += n
            self.samples_in += n
            self.samples_out += n
            return bytes(pcm)
        if not pcm:
            return b""
        # One multiply makes the float32 copy and scales it (int16 by a float32 scalar
        # is float32); exact, as the scale is a power of two.
        samples = np.frombuffer(pcm, dtype=SAMPLE_DTYPE) * _INV_INT16_SCALE
        return _to_s16le(self.process_float(samples))

    def flush(self) -> bytes:
        """End the stream: the remaining samples, so the stream's total output equals
        ``round(stream_in * out_rate / in_rate)``. Ready for a new stream afterwards."""
        return _to_s16le(self.flush_float())

    def reset(self) -> None:
        """Drop held samples and start a fresh stream."""
        if self._state is not None:
            self._state.reset()
        self._stream_in = 0
        self._stream_out = 0


def _to_s16le(samples: FloatArray) -> bytes:
    if len(samples) == 0:
        return b""
    # Callers only pass arrays fresh from libsamplerate, so scaling in place saves a copy.
    # One ufunc call per step, on float32 operands: `np.clip` goes through a Python
    # wrapper, and this runs once per frame. Scaling by a power of two is exact.
    np.multiply(samples, _F32_SCALE, out=samples)
    np.rint(samples, out=samples)
    # Sinc ringing overshoots on full-scale input; clip rather than let int16 wrap.
    np.minimum(samples, _F32_MAX, out=samples)
    np.maximum(samples, _F32_MIN, out=samples)
    return samples.astype(SAMPLE_DTYPE).tobytes()


def resample_once(pcm: bytes, in_rate: int, out_rate: int, quality: Quality = "medium") -> bytes:
    """Resample a complete s16le mono buffer (one whole stream) in one go."""
    resampler = Resampler(in_rate, out_rate, quality)
    return resampler.process(pcm) + resampler.flush()
