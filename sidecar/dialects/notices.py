"""What the agent dialects (openai-realtime, deepgram-agent) share.

1. Their stdout events (`transcript`, `agent_error`, `agent_warning`,
   `agent_event`, defined in `sidecar.events`): field values are the
   vendor's own strings, passed through unchanged, so a bot can look a code
   up in the vendor's docs.
2. Decoding a JSON event tagged by `type`, where a type we do not know is not
   an error (both vendors add events over time) but anything else that does
   not fit is, with a sentence that names the field.
3. Quoting the user's --session values in warnings, as compact JSON.
"""

from __future__ import annotations

import json
from collections.abc import Container
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import msgspec

from sidecar.dialects.base import Notice
from sidecar.events import AgentError, AgentEvent, AgentWarning, Transcript
from sidecar.messages import ErrorCode, MessageError, decode_json

T = TypeVar("T")


AgentNotice = Transcript | AgentError | AgentWarning | AgentEvent


def notice(event: AgentNotice) -> Notice:
    return Notice(event)


# -- decoding ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unknown:
    """A well-formed event of a type this dialect does not act on."""

    type: str


class _Envelope(msgspec.Struct):
    type: Any = msgspec.UNSET


_envelope: Final = msgspec.json.Decoder(_Envelope)


def decode_event(
    decoder: msgspec.json.Decoder[T], known: Container[str], data: str | bytes, max_bytes: int
) -> T | Unknown | MessageError:
    """Decode one JSON event; never raises. `known` are the tags `decoder` accepts."""

    def classify(text: str, raw: bytes) -> MessageError | Unknown:
        # Only now look at `type` on its own: the one decode stays the fast path.
        tag = _type_of(raw)
        if isinstance(tag, str) and tag not in known:
            return Unknown(tag)
        return _classify(text, tag if isinstance(tag, str) else None)

    return decode_json(decoder, data, max_bytes, classify)


def _type_of(data: bytes) -> Any:
    try:
        return _envelope.decode(data).type
    except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError):
        return msgspec.UNSET


def _classify(text: str, tag: str | None) -> MessageError:
    # msgspec reports "<reason> - at `$.path`"; the path names the field.
    reason, _, where = text.partition(" - at `")
    field = where.rstrip("`").removeprefix("$").removeprefix(".")
    if not field and reason.startswith("Expected `object`"):
        return MessageError(ErrorCode.INVALID_JSON, f"message must be a JSON object: {reason}")
    if not field and reason == "Object missing required field `type`":
        # The code is the seam's name for "no message kind"; Attendee calls it a trigger.
        return MessageError(ErrorCode.MISSING_TRIGGER, "message has no `type` field")
    if field == "type":
        return MessageError(ErrorCode.INVALID_FIELD, f"`type` must be a string: {reason}")
    if "base64" in reason:
        return MessageError(ErrorCode.INVALID_BASE64, f"`{field}` is not valid base64", tag)
    where_text = f"`{field}`" if field else f"`{tag}` event"
    return MessageError(ErrorCode.INVALID_FIELD, f"{where_text}: {reason}", tag)


def show(value: object) -> str:
    """A --session value as the user wrote it (compact JSON), for a warning."""
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


__all__ = [
    "AgentError",
    "AgentEvent",
    "AgentNotice",
    "AgentWarning",
    "Transcript",
    "Unknown",
    "decode_event",
    "notice",
    "show",
]
