"""The sample-rate converters compared in the fidelity figures, behind one interface.

Each is a stream: fed 20 ms chunks of s16le mono in order, returning whatever
output it has for each (possibly nothing).
"""

from __future__ import annotations

from typing import Final, Literal, Protocol

import numpy as np
import numpy.typing as npt
import soxr

from bench import attendee
from sidecar.resample import Resampler, resample_once

ConverterName = Literal["fastest", "medium", "best", "naive", "soxr"]

CONVERTERS: Final[tuple[ConverterName, ...]] = ("fastest", "medium", "best", "naive", "soxr")

LABELS: Final[dict[ConverterName, str]] = {
    "fastest": "sidecar fastest",
    "medium": "sidecar medium",
    "best": "sidecar best",
    "naive": "naive (ratecv / repeat)",
    "soxr": "soxr VHQ stream",
}

SOXR_QUALITY: Final = "VHQ"


Float32Array = npt.NDArray[np.float32]


class Converter(Protocol):
    def process(self, pcm: bytes) -> bytes: ...


class FloatConverter(Protocol):
    """The filter alone, on float32 samples: no 16-bit quantization at either end."""

    def process_float(self, samples: Float32Array) -> Float32Array: ...


class _Ours:
    def __init__(self, in_rate: int, out_rate: int, quality: ConverterName) -> None:
        assert quality in ("fastest", "medium", "best")
        self._resampler = Resampler(in_rate, out_rate, quality)

    def process(self, pcm: bytes) -> bytes:
        return self._resampler.process(pcm)

    def process_float(self, samples: Float32Array) -> Float32Array:
        return self._resampler.process_float(samples)


class _Naive:
    def __init__(self, in_rate: int, out_rate: int) -> None:
        self._in_rate = in_rate
        self._out_rate = out_rate

    def process(self, pcm: bytes) -> bytes:
        return attendee.convert(pcm, self._in_rate, self._out_rate)


class _Soxr:
    def __init__(self, in_rate: int, out_rate: int) -> None:
        self._rates = (in_rate, out_rate)
        self._stream = soxr.ResampleStream(
            in_rate, out_rate, 1, dtype="int16", quality=SOXR_QUALITY
        )
        self._float_stream: soxr.ResampleStream | None = None

    def process(self, pcm: bytes) -> bytes:
        out = self._stream.resample_chunk(np.frombuffer(pcm, dtype="<i2"))
        return bytes(out.tobytes())

    def process_float(self, samples: Float32Array) -> Float32Array:
        if self._float_stream is None:
            self._float_stream = soxr.ResampleStream(
                *self._rates, 1, dtype="float32", quality=SOXR_QUALITY
            )
        out: Float32Array = self._float_stream.resample_chunk(samples)
        return out


def make(name: ConverterName, in_rate: int, out_rate: int) -> Converter:
    if name == "naive":
        return _Naive(in_rate, out_rate)
    if name == "soxr":
        return _Soxr(in_rate, out_rate)
    return _Ours(in_rate, out_rate, name)


def make_float(name: ConverterName, in_rate: int, out_rate: int) -> FloatConverter | None:
    """The float path where the converter has one; the naive path is 16-bit only."""
    if name == "naive":
        return None
    if name == "soxr":
        return _Soxr(in_rate, out_rate)
    return _Ours(in_rate, out_rate, name)


def offline(name: ConverterName, pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """One whole stream through the converter in a single call, flushed: what a perfect
    streaming implementation of it would have delivered, sample for sample."""
    if name == "naive":
        return attendee.convert(pcm, in_rate, out_rate)
    if name == "soxr":
        stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=SOXR_QUALITY)
        return bytes(stream.resample_chunk(np.frombuffer(pcm, dtype="<i2"), last=True).tobytes())
    return resample_once(pcm, in_rate, out_rate, name)


def reported_delay_ms(name: ConverterName, in_rate: int, out_rate: int) -> float | None:
    """The delay a converter states about itself (ours: `Resampler.delay_ms`)."""
    if name in ("fastest", "medium", "best"):
        return Resampler(in_rate, out_rate, name).delay_ms
    return None
