"""The websocket messages, as msgspec Structs, and their codec (sans-I/O).

Attendee's realtime-audio protocol (`realtime_audio.mixed` out,
`realtime_audio.bot_output` in) plus our extensions, which a server that does
not use them never sees. proto/README.md is the contract; proto/schema/ is
generated from the Structs here (`make proto`).

Decoding never raises: a bad message becomes a MessageError carrying a
machine-readable code and a sentence that names the field and the reason.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec

from sidecar.pcm import SAMPLE_BYTES

PROTOCOL_VERSION: Final = 1
SAMPLE_RATES: Final = (8000, 16000, 24000)
PARTICIPANT_SAMPLE_RATES: Final = (8000, 16000)
MAX_MESSAGE_BYTES: Final = 1 << 20

T = TypeVar("T")
U = TypeVar("U")

SampleRate = Literal[8000, 16000, 24000]
ParticipantSampleRate = Literal[8000, 16000]
MarkName = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]

MIXED: Final = "realtime_audio.mixed"
PER_PARTICIPANT: Final = "realtime_audio.per_participant"
BOT_OUTPUT: Final = "realtime_audio.bot_output"
CLEAR: Final = "realtime_audio.clear"
MARK: Final = "realtime_audio.mark"
ERROR: Final = "realtime_audio.error"


class _Message(msgspec.Struct, frozen=True, tag_field="trigger"):
    pass


# -- server -> sidecar ------------------------------------------------------


class BotOutputData(msgspec.Struct, frozen=True):
    chunk: bytes
    sample_rate: SampleRate


class BotOutput(_Message, frozen=True, tag=BOT_OUTPUT):
    """Audio for the bot to play into the meeting (Attendee protocol)."""

    data: BotOutputData


class ClearData(msgspec.Struct, frozen=True):
    pass


class Clear(_Message, frozen=True, tag=CLEAR):
    """Extension: drop all queued, not yet played bot output (barge-in); data optional."""

    data: ClearData | None = ClearData()


class MarkData(msgspec.Struct, frozen=True):
    name: MarkName


class Mark(_Message, frozen=True, tag=MARK):
    """Extension: echo `name` back once everything sent before it has played."""

    data: MarkData


ServerMessage = BotOutput | Clear | Mark


# -- sidecar -> server ------------------------------------------------------


class MixedData(msgspec.Struct, frozen=True):
    chunk: bytes
    sample_rate: SampleRate
    timestamp_ms: int


class MixedAudio(_Message, frozen=True, tag=MIXED):
    """The meeting's mixed audio (Attendee protocol)."""

    bot_id: str
    data: MixedData


class ParticipantData(msgspec.Struct, frozen=True):
    chunk: bytes
    sample_rate: ParticipantSampleRate
    timestamp_ms: int
    participant_uuid: str


class ParticipantAudio(_Message, frozen=True, tag=PER_PARTICIPANT):
    """One participant's audio (Attendee protocol)."""

    bot_id: str
    data: ParticipantData


MarkStatus = Literal["played", "cleared"]


class MarkEchoData(msgspec.Struct, frozen=True):
    name: str
    status: MarkStatus


class MarkEcho(_Message, frozen=True, tag=MARK):
    """Extension: the answer to a server's mark."""

    bot_id: str
    data: MarkEchoData


class ErrorCode(enum.StrEnum):
    MESSAGE_TOO_LARGE = "message_too_large"
    INVALID_JSON = "invalid_json"
    MISSING_TRIGGER = "missing_trigger"
    UNKNOWN_TRIGGER = "unknown_trigger"
    INVALID_FIELD = "invalid_field"
    INVALID_BASE64 = "invalid_base64"
    ODD_LENGTH = "odd_length"
    UNSUPPORTED_SAMPLE_RATE = "unsupported_sample_rate"
    # Not a decoding error: a valid mark the playout had no room to hold.
    TOO_MANY_MARKS = "too_many_marks"


class ErrorData(msgspec.Struct, frozen=True, omit_defaults=True):
    code: ErrorCode
    message: str
    trigger: str | None = None


class Error(_Message, frozen=True, tag=ERROR):
    """Extension: sent only in reply to an invalid message from the server."""

    bot_id: str
    data: ErrorData


SidecarMessage = MixedAudio | ParticipantAudio | MarkEcho | Error


# -- codec --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageError:
    code: ErrorCode
    message: str
    trigger: str | None = None


class _Envelope(msgspec.Struct):
    trigger: Any = msgspec.UNSET


_encoder: Final = msgspec.json.Encoder()
_server_decoder: Final = msgspec.json.Decoder(ServerMessage)
_sidecar_decoder: Final = msgspec.json.Decoder(SidecarMessage)
_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)


def encode(message: ServerMessage | SidecarMessage) -> bytes:
    return _encoder.encode(message)


def decode_server_message(
    data: bytes | str, max_bytes: int = MAX_MESSAGE_BYTES
) -> ServerMessage | MessageError:
    """What the sidecar does with every websocket message it receives."""
    result = _decode(_server_decoder, data, max_bytes)
    if isinstance(result, BotOutput):
        return _check_chunk(result.data.chunk, BOT_OUTPUT) or result
    if isinstance(result, Clear) and result.data is None:
        return Clear()  # `"data": null` means the same as no data
    return result


