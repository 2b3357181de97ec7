"""The command vectors (proto/vectors/commands.json) against the parser, and
against the generated schema (proto/schema/commands.schema.json)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from test_schema import errors, load_schema

from sidecar.commands import Clear, Mute, Parsed, parse
from sidecar.dialects.base import (
    AddContext,
    RawSend,
    Say,
    SetInstructions,
    ToolResult,
    UserText,
)

VECTORS = Path(__file__).resolve().parent.parent / "proto" / "vectors"
Json = dict[str, Any]


def cases() -> list[Json]:
    loaded: list[Json] = json.loads((VECTORS / "commands.json").read_text(encoding="utf-8"))
    return loaded


def line_of(case: Json) -> str:
    line: str = case["line"]
    pad = case.get("pad")
    return line if pad is None else line.replace("{PAD}", pad["char"] * pad["count"])


def item_json(action: object) -> Json:
    match action:
        case ToolResult(call_id=call_id, output=output):
            return {"kind": "tool_result", "call_id": call_id, "output": output}
        case Say(text=text):
            return {"kind": "say", "text": text}
        case UserText(text=text):
            return {"kind": "user_text", "text": text}
        case AddContext(text=text):
            return {"kind": "context", "text": text}
        case SetInstructions(text=text):
            return {"kind": "instructions", "text": text}
        case Mute(muted=muted):
            return {"kind": "mute" if muted else "unmute"}
        case Clear():
            return {"kind": "clear"}
        case RawSend(message=message):
            return {"kind": "send", "message": message}
    raise AssertionError(action)


@pytest.mark.parametrize("case", cases(), ids=lambda c: str(c["name"]))
def test_vector(case: Json) -> None:
    parsed = parse(line_of(case).encode())
    expect = case["expect"]
    if "item" in expect:
        assert isinstance(parsed, Parsed), parsed
        assert item_json(parsed.action) == expect["item"]
        assert parsed.id == expect["id"]
        return
    assert not isinstance(parsed, Parsed), parsed
    result = parsed.result()
    assert result.error is not None
    assert (result.error.code, result.id, result.command) == (
        expect["error"],
        expect["id"],
        expect["command"],
    )
    assert expect.get("field", "") in result.error.message


@pytest.mark.parametrize("case", cases(), ids=lambda c: str(c["name"]))
def test_the_schema_agrees_with_the_vector(case: Json) -> None:
    if case.get("pad") or case["expect"].get("error") == "invalid_json":
        return  # not an object, or too long to matter here
    root = load_schema("commands.schema.json")
    found = errors(json.loads(line_of(case)), root, root)
    if "item" in case["expect"]:
        assert found == []
    elif case["name"] != "unknown_field":
        # The checker here does not read additionalProperties: false; every
        # other refusal is one the schema states.
        assert found, case["name"]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "command_vector_generator", VECTORS / "generate_commands.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vectors_are_up_to_date() -> None:
    assert generator().main(["--check"]) == 0, "run: python proto/vectors/generate_commands.py"
