"""JSON messages on a dialect's wire: decoded once, never raising, every
failure a MessageError that names the field.

Two shapes cover every dialect so far:

- `JsonWire`: a closed tagged union (Twilio's `event`, Vonage's `action`),
  where an unknown tag is an error (with a hint for a known wrong one);
- `decode_event`: an open one (the agent vendors' `type`), where an unknown
  tag is no error but an `Unknown` to pass by: vendors add events over time.

msgspec's own error text is read in one place (`messages.validation_parts`).
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from sidecar.messages import ErrorCode, MessageError, decode_json, validation_parts

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Unknown:
    """A well-formed event of a type this dialect does not act on."""

    type: str


def tag_of(message: msgspec.Struct) -> str:
    """The tag a decoded message of a tagged union was known by (its `event`, say)."""
    return str(type(message).__struct_config__.tag)


class _Envelope:
    """The tag field alone, read only once a decode has failed (the one
    decode stays the fast path)."""

    def __init__(self, tag: str) -> None:
        struct = msgspec.defstruct("Envelope", [(tag, Any, msgspec.UNSET)])
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(struct)
        self._tag = tag

    def read(self, data: bytes) -> Any:
        """The raw tag value (UNSET when absent or unreadable)."""
        try:
            return getattr(self._decoder.decode(data), self._tag)
        except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError):
            return msgspec.UNSET


class JsonWire(Generic[T]):
    """A dialect's JSON messages: one msgspec tagged union, one reused decoder.

    `tag` is the union's tag field (`event` for Twilio, `action` for Vonage's
    commands); `hints` explains known values that are wrong here (a message
    of the other direction).
    """

    def __init__(self, union: Any, tag: str, hints: Mapping[str, str] | None = None) -> None:
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(union)
        self._envelope = _Envelope(tag)
        self._tag = tag
        self._hints = dict(hints or {})

    def decode(self, data: str | bytes, max_bytes: int) -> T | MessageError:
        return decode_json(
            self._decoder,
            data,
            max_bytes,
            lambda text, raw: self._classify(text, self._envelope.read(raw)),
        )

    def _classify(self, text: str, raw_tag: Any) -> MessageError:
        tag = self._tag
        kind = raw_tag if isinstance(raw_tag, str) else None
        reason, path = validation_parts(text)
        if not path and reason == f"Object missing required field `{tag}`":
            return MessageError(ErrorCode.MISSING_TRIGGER, f"message has no `{tag}` field")
        if not path and reason.startswith("Expected `object`"):
            got = reason.partition(", got ")[2].strip("`") or "something else"
            return MessageError(
                ErrorCode.INVALID_JSON, f"message must be a JSON object, got {got}", kind
            )
        if path == tag:
            if raw_tag is None:
                return MessageError(ErrorCode.MISSING_TRIGGER, f"message has a null `{tag}`")
            if kind is not None:
                hint = self._hints.get(kind, f"not a {tag} this dialect knows")
                return MessageError(
                    ErrorCode.UNKNOWN_TRIGGER, f"unknown {tag} {kind!r}: {hint}", kind
                )
            return MessageError(ErrorCode.INVALID_FIELD, f"`{tag}` must be a string", None)
        missing = reason.removeprefix("Object missing required field ")
        if missing != reason:
            field = ".".join(filter(None, (path, missing.strip("`"))))
            what = f"`{kind}` message" if kind is not None else "message"
            return MessageError(ErrorCode.INVALID_FIELD, f"{what} has no `{field}`", kind)
        if "base64" in reason:
            return MessageError(ErrorCode.INVALID_BASE64, f"`{path}` is not valid base64", kind)
        return MessageError(ErrorCode.INVALID_FIELD, f"`{path or tag}`: {reason}", kind)


_type_envelope = _Envelope("type")


def decode_event(
    decoder: msgspec.json.Decoder[T], known: Container[str], data: str | bytes, max_bytes: int
) -> T | Unknown | MessageError:
    """Decode one JSON event tagged by `type`; never raises. `known` are the
    tags `decoder` accepts: any other is an `Unknown`, not an error."""

    def classify(text: str, raw: bytes) -> MessageError | Unknown:
        tag = _type_envelope.read(raw)
        if isinstance(tag, str) and tag not in known:
            return Unknown(tag)
        return _classify_event(text, tag if isinstance(tag, str) else None)

    return decode_json(decoder, data, max_bytes, classify)


def _classify_event(text: str, tag: str | None) -> MessageError:
    reason, field = validation_parts(text)
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


def where(exc: msgspec.ValidationError) -> str:
    """A validation error as "`field`: reason" (the reason alone at the top),
    for a usage error about a user's object."""
    reason, field = validation_parts(str(exc))
    return f"`{field}`: {reason}" if field else reason


__all__ = ["JsonWire", "Unknown", "decode_event", "tag_of", "where"]
