"""AudioSocket framing for the two Unix sockets, sans-I/O.

Every packet is a 1-byte kind, a 2-byte big-endian payload length, then the
payload (Asterisk's AudioSocket convention). Decoders take bytes however the
stream happens to be split and hand back whole frames or a typed error; they
never raise on garbage. See proto/README.md for the contract.
"""

from __future__ import annotations

import enum
import struct
import uuid
from dataclasses import dataclass
from typing import Final, Self, assert_never

from sidecar.pcm import SAMPLE_BYTES

HEADER: Final = struct.Struct(">BH")
MAX_PAYLOAD: Final = 0xFFFF


class Kind(enum.IntEnum):
    TERMINATE = 0x00
    UUID = 0x01
    DTMF = 0x03
    AUDIO_8K = 0x10
    AUDIO_12K = 0x11
    AUDIO_16K = 0x12
    AUDIO_24K = 0x13
    AUDIO_32K = 0x14
    AUDIO_44K1 = 0x15
    AUDIO_48K = 0x16
    AUDIO_96K = 0x17
    AUDIO_192K = 0x18
    ERROR = 0xFF


AUDIO_RATES: Final[dict[int, int]] = {
    Kind.AUDIO_8K: 8000,
    Kind.AUDIO_12K: 12000,
    Kind.AUDIO_16K: 16000,
    Kind.AUDIO_24K: 24000,
    Kind.AUDIO_32K: 32000,
    Kind.AUDIO_44K1: 44100,
    Kind.AUDIO_48K: 48000,
    Kind.AUDIO_96K: 96000,
    Kind.AUDIO_192K: 192000,
}
RATE_KINDS: Final[dict[int, int]] = {rate: kind for kind, rate in AUDIO_RATES.items()}
DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")


class ErrorCode(enum.IntEnum):
    """First payload byte of an 0xff error frame the sidecar sends to the bot.

    proto/README.md lists when each is sent. New codes may be added within v1;
    a bot must treat an unknown code like any other error.
    """

    UNKNOWN_KIND = 0x01  # the kind byte is not in the table
    BAD_LENGTH = 0x02  # payload length impossible for the kind (odd audio, UUID != 16, ...)
    TRUNCATED = 0x03  # the connection closed inside a frame
    UNEXPECTED_FRAME = 0x04  # a valid frame in the wrong place (a UUID that is not first)
    PER_PARTICIPANT_DISABLED = 0x05  # a UUID stream, but the sidecar runs without it
    TOO_MANY_STREAMS = 0x06  # more per-participant streams than --max-participants
    BUSY = 0x07  # the socket already has its one connection
    BAD_PAYLOAD = 0x08  # right length, invalid content (a DTMF byte that is no digit)


@dataclass(frozen=True, slots=True)
class Audio:
    rate: int
    pcm: bytes

    @property
    def samples(self) -> int:
        return len(self.pcm) // SAMPLE_BYTES


@dataclass(frozen=True, slots=True)
class StreamId:
    uuid: uuid.UUID


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Terminate:
    pass


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """An 0xff frame: an error code byte, optionally followed by UTF-8 text."""

    code: int
    text: str = ""


Frame = Audio | StreamId | Dtmf | Terminate | ErrorFrame


@dataclass(frozen=True, slots=True)
class FrameError:
    """The byte stream stopped being valid; the connection cannot continue."""

    code: ErrorCode
    message: str


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()
Event = Frame | FrameError


class _Decoder:
    """Iterating a decoder drains the events its fed bytes complete."""

    def next_event(self) -> Event | _NeedData:
        raise NotImplementedError

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Event:
        event = self.next_event()
        if isinstance(event, _NeedData):
            raise StopIteration
        return event


class FrameDecoder(_Decoder):
    """Incremental AudioSocket decoder.

    After the first FrameError the decoder is spent: TLV framing has no way to
    resynchronise once a length can no longer be trusted, so the connection
    must be closed (the shell sends an 0xff frame first).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._failed = False

    @property
    def failed(self) -> bool:
        return self._failed

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if self._failed:
            return
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_event(self) -> Event | _NeedData:
        if self._failed or self.buffered < HEADER.size:
            return NEED_DATA
        kind, length = HEADER.unpack_from(self._buf, self._pos)
        # Reject what the header alone proves invalid (unknown kind, impossible
        # length) as soon as it is visible, instead of waiting for a payload that
        # may never come.
        header_error = _check_header(kind, length)
        if header_error is not None:
            return self._fail(header_error.code, header_error.message)
        if self.buffered < HEADER.size + length:
            return NEED_DATA
        start = self._pos + HEADER.size
        payload = bytes(self._buf[start : start + length])
        event = _parse(kind, payload)
        if isinstance(event, FrameError):
            self._failed = True
            self._buf.clear()
            self._pos = 0
        else:
            self._pos = start + length
        return event

    def end_of_stream(self) -> FrameError | None:
        """The peer closed; anything still buffered is a truncated frame."""
        if self._failed or not self.buffered:
            return None
        left = self.buffered
        return self._fail(
            ErrorCode.TRUNCATED,
            f"connection closed inside a frame: {left} byte(s) of an incomplete frame discarded",
        )

    def _fail(self, code: ErrorCode, message: str) -> FrameError:
        self._failed = True
        self._buf.clear()
        self._pos = 0
        return FrameError(code, message)


class RawDecoder(_Decoder):
    """Headerless s16le mono at a fixed rate, for piping from ffmpeg or sox."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._pending = bytearray()

    def feed(self, data: bytes) -> None:
        self._pending += data

    def next_event(self) -> Event | _NeedData:
        have = len(self._pending)
        usable = have - have % SAMPLE_BYTES
        if not usable:
            return NEED_DATA
        pcm = bytes(self._pending[:usable])
        del self._pending[:usable]
        return Audio(self.rate, pcm)

    def end_of_stream(self) -> FrameError | None:
        if not self._pending:
            return None
        self._pending.clear()
        return FrameError(
            ErrorCode.BAD_LENGTH, "raw stream ended with an odd byte: half a sample was discarded"
        )


