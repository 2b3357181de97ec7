"""The command parser: every shape of line -> its action or its error code."""

from __future__ import annotations

import json

import pytest

from sidecar.commands import (
    MAX_LINE_BYTES,
    NAMES,
    Clear,
    LineReader,
    Mute,
    Parsed,
    Refusal,
    parse,
)
from sidecar.dialects.base import (
    COMMANDS,
    AddContext,
    RawSend,
    Say,
    SetInstructions,
    ToolResult,
    UserText,
)

GOOD = [
    ('{"command": "say", "text": "Hello"}', None, Say("Hello")),
    ('{"command": "say", "id": "a1", "text": "Hi"}', "a1", Say("Hi")),
    (
        '{"command": "user_text", "id": 7, "text": "What time is it?"}',
        7,
        UserText("What time is it?"),
    ),
    ('{"command": "context", "text": "Ann joined"}', None, AddContext("Ann joined")),
    ('{"command": "instructions", "text": "Be brief"}', None, SetInstructions("Be brief")),
    ('{"command": "mute"}', None, Mute(True)),
    ('{"command": "unmute", "id": -1}', -1, Mute(False)),
    ('{"command": "clear", "id": null}', None, Clear()),
    (
        '{"command": "tool_result", "call_id": "c1", "output": "sunny"}',
        None,
        ToolResult("c1", "sunny"),
    ),
    (
        '{"command": "tool_result", "call_id": "c1", "output": {"temp": 21, "ok": true}}',
        None,
        ToolResult("c1", '{"temp":21,"ok":true}'),
    ),
    ('{"command": "tool_result", "call_id": "c1", "output": null}', None, ToolResult("c1", "null")),
    (
        '{"command": "tool_result", "call_id": "c1", "output": [1, 2]}',
        None,
        ToolResult("c1", "[1,2]"),
    ),
    (
        '{"command": "send", "message": {"type": "input_audio_buffer.clear"}}',
        None,
        RawSend('{"type":"input_audio_buffer.clear"}'),
    ),
]


@pytest.mark.parametrize(("line", "ident", "action"), GOOD, ids=[g[0][:40] for g in GOOD])
def test_a_good_command_becomes_its_action(line: str, ident: object, action: object) -> None:
    parsed = parse(line.encode())
    assert isinstance(parsed, Parsed), parsed
    assert parsed.id == ident
    assert parsed.action == action
    assert parsed.command == json.loads(line)["command"]


BAD = [
    # (line, code, echoed id, echoed command, words the message must hold)
    ("{", "invalid_json", None, None, "not a JSON text"),
    ('{"command": "say", "text": "a"', "invalid_json", None, None, "JSON"),
    ("\xff", "invalid_json", None, None, "JSON"),
    ("[1, 2]", "invalid_json", None, None, "one JSON object per line, not a JSON array"),
    ('"say"', "invalid_json", None, None, "JSON str"),
    ("42", "invalid_json", None, None, "object"),
    ("{}", "invalid_field", None, None, "`command`"),
    ('{"id": "x"}', "invalid_field", "x", None, "`command`"),
    ('{"command": 5, "id": 3}', "invalid_field", 3, None, "`command`"),
    ('{"command": null}', "invalid_field", None, None, "`command`"),
    ('{"command": "shout", "id": "q"}', "unknown_command", "q", "shout", "no command 'shout'"),
    ('{"command": "Say", "text": "a"}', "unknown_command", None, "Say", "say, user_text"),
    ('{"command": "say"}', "invalid_field", None, "say", "`text` is missing"),
    ('{"command": "say", "text": ""}', "invalid_field", None, "say", "`text`"),
    ('{"command": "say", "text": 5, "id": 1}', "invalid_field", 1, "say", "`text`: Expected `str`"),
    ('{"command": "say", "txt": "a"}', "invalid_field", None, "say", "`txt` is not a field"),
    ('{"command": "mute", "muted": true}', "invalid_field", None, "mute", "`muted`"),
    ('{"command": "mute", "id": 1.5}', "invalid_field", None, "mute", "`id`"),
    ('{"command": "mute", "id": true}', "invalid_field", None, "mute", "`id`"),
    ('{"command": "mute", "id": {"a": 1}}', "invalid_field", None, "mute", "`id`"),
    ('{"command": "mute", "id": 18446744073709551616}', "invalid_field", None, "mute", "`id`"),
    ('{"command": "tool_result", "output": 1}', "invalid_field", None, "tool_result", "`call_id`"),
    (
        '{"command": "tool_result", "call_id": "c"}',
        "invalid_field",
        None,
        "tool_result",
        "`output`",
    ),
    (
        '{"command": "tool_result", "call_id": 3, "output": 1}',
        "invalid_field",
        None,
        "tool_result",
        "`call_id`",
    ),
    ('{"command": "send", "message": "x"}', "invalid_field", None, "send", "`message`"),
    ('{"command": "send", "message": [1]}', "invalid_field", None, "send", "`message`"),
    ('{"command": "send"}', "invalid_field", None, "send", "`message` is missing"),
    ("[" * 5000 + "]" * 5000, "invalid_json", None, None, ""),
    # Nested where the decoder first refuses a type, deeper than the envelope reads.
    (
        '{"command": "say", "text": ' + "[" * 5000 + "]" * 5000 + "}",
        "invalid_json",
        None,
        None,
        "nested",
    ),
    (
        '{"command": "say", "text": "x", "zz": ' + "[" * 5000 + "]" * 5000 + "}",
        "invalid_json",
        None,
        None,
        "nested",
    ),
]


