"""WAV reading (every PCM width, float, extensible, streamed) and writing."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from sidecar.tools import wavio


def riff(fmt_body: bytes, data: bytes, data_size: int | None = None, extra: bytes = b"") -> bytes:
    size = len(data) if data_size is None else data_size
    chunks = b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body + extra
    chunks += b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def fmt(tag: int, channels: int, rate: int, bits: int) -> bytes:
    block = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)


def extensible(channels: int, rate: int, bits: int, subformat: int) -> bytes:
    guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    return (
        fmt(0xFFFE, channels, rate, bits)
        + struct.pack("<HHI", 22, bits, 0x3 if channels == 2 else 0x4)
        + struct.pack("<H", subformat)
        + guid_tail
    )


# Two stereo frames: (0.5, -0.5) and (0.25, 0.75); downmixed: 0.0 and 0.5.
LEFT_RIGHT = np.array([[0.5, -0.5], [0.25, 0.75]])
MONO = np.array([0.0, 0.5], dtype=np.float32)


def encode(values: np.ndarray, bits: int, is_float: bool) -> bytes:
    if is_float:
        return values.astype("<f4" if bits == 32 else "<f8").tobytes()
    if bits == 8:
        return (np.round(values * 128) + 128).astype(np.uint8).tobytes()
    if bits == 24:
        ints = np.round(values * (1 << 23)).astype(np.int32).ravel()
        return b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    dtype = {16: "<i2", 32: "<i4"}[bits]
    return np.round(values * (1 << (bits - 1))).astype(dtype).tobytes()


@pytest.mark.parametrize(
    ("bits", "is_float"),
    [(8, False), (16, False), (24, False), (32, False), (32, True), (64, True)],
)
@pytest.mark.parametrize("wrapper", ["plain", "extensible"])
def test_reads_every_width_and_downmixes(
    tmp_path: Path, bits: int, is_float: bool, wrapper: str
) -> None:
    tag = 3 if is_float else 1
    header = fmt(tag, 2, 22050, bits) if wrapper == "plain" else extensible(2, 22050, bits, tag)
    path = tmp_path / "x.wav"
    path.write_bytes(riff(header, encode(LEFT_RIGHT, bits, is_float), extra=b"LIST\x02\0\0\0ab"))
    with wavio.WavReader(path) as reader:
        assert reader.rate == 22050
        assert reader.format.channels == 2
        assert reader.duration == pytest.approx(2 / 22050)
        got = reader.read(100)
        assert reader.read(100).size == 0
    tolerance = 1 / 64 if bits == 8 else 1e-4
    np.testing.assert_allclose(got, MONO, atol=tolerance)


def test_streamed_wav_with_unknown_size_reads_to_the_end(tmp_path: Path) -> None:
    samples = (np.arange(1000) - 500).astype("<i2")
    path = tmp_path / "piped.wav"
    path.write_bytes(riff(fmt(1, 1, 8000, 16), samples.tobytes(), data_size=0xFFFFFFFF))
    with wavio.WavReader(path) as reader:
        assert reader.duration is None
        got = np.concatenate([reader.read(300) for _ in range(4)])
    np.testing.assert_array_equal(np.round(got * 32768).astype(np.int16), samples)


def test_rewind_restarts_the_data(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    wavio.write_wav(path, np.arange(10, dtype="<i2").tobytes(), 16000)
    with wavio.WavReader(path) as reader:
        first = reader.read(10)
        assert reader.read(10).size == 0
        reader.rewind()
        np.testing.assert_array_equal(reader.read(10), first)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (riff(fmt(6, 1, 8000, 8), b"\x00" * 10), "A-law"),
        (riff(fmt(1, 1, 8000, 12), b"\x00" * 10), "12-bit PCM"),
        (b"ID3\x03not a wav at all", "not a WAV file"),
        (b"RIFF\x10\0\0\0WAVEfmt \x10\0\0\0" + fmt(1, 1, 8000, 16), "no `data` chunk"),
    ],
)
def test_unreadable_files_are_explained(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(wavio.WavError, match=message):
        wavio.WavReader(path)


def test_missing_file_is_a_wav_error(tmp_path: Path) -> None:
    with pytest.raises(wavio.WavError, match="cannot open"):
        wavio.WavReader(tmp_path / "nope.wav")


def test_writer_header_is_valid_after_every_write(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    writer = wavio.WavWriter(path, 48000)
    writer.write(b"\x01\x00" * 480)
    # Readable before close: a recording killed mid-way still leaves a usable file.
    with wave.open(str(path)) as partial:
        assert partial.getnframes() == 480
    writer.write(b"\x02\x00" * 480)
    writer.close()
    with wave.open(str(path)) as done:
        assert (done.getnchannels(), done.getsampwidth(), done.getframerate()) == (1, 2, 48000)
        assert done.getnframes() == 960
    assert writer.seconds == pytest.approx(0.02)


def test_read_all_converts_rate(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    tone = (np.sin(np.arange(44100) * 2 * np.pi * 500 / 44100) * 10000).astype("<i2")
    wavio.write_wav(path, tone.tobytes(), 44100)
    pcm, rate = wavio.read_all(path, 48000)
    assert rate == 48000
    assert len(pcm) // 2 == 48000


def test_s16_conversions_clip_instead_of_wrapping() -> None:
    pcm = wavio.to_s16le(np.array([1.5, -1.5, 0.5], dtype=np.float32))
    assert np.frombuffer(pcm, "<i2").tolist() == [32767, -32768, 16384]
    np.testing.assert_allclose(wavio.from_s16le(pcm)[2], 0.5)
