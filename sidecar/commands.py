"""The bot's commands: JSON lines in, neutral actions or a coded refusal out (sans-I/O).

One JSON object per line, `{"command": NAME, "id": ..., ...}`. Each command
is a msgspec Struct tagged by `command`, all decoded by one Decoder; what a
line decodes to is an `Action` (a dialect's neutral item, or one the sidecar
carries out itself: mute, clear) or a `Refusal` with the code and message the
`command_result` event carries. Nothing here knows a socket or a dialect:
`control.py` reads the lines, asks the dialect, and acts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Final

import msgspec

from sidecar import events
from sidecar.dialects.base import (
    AddContext,
    AgentCommand,
    RawSend,
    Say,
    SetInstructions,
    ToolResult,
    UserText,
)
from sidecar.messages import validation_parts

MAX_LINE_BYTES: Final = 1 << 20
"""A command line longer than this (its newline not counted) is refused
`too_large` without being kept: the reader discards it up to its newline."""

Id = str | Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
Text = Annotated[str, msgspec.Meta(min_length=1)]


class _Command(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="command", forbid_unknown_fields=True
):
    # Unknown fields are refused: a misspelt `txt` must not pass as an empty command.
    id: Id | None = None
    """Echoed in the command's `command_result`; any string or integer."""


class ToolResultCommand(_Command, frozen=True, kw_only=True, tag="tool_result"):
    call_id: Text
    output: Any
    """Any JSON value: a string is sent as is, anything else as its JSON text."""


class SayCommand(_Command, frozen=True, kw_only=True, tag="say"):
    text: Text


class UserTextCommand(_Command, frozen=True, kw_only=True, tag="user_text"):
    text: Text


class ContextCommand(_Command, frozen=True, kw_only=True, tag="context"):
    text: Text


class InstructionsCommand(_Command, frozen=True, kw_only=True, tag="instructions"):
    text: Text


class MuteCommand(_Command, frozen=True, kw_only=True, tag="mute"):
    pass


class UnmuteCommand(_Command, frozen=True, kw_only=True, tag="unmute"):
    pass


class ClearCommand(_Command, frozen=True, kw_only=True, tag="clear"):
    pass


class SendCommand(_Command, frozen=True, kw_only=True, tag="send"):
    message: dict[str, Any]
    """A JSON object, sent as one text message: what the vocabulary lacks."""


Command = (
    ToolResultCommand
    | SayCommand
    | UserTextCommand
    | ContextCommand
    | InstructionsCommand
    | MuteCommand
    | UnmuteCommand
    | ClearCommand
    | SendCommand
)

NAMES: Final = tuple(str(c.__struct_config__.tag) for c in Command.__args__)
"""Every command's name, derived from the Structs."""


@dataclass(frozen=True, slots=True)
class Mute:
    """Stop (or resume) sending the meeting's audio."""

    muted: bool


@dataclass(frozen=True, slots=True)
class Clear:
    """Stop playback now, as a server's barge-in does."""


Action = AgentCommand | RawSend | Mute | Clear


@dataclass(frozen=True, slots=True)
class Parsed:
    """A command read: what to do, and what its answer echoes."""

    id: str | int | None
    command: str
    action: Action


@dataclass(frozen=True, slots=True)
class Refusal:
    """A line that is no command the sidecar can take, and why."""

    id: str | int | None
    command: str | None
    error: events.CommandError

    def result(self) -> events.CommandResult:
        return events.CommandResult(id=self.id, command=self.command, ok=False, error=self.error)


class _Envelope(msgspec.Struct):
    """What any object line says of itself, read only to echo it in a refusal."""

    command: Any = None
    id: Any = None


_decoder: Final = msgspec.json.Decoder(Command)
_envelope: Final = msgspec.json.Decoder(_Envelope)
_json: Final = msgspec.json.Encoder()
_FIELD = re.compile(r"at `\$\.([^`.\[]+)|field `([^`]+)`")


def refusal(
    code: str, message: str, id: str | int | None = None, command: str | None = None
) -> Refusal:
    return Refusal(id, command, events.CommandError(code=code, message=message))


def too_large() -> Refusal:
    return refusal(
        "too_large", f"the line is longer than {MAX_LINE_BYTES} bytes ({MAX_LINE_BYTES >> 20} MiB)"
    )


