"""sidecar.frames: the AudioSocket codec for the two Unix sockets."""

from __future__ import annotations

import itertools
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar import frames
from sidecar.frames import (
    NEED_DATA,
    Audio,
    Dtmf,
    ErrorCode,
    ErrorFrame,
    FrameDecoder,
    FrameError,
    RawDecoder,
    StreamId,
    Terminate,
)

SETTINGS = settings(max_examples=200, deadline=None)

audio_frames = st.builds(
    Audio,
    rate=st.sampled_from(sorted(frames.AUDIO_RATES.values())),
    pcm=st.integers(0, 600).flatmap(lambda n: st.binary(min_size=2 * n, max_size=2 * n)),
)
valid_frames: st.SearchStrategy[frames.Frame] = st.one_of(
    audio_frames,
    st.builds(StreamId, st.uuids()),
    st.builds(Dtmf, st.sampled_from(sorted(frames.DTMF_DIGITS))),
    st.just(Terminate()),
    st.builds(ErrorFrame, st.integers(0, 255), st.text(max_size=40)),
)


def drain(decoder: FrameDecoder | RawDecoder) -> list[frames.Event]:
    return list(decoder)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@SETTINGS
@given(st.lists(valid_frames, max_size=12), st.lists(st.integers(0, 1 << 20), max_size=20))
def test_split_anywhere_decodes_the_same_frames(
    sent: list[frames.Frame], points: list[int]
) -> None:
    data = b"".join(frames.encode_frame(f) for f in sent)
    decoder = FrameDecoder()
    got: list[frames.Event] = []
    for piece in cut(data, points):
        decoder.feed(piece)
        got += drain(decoder)
    assert decoder.end_of_stream() is None
    assert got == sent
    assert decoder.buffered == 0
    assert not decoder.failed


@SETTINGS
@given(st.lists(st.binary(max_size=80), max_size=10))
def test_arbitrary_bytes_never_raise(pieces: list[bytes]) -> None:
    decoder = FrameDecoder()
    events: list[frames.Event] = []
    for piece in pieces:
        decoder.feed(piece)
        events += drain(decoder)
    end = decoder.end_of_stream()
    if end is not None:
        events.append(end)
    errors = [e for e in events if isinstance(e, FrameError)]
    assert len(errors) <= 1
    if errors:
        # The error is the last thing the decoder ever says.
        assert events[-1] is errors[0]
        assert isinstance(errors[0].code, ErrorCode)
        assert errors[0].message
    for event in events[:-1] if errors else events:
        assert isinstance(event, Audio | StreamId | Dtmf | Terminate | ErrorFrame)