def _known(kind: int) -> bool:
    return kind in AUDIO_RATES or kind in (Kind.TERMINATE, Kind.UUID, Kind.DTMF, Kind.ERROR)


def _unknown_kind(kind: int) -> str:
    return f"unknown frame kind 0x{kind:02x} (valid: 0x00, 0x01, 0x03, 0x10-0x18, 0xff)"


def _check_header(kind: int, length: int) -> FrameError | None:
    """The errors a frame header alone reveals, before its payload arrives."""
    if not _known(kind):
        return FrameError(ErrorCode.UNKNOWN_KIND, _unknown_kind(kind))
    if kind in AUDIO_RATES and length % SAMPLE_BYTES:
        return FrameError(
            ErrorCode.BAD_LENGTH,
            f"audio frame 0x{kind:02x} has {length} payload bytes; "
            "16-bit samples need an even count",
        )
    if kind == Kind.UUID and length != 16:
        return FrameError(
            ErrorCode.BAD_LENGTH,
            f"UUID frame has {length} payload bytes; it must have exactly 16",
        )
    if kind == Kind.DTMF and length != 1:
        return FrameError(
            ErrorCode.BAD_LENGTH,
            f"DTMF frame has {length} payload bytes; it must have exactly 1 (one of 0-9 * # A-D)",
        )
    return None


def _parse(kind: int, payload: bytes) -> Event:
    """Decode a whole frame whose header passed `_check_header`."""
    rate = AUDIO_RATES.get(kind)
    if rate is not None:
        return Audio(rate, payload)
    if kind == Kind.UUID:
        return StreamId(uuid.UUID(bytes=payload))
    if kind == Kind.TERMINATE:
        return Terminate()
    if kind == Kind.DTMF:
        digit = payload.decode("ascii", "replace")
        if digit not in DTMF_DIGITS:
            return FrameError(
                ErrorCode.BAD_PAYLOAD,
                f"DTMF frame payload 0x{payload.hex()} is not one of 0-9 * # A-D",
            )
        return Dtmf(digit)
    if not payload:
        # AudioSocket makes the error code optional; 0 means "unspecified".
        return ErrorFrame(0)
    return ErrorFrame(payload[0], payload[1:].decode("utf-8", "replace"))


def encode(kind: int, payload: bytes = b"") -> bytes:
    """One frame, as is: no check that the payload suits the kind."""
    if not 0 <= kind <= 0xFF:
        raise ValueError(f"frame kind {kind} does not fit in one byte")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(kind, len(payload)) + payload


def encode_audio(pcm: bytes, rate: int) -> bytes:
    kind = RATE_KINDS.get(rate)
    if kind is None:
        raise ValueError(f"no AudioSocket kind for sample rate {rate}")
    if len(pcm) % SAMPLE_BYTES:
        raise ValueError(f"audio of {len(pcm)} bytes is not whole 16-bit samples")
    return encode(kind, pcm)


def encode_error(code: int, text: str = "") -> bytes:
    if not 0 <= code <= 0xFF:
        raise ValueError(f"error code {code} does not fit in one byte")
    # Keep within one frame: the text is advice for a human reading a capture.
    # Cut on a character boundary so the text stays valid UTF-8.
    raw = text.encode("utf-8", "replace")[: MAX_PAYLOAD - 1]
    raw = raw.decode("utf-8", "ignore").encode("utf-8")
    return encode(Kind.ERROR, bytes([code]) + raw)


def encode_dtmf(digit: str) -> bytes:
    if digit not in DTMF_DIGITS:
        raise ValueError(f"DTMF digit {digit!r} is not one of 0-9 * # A-D")
    return encode(Kind.DTMF, digit.encode("ascii"))


def encode_uuid(value: uuid.UUID) -> bytes:
    return encode(Kind.UUID, value.bytes)


def encode_terminate() -> bytes:
    return encode(Kind.TERMINATE)


def encode_frame(frame: Frame) -> bytes:
    match frame:
        case Audio(rate=rate, pcm=pcm):
            return encode_audio(pcm, rate)
        case StreamId(uuid=value):
            return encode_uuid(value)
        case Dtmf(digit=digit):
            return encode_dtmf(digit)
        case Terminate():
            return encode_terminate()
        case ErrorFrame(code=code, text=text):
            return encode_error(code, text)
    assert_never(frame)