def parse(line: bytes) -> Parsed | Refusal:
    """One line (without its newline) as a command, or why it is none."""
    if len(line) > MAX_LINE_BYTES:
        return too_large()
    try:
        command = _decoder.decode(line)
    except msgspec.ValidationError as exc:
        return _invalid(line, str(exc))
    except msgspec.DecodeError as exc:
        return refusal("invalid_json", f"not a JSON text: {exc}")
    except RecursionError:
        return refusal("invalid_json", "nested too deeply for the JSON decoder")
    return Parsed(command.id, str(command.__struct_config__.tag), action(command))


def action(command: Command) -> Action:
    """The neutral item (or the sidecar's own action) a decoded command is."""
    match command:
        case ToolResultCommand(call_id=call_id, output=output):
            text = output if isinstance(output, str) else _json.encode(output).decode()
            return ToolResult(call_id, text)
        case SayCommand(text=text):
            return Say(text)
        case UserTextCommand(text=text):
            return UserText(text)
        case ContextCommand(text=text):
            return AddContext(text)
        case InstructionsCommand(text=text):
            return SetInstructions(text)
        case MuteCommand():
            return Mute(True)
        case UnmuteCommand():
            return Mute(False)
        case ClearCommand():
            return Clear()
        case SendCommand(message=message):
            return RawSend(_json.encode(message).decode())
    raise AssertionError(command)


def _invalid(line: bytes, reason: str) -> Refusal:
    """Valid JSON of the wrong shape: which code, and what to echo."""
    try:
        envelope = _envelope.decode(line)
    except msgspec.ValidationError:
        message = "a command is one JSON object per line, not " + _kind(reason)
        return refusal("invalid_json", message)
    except msgspec.DecodeError:  # pragma: no cover - the full decoder read it as JSON
        return refusal("invalid_json", reason)
    except RecursionError:
        # The full decoder stopped at a field's type before the depth; the
        # envelope reads every field as any JSON, and goes deeper.
        return refusal("invalid_json", "nested too deeply for the JSON decoder")
    name = envelope.command if isinstance(envelope.command, str) else None
    echo = envelope.id if _echoable(envelope.id) else None
    found = _FIELD.search(reason)
    field = None if found is None else (found[1] or found[2])
    if field == "command" or envelope.command is None:
        if name is None:
            return refusal("invalid_field", "`command` must be a string naming the command", echo)
        return refusal(
            "unknown_command",
            f"no command {name!r}; the commands are {', '.join(NAMES)}",
            echo,
            name,
        )
    if field is None:
        return refusal("invalid_field", reason, echo, name)
    if "unknown field" in reason:
        message = f"`{field}` is not a field of `{name}`"
    elif "missing required field" in reason:
        message = f"`{field}` is missing"
    else:
        message = f"`{field}`: {validation_parts(reason)[0]}"
    return refusal("invalid_field", message, echo, name)


def _kind(reason: str) -> str:
    found = re.search(r"got `([^`]+)`", reason)
    return f"a JSON {found[1]}" if found else "this"


def _echoable(value: object) -> bool:
    # What `id` may be; anything else is not echoed (it is what was wrong).
    return isinstance(value, str) or (
        isinstance(value, int) and not isinstance(value, bool) and -(1 << 63) <= value < (1 << 63)
    )


class LineReader:
    """Bytes in, lines out, holding at most MAX_LINE_BYTES of one line.

    A longer line is not kept: it yields one `too_large` refusal and the
    reader discards up to its newline. Blank lines are skipped; a `\\r`
    before the newline is dropped.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> Iterator[bytes | Refusal]:
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start:end]
            start = len(data) if end < 0 else end + 1
            if not self._discarding:
                if len(self._buffer) + len(piece) > self._limit + 1:
                    # +1: the \r a line may carry before its newline is no content.
                    self._buffer.clear()
                    self._discarding = True
                    yield too_large()
                else:
                    self._buffer += piece
            if end >= 0:
                if not self._discarding:
                    yield from self._line()
                self._discarding = False

    def end(self) -> Iterator[bytes | Refusal]:
        """The input ended: a last line without its newline still counts."""
        if not self._discarding:
            yield from self._line()
        self._discarding = False

    def _line(self) -> Iterator[bytes | Refusal]:
        line = bytes(self._buffer).removesuffix(b"\r")
        self._buffer.clear()
        if len(line) > self._limit:
            yield too_large()
        elif line.strip():
            yield line
