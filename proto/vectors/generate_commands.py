"""Author the golden vectors of the control channel's commands (commands.json).

Like the other generators, this imports nothing from `sidecar`: each case is
written from the command table of the README (what a line asks for, and the
neutral item it becomes) and the error codes of `command_result`, so the
vectors check the parser instead of restating it.

    python proto/vectors/generate_commands.py           # rewrite commands.json
    python proto/vectors/generate_commands.py --check   # exit 1 if it is stale

A case is `{"name", "description", "line", "expect"}`: `line` is one line a
bot writes (without its newline); `expect` is either

- `{"item": {...}, "id": ID}`: the command is taken; `item` is the neutral
  item it becomes: `{"kind": "tool_result", "call_id": C, "output": TEXT}`
  (TEXT: a string output as is, anything else as its compact JSON text),
  `{"kind": "say"|"user_text"|"context"|"instructions", "text": T}`,
  `{"kind": "mute"}`, `{"kind": "unmute"}`, `{"kind": "clear"}`,
  `{"kind": "send", "message": TEXT}` (the object's compact JSON text);
- `{"error": CODE, "id": ID, "command": NAME, "field": F}`: refused with that
  code (`invalid_json`, `unknown_command`, `invalid_field`, `too_large`);
  `id` and `command` are what the `command_result` echoes (null when the line
  had none that could be read); `field`, where present, is text the message
  must contain (the field named).

A case with `pad: {"char": C, "count": N}` stands for a line too long to
write here: `{PAD}` in `line` is replaced by C repeated N times.

Whether the dialect can say an item (`unsupported`), whether a call is still
waiting (`stale`) and whether another client holds the socket (`busy`) depend
on the running sidecar, not on the line: they are not vectors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MAX_LINE_BYTES = 1 << 20
PAD = "{PAD}"

Case = dict[str, Any]


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def taken(name: str, description: str, command: Case, item: Case) -> Case:
    return {
        "name": name,
        "description": description,
        "line": compact(command),
        "expect": {"item": item, "id": command.get("id")},
    }


def refused(
    name: str,
    description: str,
    line: str,
    error: str,
    id: object = None,
    command: str | None = None,
    field: str | None = None,
) -> Case:
    expect: Case = {"error": error, "id": id, "command": command}
    if field is not None:
        expect["field"] = field
    return {"name": name, "description": description, "line": line, "expect": expect}


def cases() -> list[Case]:
    weather = {"city": "Paris", "temp_c": 21.5, "sunny": True}
    return [
        taken(
            "tool_result_string",
            "a string output is sent as is",
            {"command": "tool_result", "id": "r1", "call_id": "call_1", "output": "21 degrees"},
            {"kind": "tool_result", "call_id": "call_1", "output": "21 degrees"},
        ),
        taken(
            "tool_result_object",
            "any other output is sent as its JSON text",
            {"command": "tool_result", "call_id": "call_1", "output": weather},
            {"kind": "tool_result", "call_id": "call_1", "output": compact(weather)},
        ),
        taken(
            "tool_result_null",
            "null is a JSON value too",
            {"command": "tool_result", "call_id": "c", "output": None},
            {"kind": "tool_result", "call_id": "c", "output": "null"},
        ),
        taken(
            "tool_result_number",
            "a number output, as its JSON text",
            {"command": "tool_result", "call_id": "c", "output": 42},
            {"kind": "tool_result", "call_id": "c", "output": "42"},
        ),
        taken(
            "say",
            "the agent says the text",
            {"command": "say", "id": 1, "text": "Hello everyone, I am the notetaker."},
            {"kind": "say", "text": "Hello everyone, I am the notetaker."},
        ),
        taken(
            "user_text",
            "a user turn as text, non-ASCII kept",
            {"command": "user_text", "text": "Wie spät ist es?"},
            {"kind": "user_text", "text": "Wie spät ist es?"},
        ),
        taken(
            "context",
            "something the agent should know",
            {"command": "context", "text": "Ann joined the meeting."},
            {"kind": "context", "text": "Ann joined the meeting."},
        ),
        taken(
            "instructions",
            "new instructions",
            {"command": "instructions", "text": "Answer in one sentence."},
            {"kind": "instructions", "text": "Answer in one sentence."},
        ),
        taken("mute", "mute, with an integer id", {"command": "mute", "id": 7}, {"kind": "mute"}),
        taken("unmute", "unmute", {"command": "unmute"}, {"kind": "unmute"}),
        taken(
            "clear_null_id",
            "an explicit null id",
            {"command": "clear", "id": None},
            {"kind": "clear"},
        ),
        taken(
            "send",
            "send: the object as one text message",
            {"command": "send", "message": {"type": "input_audio_buffer.clear"}},
            {"kind": "send", "message": '{"type":"input_audio_buffer.clear"}'},
        ),
        refused("not_json", "not JSON", '{"command": "say",', "invalid_json"),
        refused("array", "an array is no command", '[{"command": "mute"}]', "invalid_json"),
        refused("string", "a string is no command", '"mute"', "invalid_json"),
        refused("empty_object", "no command named", "{}", "invalid_field", field="command"),
        refused(
            "command_not_string",
            "the command's name must be a string; the id is still echoed",
            '{"command": 3, "id": "x"}',
            "invalid_field",
            id="x",
            field="command",
        ),
        refused(
            "unknown_command",
            "a name that is no command",
            '{"command": "dance", "id": 9}',
            "unknown_command",
            id=9,
            command="dance",
            field="dance",
        ),
        refused(
            "case_matters",
            "names are lower case",
            '{"command": "MUTE"}',
            "unknown_command",
            command="MUTE",
        ),
        refused(
            "say_without_text",
            "a required field missing",
            '{"command": "say", "id": "a"}',
            "invalid_field",
            id="a",
            command="say",
            field="text",
        ),
        refused(
            "say_empty_text",
            "an empty text says nothing",
            '{"command": "say", "text": ""}',
            "invalid_field",
            command="say",
            field="text",
        ),
        refused(
            "say_text_not_string",
            "a field of the wrong type",
            '{"command": "say", "text": 5}',
            "invalid_field",
            command="say",
            field="text",
        ),
        refused(
            "unknown_field",
            "a misspelt field is refused, not ignored",
            '{"command": "say", "txt": "hi"}',
            "invalid_field",
            command="say",
            field="txt",
        ),
        refused(
            "id_float",
            "an id is a string or an integer; a bad one is not echoed",
            '{"command": "mute", "id": 1.5}',
            "invalid_field",
            command="mute",
            field="id",
        ),
        refused(
            "id_bool",
            "true is no id",
            '{"command": "mute", "id": true}',
            "invalid_field",
            command="mute",
            field="id",
        ),
        refused(
            "tool_result_without_output",
            "output is required (null is a value)",
            '{"command": "tool_result", "call_id": "c"}',
            "invalid_field",
            command="tool_result",
            field="output",
        ),
        refused(
            "tool_result_call_id_number",
            "call_id is a string",
            '{"command": "tool_result", "call_id": 1, "output": "x"}',
            "invalid_field",
            command="tool_result",
            field="call_id",
        ),
        refused(
            "send_not_object",
            "send's message must be a JSON object",
            '{"command": "send", "message": "{\\"type\\": \\"x\\"}"}',
            "invalid_field",
            command="send",
            field="message",
        ),
        {
            **refused(
                "too_large",
                "a line over 1 MiB is refused unread",
                compact({"command": "say", "text": PAD}),
                "too_large",
            ),
            "pad": {"char": "a", "count": MAX_LINE_BYTES},
        },
    ]


def render(built: list[Case]) -> str:
    names = [case["name"] for case in built]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise SystemExit(f"duplicate case names: {sorted(duplicates)}")
    return json.dumps(built, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    path = HERE / "commands.json"
    content = render(cases())
    if args.check:
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            print("stale: commands.json; run python proto/vectors/generate_commands.py")
            return 1
        return 0
    path.write_text(content, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
