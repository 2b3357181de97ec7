"""proto/schema/ is generated from the code and must not go stale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest

from sidecar import events, schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "proto" / "schema"
VECTORS = ROOT / "proto" / "vectors"


def test_checked_in_schemas_are_current() -> None:
    assert schema.main([str(SCHEMA_DIR), "--check"]) == 0, "run: make proto"


def test_check_detects_stale_and_missing(tmp_path: Path) -> None:
    assert schema.main([str(tmp_path), "--check"]) == 1
    assert schema.main([str(tmp_path)]) == 0
    assert schema.main([str(tmp_path), "--check"]) == 0
    name = next(iter(schema.SCHEMAS))
    (tmp_path / name).write_text("{}\n")
    assert schema.main([str(tmp_path), "--check"]) == 1


def test_every_schema_file_is_listed() -> None:
    assert {p.name for p in SCHEMA_DIR.glob("*.json")} == set(schema.SCHEMAS)
    assert "events.schema.json" in schema.SCHEMAS


# -- a loose validator: enough JSON Schema to catch a missing or mistyped key ------------

TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def errors(value: Any, node: dict[str, Any], root: dict[str, Any], path: str = "$") -> list[str]:
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        return errors(value, root["$defs"][name], root, path)
    if "anyOf" in node:
        options = [errors(value, option, root, path) for option in node["anyOf"]]
        return [] if any(not o for o in options) else [f"{path}: no anyOf branch matches"]
    found: list[str] = []
    if "enum" in node and value not in node["enum"]:
        found.append(f"{path}: {value!r} not in {node['enum']}")
    kind = node.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        ok = any(
            isinstance(value, TYPES[k]) and not (k in ("integer", "number") and value is True)
            for k in kinds
        )
        if not ok or (isinstance(value, bool) and "boolean" not in kinds):
            return [*found, f"{path}: {value!r} is not {kind}"]
    if isinstance(value, dict):
        for key in node.get("required", []):
            if key not in value:
                found.append(f"{path}: missing {key}")
        for key, sub in node.get("properties", {}).items():
            if key in value:
                found += errors(value[key], sub, root, f"{path}.{key}")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                found += errors(item, extra, root, f"{path}.{key}")
    if isinstance(value, str):
        if len(value) < node.get("minLength", 0):
            found.append(f"{path}: shorter than {node['minLength']}")
        if len(value) > node.get("maxLength", len(value)):
            found.append(f"{path}: longer than {node['maxLength']}")
    return found


def load_schema(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text())
    return result


def message_vectors() -> list[Any]:
    cases = json.loads((VECTORS / "messages.json").read_text(encoding="utf-8"))
    return [pytest.param(c, id=c["name"]) for c in cases if "error" not in c["expect"]]


@pytest.mark.parametrize("case", message_vectors())
def test_valid_message_vectors_fit_the_schema(case: dict[str, Any]) -> None:
    name = (
        "server-message.schema.json"
        if case["direction"] == "server_to_sidecar"
        else "sidecar-message.schema.json"
    )
    root = load_schema(name)
    assert errors(case["expect"], root, root) == []
    assert errors(json.loads(case["json"]), root, root) == []


def test_validator_notices_problems() -> None:
    root = load_schema("server-message.schema.json")
    assert errors({"trigger": "realtime_audio.bot_output"}, root, root)
    bad_rate = {"trigger": "realtime_audio.bot_output", "data": {"chunk": "", "sample_rate": 1}}
    assert errors(bad_rate, root, root)
    assert errors({"trigger": "realtime_audio.mark", "data": {"name": ""}}, root, root)


def test_encode_vectors_fit_the_schema() -> None:
    cases = json.loads((VECTORS / "messages_encode.json").read_text(encoding="utf-8"))
    for case in cases:
        name = (
            "server-message.schema.json"
            if case["direction"] == "server_to_sidecar"
            else "sidecar-message.schema.json"
        )
        root = load_schema(name)
        assert errors(json.loads(case["json"]), root, root) == [], case["name"]


def zero_stats() -> events.Stats:
    """A stats event of a sidecar that has done nothing: every counter zero."""
    values: dict[str, Any] = {}
    for f in msgspec.structs.fields(events.Stats):
        if f.name != "ts_ms":
            values[f.name] = {} if str(f.type).startswith("dict") else 0
            if f.type is bool:
                values[f.name] = False
    return events.Stats(ts_ms=1, **values)


SAMPLE_EVENTS: list[events.Event] = [
    events.Ready(
        audio_in="/run/in.sock",
        audio_out="fd:4",
        url="wss://example.com/ws",
        bot_id="bot_1",
        sample_rate=16000,
        pid=42,
        version="0.1.0",
        contract=1,
        dialect="attendee",
        ts_ms=1,
    ),
    events.Connected(url="wss://example.com/ws", attempt=1, ts_ms=1),
    events.Disconnected(reason="closed", code=1006, url="wss://example.com/ws", ts_ms=1),
    events.Retrying(attempt=1, of=30, delay=2.0, reason="refused", ts_ms=1),
    events.GaveUp(reason="refused", attempts=31, ts_ms=1),
    events.BotConnected(socket="in", ts_ms=1),
    events.BotDisconnected(socket="out", reason="eof", ts_ms=1),
    events.ParticipantJoined(participant_uuid="7f1c0a52-5c5e-4b0e-9a53-1a2b3c4d5e6f", ts_ms=1),
    events.ParticipantLeft(
        participant_uuid="7f1c0a52-5c5e-4b0e-9a53-1a2b3c4d5e6f", reason="eof", ts_ms=1
    ),
    events.InvalidFrame(socket="in", code=2, message="odd", ts_ms=1),
    events.InvalidMessage(code="odd_length", message="x", trigger="t", ts_ms=1),
    events.MarkPlayed(name="m", status="played", ts_ms=1),
    events.PlayoutCleared(dropped_ms=120, heard_ms=None, ts_ms=1),
    events.Transcript(role="assistant", text="Hello.", item_id="item_1", ts_ms=1),
    events.AgentError(message="bad", code="invalid_value", ts_ms=1),
    events.AgentWarning(message="slow", ts_ms=1),
    events.AgentEvent(name="Welcome", request_id="r1", ts_ms=1),
    events.WarningEvent(message="cleartext", code="config", ts_ms=1),
    events.CommandResult(
        id="c1",
        command="say",
        ok=False,
        error=events.CommandError(code="unsupported", message="no"),
        ts_ms=1,
    ),
    events.CommandResult(id=7, command="mute", ok=True, ts_ms=1),
    events.ToolCall(
        call_id="call_1",
        name="clock",
        arguments={"tz": "UTC"},
        arguments_json='{"tz":"UTC"}',
        ts_ms=1,
    ),
    events.ToolCallCancelled(call_id="call_1", reason="cancelled", ts_ms=1),
    events.AgentSpeaking(speaking=True, segment="item_1:0", cause="started", ts_ms=1),
    events.MemoryRestored(turns=12, chars=3400, dropped_turns=2, ts_ms=1),
    events.SessionRotated(reason="cap", after_s=3300.0, ts_ms=1),
    events.Stopped(reason="SIGTERM", exit_code=0, ts_ms=1),
    zero_stats(),
]

# Built with only what their constructors require: optional values left unset.
BARE_EVENTS: list[events.Event] = [
    events.Disconnected(reason="closed", url="ws://h/a", ts_ms=1),
    events.GaveUp(reason="refused", attempts=0, ts_ms=1),
    events.InvalidMessage(code="invalid_json", message="x", ts_ms=1),
    events.ParticipantLeft(participant_uuid="u", reason="eof", ts_ms=1),
]


@pytest.mark.parametrize("event", SAMPLE_EVENTS, ids=lambda e: type(e).__name__)
def test_events_fit_the_schema(event: events.Event) -> None:
    root = load_schema("events.schema.json")
    line = json.loads(msgspec.json.encode(event))
    assert errors(line, root, root) == []
    assert line["event"]


def test_every_event_has_a_sample() -> None:
    assert {type(e) for e in SAMPLE_EVENTS} == set(get_args(events.Event))


@pytest.mark.parametrize(
    "event",
    [pytest.param(e, id=type(e).__name__) for e in SAMPLE_EVENTS]
    + [pytest.param(e, id=f"{type(e).__name__}-bare") for e in BARE_EVENTS],
)
def test_every_field_is_always_present_and_required(event: events.Event) -> None:
    """One shape per event: zeros and missing values are written, not left out."""
    node = load_schema("events.schema.json")["$defs"][type(event).__name__]
    line = json.loads(msgspec.json.encode(event))
    assert set(line) == set(node["properties"]) == set(node["required"])
    assert all("default" not in prop for prop in node["properties"].values())


def test_a_missing_value_is_null() -> None:
    event = events.Disconnected(reason="dead", url="ws://h/a", ts_ms=1)
    line = json.loads(msgspec.json.encode(event))
    assert line == {
        "event": "disconnected",
        "ts_ms": 1,
        "reason": "dead",
        "code": None,
        "url": "ws://h/a",
    }