@pytest.mark.parametrize(
    ("line", "code", "ident", "command", "words"), BAD, ids=[b[0][:40] for b in BAD]
)
def test_every_bad_shape_is_answered_with_its_code(
    line: str, code: str, ident: object, command: str | None, words: str
) -> None:
    parsed = parse(line.encode("utf-8", "surrogateescape") if line != "\xff" else b"\xff")
    assert isinstance(parsed, Refusal), parsed
    result = parsed.result()
    assert result.ok is False
    assert result.error is not None
    assert (result.error.code, result.id, result.command) == (code, ident, command)
    assert words in result.error.message


def test_a_line_over_the_limit_is_too_large_without_being_decoded() -> None:
    line = b'{"command": "say", "text": "' + b"a" * MAX_LINE_BYTES + b'"}'
    parsed = parse(line)
    assert isinstance(parsed, Refusal)
    assert parsed.error.code == "too_large"


def test_every_agent_command_has_a_command_struct() -> None:
    # The vocabulary's names (base.COMMANDS) are all commands of the parser.
    assert set(COMMANDS.values()) <= set(NAMES)
    assert {"mute", "unmute", "clear", "send"} <= set(NAMES)


# -- the line reader ------------------------------------------------------------------


def lines(reader: LineReader, *chunks: bytes, end: bool = True) -> list[bytes | str]:
    out: list[bytes | str] = []
    for chunk in chunks:
        out += [x if isinstance(x, bytes) else x.error.code for x in reader.feed(chunk)]
    if end:
        out += [x if isinstance(x, bytes) else x.error.code for x in reader.end()]
    return out


def test_lines_split_anywhere_come_out_whole() -> None:
    reader = LineReader()
    assert lines(reader, b'{"a"', b":1}\r\n\n  \n{", b'"b":2}\n', end=False) == [
        b'{"a":1}',
        b'{"b":2}',
    ]
    assert lines(reader, b"{}") == [b"{}"]


def test_a_long_line_is_discarded_to_its_newline_and_answered_once() -> None:
    reader = LineReader(limit=10)
    got = lines(reader, b"0123456789\n", b"0123456789a", b"bcdef" * 100, b"g\n{}\n")
    assert got == [b"0123456789", "too_large", b"{}"]
    # Nothing of the long line was held.
    assert len(reader._buffer) == 0


def test_a_line_exactly_at_the_limit_with_a_carriage_return_is_taken() -> None:
    reader = LineReader(limit=4)
    assert lines(reader, b"abcd\r\nabcde\r\n") == [b"abcd", "too_large"]


def test_a_long_last_line_without_newline_is_too_large() -> None:
    reader = LineReader(limit=4)
    assert lines(reader, b"abcdefgh") == ["too_large"]
    reader = LineReader(limit=4)
    assert lines(reader, b"abc", b"de") == ["too_large"]