def decode_sidecar_message(
    data: bytes | str, max_bytes: int = MAX_MESSAGE_BYTES
) -> SidecarMessage | MessageError:
    """What a server (our tools, a conformance check) does with our messages."""
    result = _decode(_sidecar_decoder, data, max_bytes)
    if isinstance(result, MixedAudio):
        return _check_chunk(result.data.chunk, MIXED) or result
    if isinstance(result, ParticipantAudio):
        return _check_chunk(result.data.chunk, PER_PARTICIPANT) or result
    return result


def _decode(
    decoder: msgspec.json.Decoder[T], data: bytes | str, max_bytes: int
) -> T | MessageError:
    return decode_json(
        decoder, data, max_bytes, lambda text, raw: _classify(text, _trigger_of(raw))
    )


def decode_json(
    decoder: msgspec.json.Decoder[T],
    data: bytes | str,
    max_bytes: int,
    classify: Callable[[str, bytes], MessageError | U],
) -> T | MessageError | U:
    """One JSON message through `decoder`, never raising: every dialect's
    bounds and errors in one place. `classify(msgspec's reason, the bytes)`
    names what a message that does not fit got wrong."""
    if isinstance(data, str):
        # UTF-8 never takes fewer bytes than characters: skip encoding a huge text.
        if len(data) > max_bytes:
            return too_large(len(data), max_bytes, at_least=True)
        try:
            data = data.encode()
        except UnicodeEncodeError:
            return MessageError(
                ErrorCode.INVALID_JSON, "message is not valid UTF-8: it holds a lone surrogate"
            )
    if len(data) > max_bytes:
        return too_large(len(data), max_bytes)
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        return classify(str(exc), data)
    except msgspec.DecodeError as exc:
        return MessageError(ErrorCode.INVALID_JSON, f"message is not valid JSON: {exc}")
    except UnicodeDecodeError:
        return MessageError(ErrorCode.INVALID_JSON, "message is not valid UTF-8 text")
    except RecursionError:
        return MessageError(ErrorCode.INVALID_JSON, "message is not valid JSON: nested too deeply")


def too_large(size: int, max_bytes: int, at_least: bool = False) -> MessageError:
    amount = f"at least {size}" if at_least else str(size)
    return MessageError(
        ErrorCode.MESSAGE_TOO_LARGE,
        f"message of {amount} bytes exceeds the limit of {max_bytes} bytes",
    )


def _trigger_of(data: bytes) -> Any:
    """The raw `trigger` value (UNSET when absent or unreadable)."""
    try:
        return _envelope_decoder.decode(data).trigger
    except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError):
        return msgspec.UNSET


def _classify(text: str, raw_trigger: Any) -> MessageError:
    error = _classify_reason(text, raw_trigger if isinstance(raw_trigger, str) else None)
    null_trigger = raw_trigger is None and error.message.startswith("`trigger`:")
    if error.code is ErrorCode.INVALID_FIELD and null_trigger:
        return MessageError(ErrorCode.MISSING_TRIGGER, "message has a null `trigger`", None)
    return error


def validation_parts(text: str) -> tuple[str, str]:
    """msgspec's "<reason> - at `$.path`" as (reason, dotted path; "" at the
    top): the one reader of msgspec's error text."""
    reason, _, where = text.partition(" - at `")
    return reason, where.rstrip("`").removeprefix("$").removeprefix(".")


def _classify_reason(text: str, trigger: str | None) -> MessageError:
    reason, field = validation_parts(text)
    if reason == "Object missing required field `trigger`" and not field:
        return MessageError(ErrorCode.MISSING_TRIGGER, "message has no `trigger` field", None)
    if reason.startswith("Expected `object`") and not field:
        return MessageError(
            ErrorCode.INVALID_JSON, f"message must be a JSON object: {reason}", trigger
        )
    if field == "trigger":
        if reason.startswith("Invalid value"):
            if trigger is None:
                # The envelope was unreadable (say, nested too deeply further on);
                # msgspec quotes the value it rejected.
                trigger = reason.removeprefix("Invalid value '").removesuffix("'")
            return MessageError(ErrorCode.UNKNOWN_TRIGGER, f"unknown trigger {trigger!r}", trigger)
        return MessageError(ErrorCode.INVALID_FIELD, f"`trigger`: {reason}", None)
    if field.endswith("chunk") and "base64" in reason:
        return MessageError(ErrorCode.INVALID_BASE64, f"`{field}` is not valid base64", trigger)
    if field.endswith("sample_rate") and reason.startswith("Invalid enum value"):
        got = reason.removeprefix("Invalid enum value ")
        rates = PARTICIPANT_SAMPLE_RATES if trigger == PER_PARTICIPANT else SAMPLE_RATES
        supported = ", ".join(map(str, rates[:-1])) + f" and {rates[-1]}"
        return MessageError(
            ErrorCode.UNSUPPORTED_SAMPLE_RATE,
            f"`{field}` is {got}; supported rates are {supported}",
            trigger,
        )
    where_text = f"`{field}`" if field else "message"
    return MessageError(ErrorCode.INVALID_FIELD, f"{where_text}: {reason}", trigger)


def _check_chunk(chunk: bytes, trigger: str | None) -> MessageError | None:
    if len(chunk) % SAMPLE_BYTES:
        return MessageError(
            ErrorCode.ODD_LENGTH,
            f"`data.chunk` decodes to {len(chunk)} bytes; 16-bit PCM needs an even count",
            trigger,
        )
    return None
