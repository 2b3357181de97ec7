"""WAV files in and out, and the PCM conversions the tools share.

Reading parses RIFF itself rather than using the stdlib `wave` module, which
on Python 3.11 refuses float and WAVE_FORMAT_EXTENSIBLE files, the two things
DAWs and ffmpeg most often write. Readers stream blocks of mono float32, so a
long recording never has to fit in memory. Writing is always 16-bit PCM mono,
through `wave`, which fixes up the header sizes on close.
"""

from __future__ import annotations

import struct
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt

from sidecar.pcm import SAMPLE_BYTES, SAMPLE_DTYPE
from sidecar.resample import Quality, Resampler

FloatArray = npt.NDArray[np.float32]

PCM: Final = 0x0001
IEEE_FLOAT: Final = 0x0003
EXTENSIBLE: Final = 0xFFFE
_FORMAT_NAMES: Final = {0x0002: "MS ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0055: "MP3"}
# A streamed WAV (ffmpeg writing to a pipe) leaves the data size unknown.
_UNKNOWN_SIZES: Final = (0, 0xFFFFFFFF)
_INT16_SCALE: Final = 32768.0


class WavError(Exception):
    """The file is not a WAV we can read; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class WavFormat:
    rate: int
    channels: int
    bits: int
    is_float: bool

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.bits // 8

    def describe(self) -> str:
        kind = "float" if self.is_float else "PCM"
        layout = {1: "mono", 2: "stereo"}.get(self.channels, f"{self.channels} channels")
        return f"{self.bits}-bit {kind}, {layout}, {self.rate} Hz"


def _unsupported(tag: int) -> WavError:
    name = _FORMAT_NAMES.get(tag, "unknown")
    return WavError(
        f"WAV format 0x{tag:04x} ({name}) is not supported; convert it first, e.g. "
        "`ffmpeg -i in.wav -c:a pcm_s16le out.wav`"
    )


def _parse_fmt(body: bytes) -> WavFormat:
    if len(body) < 16:
        raise WavError(f"`fmt ` chunk of {len(body)} bytes is too short")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
    if tag == EXTENSIBLE:
        if len(body) < 40:
            raise WavError("WAVE_FORMAT_EXTENSIBLE header is truncated")
        # The sub-format GUID starts with the plain format tag.
        (tag,) = struct.unpack_from("<H", body, 24)
    if tag not in (PCM, IEEE_FLOAT):
        raise _unsupported(tag)
    is_float = tag == IEEE_FLOAT
    if channels < 1:
        raise WavError("WAV declares no channels")
    if rate < 1:
        raise WavError(f"WAV declares a sample rate of {rate}")
    allowed = (32, 64) if is_float else (8, 16, 24, 32)
    if bits not in allowed:
        kind = "float" if is_float else "PCM"
        raise WavError(f"{bits}-bit {kind} WAV is not supported (use one of {allowed} bits)")
    return WavFormat(rate, channels, bits, is_float)


def decode_samples(data: bytes, fmt: WavFormat) -> FloatArray:
    """Interleaved sample bytes -> float32 in [-1, 1), shape (frames, channels)."""
    usable = len(data) - len(data) % fmt.frame_bytes
    raw = data[:usable]
    if fmt.is_float:
        values = np.frombuffer(raw, dtype="<f4" if fmt.bits == 32 else "<f8").astype(np.float32)
    elif fmt.bits == 8:
        # 8-bit WAV is the one unsigned format.
        values = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif fmt.bits == 16:
        values = np.frombuffer(raw, dtype="<i2").astype(np.float32) / _INT16_SCALE
    elif fmt.bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        values = ints.astype(np.float32) / float(1 << 23)
    else:
        values = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(
            np.float32
        )
    return values.reshape(-1, fmt.channels)


def downmix(samples: FloatArray) -> FloatArray:
    """Average the channels: the sidecar carries mono."""
    if samples.ndim == 1:
        return samples
    if samples.shape[1] == 1:
        return np.ascontiguousarray(samples[:, 0])
    return np.asarray(samples.mean(axis=1, dtype=np.float32), dtype=np.float32)


class WavReader:
    """Streams a WAV file as mono float32 blocks; `rewind` restarts it (for --loop)."""

    blocking = False

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file: BinaryIO = path.open("rb")
        except OSError as exc:
            raise WavError(f"cannot open {path}: {exc.strerror}") from None
        try:
            self.format, self._data_start, self._data_size = self._parse_header()
        except BaseException:
            self._file.close()
            raise
        self._left = self._data_size

    def _parse_header(self) -> tuple[WavFormat, int, int | None]:
        head = self._file.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise WavError(f"{self.path} is not a WAV file (no RIFF/WAVE header)")
        fmt: WavFormat | None = None
        while True:
            header = self._file.read(8)
            if len(header) < 8:
                raise WavError(f"{self.path} has no `data` chunk")
            chunk_id, size = struct.unpack("<4sI", header)
            if chunk_id == b"fmt ":
                fmt = _parse_fmt(self._file.read(size + size % 2)[:size])
            elif chunk_id == b"data":
                if fmt is None:
                    raise WavError(f"{self.path}: `data` chunk before `fmt ` chunk")
                data_size = None if size in _UNKNOWN_SIZES else size
                return fmt, self._file.tell(), data_size
            else:
                self._file.seek(size + size % 2, 1)

    @property
    def rate(self) -> int:
        return self.format.rate

    @property
    def duration(self) -> float | None:
        """Seconds, or None when the header does not say (a streamed WAV)."""
        if self._data_size is None:
            return None
        return self._data_size // self.format.frame_bytes / self.format.rate

    def read(self, frames: int) -> FloatArray:
        """Up to `frames` mono samples; empty at the end of the data."""
        want = frames * self.format.frame_bytes
        if self._left is not None:
            want = min(want, self._left)
        data = self._file.read(want) if want > 0 else b""
        if self._left is not None:
            self._left -= len(data)
        return downmix(decode_samples(data, self.format))

    def rewind(self) -> None:
        self._file.seek(self._data_start)
        self._left = self._data_size

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> WavReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RawReader:
    """Headerless s16le from a binary stream (stdin), `channels` interleaved."""

    blocking = True

    def __init__(self, stream: BinaryIO, rate: int, channels: int = 1) -> None:
        self.rate = rate
        self.format = WavFormat(rate, channels, 16, False)
        self._stream = stream
        self._pending = b""

    def read(self, frames: int) -> FloatArray:
        """Blocks until `frames` samples or end of input; empty at the end."""
        want = frames * self.format.frame_bytes
        data = self._pending
        while len(data) < want:
            more = self._stream.read(want - len(data))
            if not more:
                break
            data += more
        usable = len(data) - len(data) % self.format.frame_bytes
        self._pending = data[usable:]
        return downmix(decode_samples(data[:usable], self.format))


# -- conversions ------------------------------------------------------------------------


def to_s16le(samples: FloatArray) -> bytes:
    scaled = np.rint(samples.astype(np.float64) * _INT16_SCALE)
    return np.clip(scaled, -32768, 32767).astype(SAMPLE_DTYPE).tobytes()


def from_s16le(pcm: bytes) -> FloatArray:
    return np.frombuffer(pcm, dtype=SAMPLE_DTYPE).astype(np.float32) / np.float32(_INT16_SCALE)


def convert(samples: FloatArray, in_rate: int, out_rate: int, quality: Quality = "medium") -> bytes:
    """One whole mono buffer -> s16le at `out_rate`."""
    resampler = Resampler(in_rate, out_rate, quality)
    out = resampler.process_float(np.array(samples, dtype=np.float32))
    return to_s16le(np.concatenate([out, resampler.flush_float()]))


def read_all(path: Path, rate: int | None = None, quality: Quality = "medium") -> tuple[bytes, int]:
    """A whole file as mono s16le, at `rate` (or its own rate); returns (pcm, rate)."""
    with WavReader(path) as reader:
        blocks = list(_blocks(reader))
        native = reader.rate
    samples = np.concatenate(blocks) if blocks else np.empty(0, dtype=np.float32)
    target = rate or native
    return convert(samples, native, target, quality), target


def _blocks(reader: WavReader, block: int = 65536) -> Iterator[FloatArray]:
    while True:
        samples = reader.read(block)
        if not len(samples):
            return
        yield samples


def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    with WavWriter(path, rate) as writer:
        writer.write(pcm)


class WavWriter:
    """16-bit mono WAV, written as it goes.

    The header is patched and the file flushed after every write, so a
    recording that is killed rather than stopped is still a valid WAV.
    """

    def __init__(self, path: Path, rate: int) -> None:
        self.path = path
        self.rate = rate
        self.samples = 0
        try:
            # Both stay open across writes; `close` (or the context manager) ends them.
            self._file = path.open("wb")
        except OSError as exc:
            raise WavError(f"cannot write {path}: {exc.strerror}") from None
        self._wave = wave.open(self._file, "wb")  # noqa: SIM115
        self._wave.setnchannels(1)
        self._wave.setsampwidth(SAMPLE_BYTES)
        self._wave.setframerate(rate)

    def write(self, pcm: bytes) -> None:
        if not pcm:
            return
        self._wave.writeframes(pcm)
        self._file.flush()
        self.samples += len(pcm) // SAMPLE_BYTES

    @property
    def seconds(self) -> float:
        return self.samples / self.rate

    def close(self) -> None:
        self._wave.close()
        self._file.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