@SETTINGS
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_spent_after_error(garbage: bytes, more: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x42\x00\x00" + garbage)  # 0x42 is no kind
    error = decoder.next_event()
    assert isinstance(error, FrameError)
    assert error.code is ErrorCode.UNKNOWN_KIND
    assert decoder.failed
    decoder.feed(frames.encode_audio(b"\x00\x00", 48000) + more)
    assert decoder.next_event() is NEED_DATA
    assert decoder.buffered == 0
    assert decoder.end_of_stream() is None


@pytest.mark.parametrize(
    ("header", "code", "words"),
    [
        ("160003", ErrorCode.BAD_LENGTH, "even"),
        ("01000f", ErrorCode.BAD_LENGTH, "16"),
        ("030002", ErrorCode.BAD_LENGTH, "1"),
        ("420000", ErrorCode.UNKNOWN_KIND, "0x42"),
    ],
)
def test_header_errors_need_no_payload(header: str, code: ErrorCode, words: str) -> None:
    decoder = FrameDecoder()
    decoder.feed(bytes.fromhex(header))
    error = decoder.next_event()
    assert isinstance(error, FrameError)
    assert error.code is code
    assert words in error.message


def test_truncation_reported_at_end_of_stream_only() -> None:
    decoder = FrameDecoder()
    decoder.feed(bytes.fromhex("16000400"))
    assert decoder.next_event() is NEED_DATA
    assert not decoder.failed
    error = decoder.end_of_stream()
    assert isinstance(error, FrameError)
    assert error.code is ErrorCode.TRUNCATED
    assert "4 byte(s)" in error.message
    assert decoder.failed


def test_bad_dtmf_digit() -> None:
    decoder = FrameDecoder()
    decoder.feed(frames.encode(frames.Kind.DTMF, b"z"))
    error = decoder.next_event()
    assert isinstance(error, FrameError)
    assert error.code is ErrorCode.BAD_PAYLOAD


def test_buffer_compacts_during_long_streams() -> None:
    decoder = FrameDecoder()
    frame = frames.encode_audio(bytes(1920), 48000)
    for _ in range(500):
        decoder.feed(frame[:1000])
        decoder.feed(frame[1000:])
        assert drain(decoder) == [Audio(48000, bytes(1920))]
    assert decoder.buffered == 0
    assert len(decoder._buf) < 4 * len(frame)


# -- RawDecoder -------------------------------------------------------------------


@SETTINGS
@given(st.lists(st.binary(max_size=50), max_size=12), st.sampled_from([8000, 16000, 44100]))
def test_raw_decoder_carries_odd_bytes(pieces: list[bytes], rate: int) -> None:
    decoder = RawDecoder(rate)
    out = bytearray()
    for piece in pieces:
        decoder.feed(piece)
        for event in drain(decoder):
            assert isinstance(event, Audio)
            assert event.rate == rate
            assert event.pcm and len(event.pcm) % 2 == 0
            out += event.pcm
    data = b"".join(pieces)
    assert bytes(out) == data[: len(data) & ~1]
    end = decoder.end_of_stream()
    if len(data) % 2:
        assert isinstance(end, FrameError)
        assert end.code is ErrorCode.BAD_LENGTH
    else:
        assert end is None
    assert decoder.end_of_stream() is None


def test_raw_decoder_odd_byte_joins_the_next_read() -> None:
    decoder = RawDecoder(16000)
    decoder.feed(b"\x01\x02\x03")
    assert decoder.next_event() == Audio(16000, b"\x01\x02")
    assert decoder.next_event() is NEED_DATA
    decoder.feed(b"\x04")
    assert decoder.next_event() == Audio(16000, b"\x03\x04")


# -- encoder ----------------------------------------------------------------------


def test_encode_layout() -> None:
    assert frames.encode_audio(b"\x01\x00", 48000) == bytes.fromhex("1600020100")
    assert frames.encode_terminate() == b"\x00\x00\x00"
    value = uuid.UUID(int=1)
    assert frames.encode_uuid(value) == b"\x01\x00\x10" + value.bytes
    assert frames.encode_error(ErrorCode.BUSY, "busy") == b"\xff\x00\x05\x07busy"


def test_encode_rejects_oversize_payload() -> None:
    assert len(frames.encode(frames.Kind.ERROR, bytes(frames.MAX_PAYLOAD))) == 3 + 0xFFFF
    with pytest.raises(ValueError, match="65536"):
        frames.encode(frames.Kind.AUDIO_48K, bytes(frames.MAX_PAYLOAD + 1))
    with pytest.raises(ValueError):
        frames.encode_audio(bytes(frames.MAX_PAYLOAD + 1), 48000)


def test_encode_rejects_odd_audio() -> None:
    with pytest.raises(ValueError, match="16-bit"):
        frames.encode_audio(b"\x00\x00\x00", 48000)


@pytest.mark.parametrize("rate", [0, 11025, 22050, 47999, -48000])
def test_encode_rejects_unknown_rate(rate: int) -> None:
    with pytest.raises(ValueError, match=str(rate)):
        frames.encode_audio(b"\x00\x00", rate)


def test_encode_rejects_bad_kind_code_and_digit() -> None:
    with pytest.raises(ValueError):
        frames.encode(256)
    with pytest.raises(ValueError):
        frames.encode_error(300)
    with pytest.raises(ValueError):
        frames.encode_frame(Dtmf("12"))


@SETTINGS
@given(st.integers(0, 255), st.integers(0, 3), st.sampled_from(["é", "中", "🎤"]))
def test_error_text_is_cut_to_one_frame_on_a_character_boundary(
    code: int, shift: int, char: str
) -> None:
    text = "x" * shift + char * 40000
    data = frames.encode_error(code, text)
    assert 3 + frames.MAX_PAYLOAD - 4 < len(data) <= 3 + frames.MAX_PAYLOAD
    decoder = FrameDecoder()
    decoder.feed(data)
    event = decoder.next_event()
    assert isinstance(event, ErrorFrame)
    assert event.code == code
    assert text.startswith(event.text)  # no U+FFFD from a split character


@SETTINGS
@given(valid_frames)
def test_encode_decode_round_trip(frame: frames.Frame) -> None:
    decoder = FrameDecoder()
    decoder.feed(frames.encode_frame(frame))
    assert drain(decoder) == [frame]
