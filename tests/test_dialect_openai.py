"""The openai-realtime dialect: its session state machine, then against the fake API."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio
import trio_websocket
from agent_servers import (
    AgentClient,
    RealtimeConfig,
    RealtimeServer,
    load_vectors,
    options_from,
    run_vector,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import tone

from sidecar.dialects import DIALECTS
from sidecar.dialects.base import (
    AddContext,
    AudioOut,
    ClearedOut,
    ClearPlayout,
    CutAudio,
    DtmfOut,
    ErrorOut,
    Heard,
    Invalid,
    MarkOut,
    Notice,
    Options,
    PlayAudio,
    Say,
    SetInstructions,
    ToolCallCancelledIn,
    ToolCallIn,
    ToolResult,
    UserSpeaking,
    UserText,
)
from sidecar.dialects.briefing import Briefing
from sidecar.dialects.notices import AgentError, Transcript
from sidecar.dialects.notices import notice as as_notice
from sidecar.dialects.openai_realtime import (
    MAX_CALLS,
    MAX_SEGMENTS,
    SAY_INSTRUCTIONS,
    OpenAIRealtime,
    OpenAIRealtimeSession,
    segment_id,
)
from sidecar.messages import ErrorCode, MessageError

PCM_FORMAT = {"type": "audio/pcm", "rate": 24000}


def dialect(session: Any = None) -> OpenAIRealtime:
    return OpenAIRealtime(Options(session={} if session is None else session))


def delta(item: str, pcm: bytes, content_index: int = 0) -> str:
    return json.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": "event_1",
            "response_id": "resp_1",
            "item_id": item,
            "output_index": 0,
            "content_index": content_index,
            "delta": base64.b64encode(pcm).decode(),
        }
    )


def ms_of_audio(ms: int) -> bytes:
    return b"\x01\x00" * (24 * ms)


def opened(session: Any = None) -> OpenAIRealtimeSession:
    return dialect(session).session()


def one(items: Any) -> Any:
    assert len(items) == 1, items
    return items[0]


# -- the dialect -----------------------------------------------------------------------


def test_registered_with_its_defaults() -> None:
    assert DIALECTS["openai-realtime"] is OpenAIRealtime
    assert OpenAIRealtime.default_url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert dialect().uplink_audio().rate == 24000
    assert not OpenAIRealtime.per_participant
    assert not OpenAIRealtime.error_replies


def test_auth_header_comes_from_the_environment() -> None:
    assert dialect().auth_headers({"OPENAI_API_KEY": "sk-1 "}, "wss://x") == (
        ("Authorization", "Bearer sk-1"),
    )
    assert dialect().auth_headers({}, "wss://x") == ()
    assert dialect().auth_headers({"OPENAI_API_KEY": "  "}, "wss://x") == ()


def test_opening_is_the_users_session_with_our_formats() -> None:
    user: dict[str, Any] = {
        "instructions": "Be brief.",
        "audio": {
            "output": {"voice": "marin"},
            "input": {"turn_detection": {"type": "semantic_vad"}},
        },
        "tools": [],
    }
    session = opened(user)
    update = json.loads(one(session.opening()))
    assert update == {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "instructions": "Be brief.",
            "audio": {
                "output": {"format": PCM_FORMAT, "voice": "marin"},
                "input": {"format": PCM_FORMAT, "turn_detection": {"type": "semantic_vad"}},
            },
            "tools": [],
        },
    }
    assert dialect(user).warnings() == ()
    assert dialect(user).problems() == ()
    assert user["audio"]["output"] == {"voice": "marin"}, "the user's object is not modified"


def test_an_empty_session_still_sets_type_and_formats() -> None:
    update = json.loads(one(opened().opening()))
    assert update["session"] == {
        "type": "realtime",
        "audio": {"input": {"format": PCM_FORMAT}, "output": {"format": PCM_FORMAT}},
    }


@pytest.mark.parametrize(
    "user, needle",
    [
        ({"type": "transcription"}, '`type` "transcription" replaced by "realtime"'),
        ({"audio": {"input": {"format": {"type": "audio/pcmu"}}}}, "audio.input.format"),
        ({"audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}}}, "audio.output"),
        ({"audio": {"input": {"turn_detection": None}}}, "turn detection is off"),
        ({"audio": {"input": {"turn_detection": {"create_response": False}}}}, "create_response"),
        ({"output_modalities": ["text"]}, "text only"),
    ],
)
def test_warnings_name_what_disagrees(user: dict[str, Any], needle: str) -> None:
    d = dialect(user)
    assert d.problems() == ()
    assert any(needle in w for w in d.warnings()), d.warnings()
    update = json.loads(one(d.session().opening()))
    assert update["session"]["type"] == "realtime"
    assert update["session"]["audio"]["input"]["format"] == PCM_FORMAT
    assert update["session"]["audio"]["output"]["format"] == PCM_FORMAT


def test_formats_that_agree_raise_no_warning() -> None:
    same = {"audio": {"input": {"format": {"type": "audio/pcm"}}, "output": {"format": PCM_FORMAT}}}
    assert dialect(same).warnings() == ()
    assert dialect({"tools": [{"type": "mcp", "server_label": "x"}]}).warnings() == ()
    # Function tools are answered by the bot's tool_result: nothing to warn of.
    tools = [{"type": "function", "name": "f", "parameters": {}}]
    assert dialect({"tools": tools}).warnings() == ()


@pytest.mark.parametrize(
    "user, needle",
    [
        ([], "must be a JSON object"),
        ("instructions", "must be a JSON object"),
        ({"audio": []}, "`audio` must be an object"),
        ({"audio": {"output": 3}}, "`audio.output` must be an object"),
        ({"voice": "alloy"}, "`audio.output.voice`"),
        ({"input_audio_format": "pcm16"}, "`audio.input.format`"),
        ({"modalities": ["audio"]}, "`output_modalities`"),
        ({"turn_detection": None}, "`audio.input.turn_detection`"),
    ],
)
def test_problems_are_usage_errors(user: Any, needle: str) -> None:
    problems = dialect(user).problems()
    assert any(needle in p for p in problems), problems
    # Even so, the session object sent is well-formed.
    assert json.loads(one(dialect(user).session().opening()))["type"] == "session.update"


# -- the language-neutral vectors ------------------------------------------------------


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c["name"]) for c in load_vectors("openai-realtime.json")]
)
def test_vector(case: dict[str, Any]) -> None:
    run_vector(OpenAIRealtime(options_from(case["options"])), case)


# -- up ---------------------------------------------------------------------------------


def test_audio_is_appended_as_base64() -> None:
    wire = one(opened().encode(AudioOut(b"\x01\x00\xff\x7f", 24000, 123)))
    assert wire == '{"type":"input_audio_buffer.append","audio":"AQD/fw=="}'


def test_what_the_api_has_no_message_for_sends_nothing() -> None:
    session = opened()
    for item in (
        MarkOut("m", True),
        DtmfOut("1"),
        ErrorOut(MessageError(ErrorCode.INVALID_JSON, "x")),
        ClearedOut(),
        AudioOut(b"\x00\x00", 24000, 0, stream="6f1c2a5e-3b9d-4e7a-8c21-0d4f5a6b7c8d"),
    ):
        assert session.encode(item) == ()


# -- down: audio and segments ---------------------------------------------------------------


def test_deltas_play_with_their_segment() -> None:
    session = opened()
    play = one(session.receive(delta("item_a", ms_of_audio(40), content_index=1)))
    assert play == PlayAudio(ms_of_audio(40), 24000, "item_a:1")
    assert segment_id("item:with:colons", 2).rpartition(":") == ("item:with:colons", ":", "2")


def test_truncate_says_what_was_heard() -> None:
    session = opened()
    session.receive(delta("item_a", ms_of_audio(300)))
    started = session.receive('{"type":"input_audio_buffer.speech_started"}')
    assert tuple(started) == (ClearPlayout(), UserSpeaking())
    # The user's item names the turn; a bad one never stops the clear.
    named = session.receive('{"type":"input_audio_buffer.speech_started","item_id":"item_u"}')
    assert tuple(named) == (ClearPlayout(), UserSpeaking("item_u"))
    odd = session.receive('{"type":"input_audio_buffer.speech_started","item_id":5}')
    assert tuple(odd) == (ClearPlayout(), UserSpeaking())
    wire = one(session.encode(ClearedOut(Heard("item_a:0", 120))))
    assert wire == (
        '{"type":"conversation.item.truncate","item_id":"item_a","content_index":0,'
        '"audio_end_ms":120}'
    )


def test_truncate_never_claims_more_than_was_received() -> None:
    session = opened()
    session.receive(delta("item_a", ms_of_audio(100) + b"\x00" * 46))  # 100.96 ms: 100
    message = json.loads(one(session.encode(ClearedOut(Heard("item_a:0", 5000)))))
    assert message["audio_end_ms"] == 100


def test_truncate_clamps_a_negative_position_to_zero() -> None:
    session = opened()
    session.receive(delta("item_a", ms_of_audio(100)))
    assert json.loads(one(session.encode(ClearedOut(Heard("item_a:0", -5)))))["audio_end_ms"] == 0


def test_a_part_heard_in_full_is_not_truncated() -> None:
    session = opened()
    session.receive(delta("item_a", ms_of_audio(100)))
    session.receive(
        '{"type":"response.output_audio.done","item_id":"item_a","content_index":0,'
        '"response_id":"r","output_index":0,"event_id":"e"}'
    )
    assert session.encode(ClearedOut(Heard("item_a:0", 100))) == ()
    assert one(session.encode(ClearedOut(Heard("item_a:0", 99))))


def test_a_part_is_truncated_once() -> None:
    session = opened()
    session.receive(delta("item_a", ms_of_audio(100)))
    assert one(session.encode(ClearedOut(Heard("item_a:0", 50))))
    assert session.encode(ClearedOut(Heard("item_a:0", 60))) == ()


def test_unknown_segments_are_not_truncated() -> None:
    session = opened()
    assert session.encode(ClearedOut(Heard("item_elsewhere:0", 50))) == ()
    # A segment of an earlier connection is unknown to the new one.
    first = opened()
    first.receive(delta("item_a", ms_of_audio(100)))
    assert opened().encode(ClearedOut(Heard("item_a:0", 50))) == ()


def test_audio_of_a_cut_part_is_dropped_but_counted() -> None:
    session = opened()
    session.receive(delta("item_a", ms_of_audio(100)))
    session.receive('{"type":"input_audio_buffer.speech_started","audio_start_ms":1}')
    # Not played, but said: the downlink counts it among the drops.
    assert session.receive(delta("item_a", ms_of_audio(100))) == (CutAudio(2400, 24000),)
    assert session.statistics().dropped_deltas == 1
    # The API counts what it sent, so the late audio may be truncated into.
    message = json.loads(one(session.encode(ClearedOut(Heard("item_a:0", 150)))))
    assert message["audio_end_ms"] == 150
    # The next reply is a new item, and plays.
    assert one(session.receive(delta("item_b", ms_of_audio(20)))).segment == "item_b:0"


def test_segments_are_bounded() -> None:
    session = opened()
    for n in range(MAX_SEGMENTS + 1):
        session.receive(delta(f"item_{n}", ms_of_audio(10)))
    assert session.encode(ClearedOut(Heard("item_0:0", 5))) == ()
    assert one(session.encode(ClearedOut(Heard("item_1:0", 5))))


def test_an_empty_delta_plays_nothing() -> None:
    assert opened().receive(delta("item_a", b"")) == ()


# -- down: notices, errors, ignored ------------------------------------------------------------


def test_transcripts_become_events() -> None:
    session = opened()
    done = {
        "type": "response.output_audio_transcript.done",
        "event_id": "e",
        "response_id": "r",
        "item_id": "item_a",
        "output_index": 0,
        "content_index": 0,
        "transcript": "Hello there.",
    }
    notice = one(session.receive(json.dumps(done)))
    assert notice == as_notice(
        Transcript(role="assistant", text="Hello there.", item_id="item_a", segment="item_a:0")
    )
    heard = {
        "type": "conversation.item.input_audio_transcription.completed",
        "event_id": "e",
        "item_id": "item_u",
        "content_index": 0,
        "transcript": "Hi.",
        "usage": {"type": "duration", "seconds": 1.2},
    }
    text_reply = {"type": "response.output_text.done", "item_id": "item_t", "text": "In text."}
    assert one(session.receive(json.dumps(text_reply))) == as_notice(
        Transcript(role="assistant", text="In text.", item_id="item_t")
    )
    event = one(session.receive(json.dumps(heard))).event
    line = json.loads(msgspec.json.encode(event))
    assert line == {
        "event": "transcript",
        "ts_ms": 0,
        "role": "user",
        "text": "Hi.",
        "item_id": "item_u",
        "segment": None,
    }


def test_errors_become_agent_error_events() -> None:
    session = opened()
    error = {
        "type": "error",
        "event_id": "event_9",
        "error": {
            "type": "invalid_request_error",
            "code": None,
            "message": "Audio content of 100ms is already shorter than 200ms",
            "param": "audio_end_ms",
            "event_id": None,
        },
    }
    event = one(session.receive(json.dumps(error))).event
    assert event == AgentError(
        message="Audio content of 100ms is already shorter than 200ms",
        type="invalid_request_error",
        param="audio_end_ms",
    )
    assert json.loads(msgspec.json.encode(event))["event"] == "agent_error"
    assert not session.reconnect_at_once(1000, "")


def test_the_session_length_close_reconnects_at_once() -> None:
    session = opened()
    reason = "Your session hit the maximum duration of 60 minutes."
    assert session.reconnect_at_once(1001, reason)
    assert not session.reconnect_at_once(1001, "going away")
    assert not session.reconnect_at_once(1000, reason)
    assert not session.reconnect_at_once(None, "")
    expired = '{"type":"error","error":{"code":"session_expired","message":"' + reason + '"}}'
    session.receive(expired)
    assert session.reconnect_at_once(1001, "")
    assert session.reconnect_at_once(1000, "")
    # After that error, a connection lost without a close is still a failure.
    assert not session.reconnect_at_once(1006, "")
    assert not session.reconnect_at_once(None, "")


def test_unknown_event_types_are_ignored_and_counted() -> None:
    session = opened()
    for kind in ("session.created", "response.content_part.done", "rate_limits.updated", "x.y"):
        assert session.receive(json.dumps({"type": kind, "anything": [1, 2]})) == ()
    assert session.statistics().ignored == 4


@pytest.mark.parametrize(
    "text, code, needle",
    [
        ("not json", ErrorCode.INVALID_JSON, "not valid JSON"),
        ("[1]", ErrorCode.INVALID_JSON, "JSON object"),
        ('{"delta": "AAA="}', ErrorCode.MISSING_TRIGGER, "`type`"),
        ('{"type": 5}', ErrorCode.INVALID_FIELD, "`type` must be a string"),
        ('{"type":"response.output_audio.delta","item_id":"a","content_index":0,"delta":"!"}',
         ErrorCode.INVALID_BASE64, "`delta`"),
        ('{"type":"response.output_audio.delta","item_id":"a","content_index":0,"delta":"AA=="}',
         ErrorCode.ODD_LENGTH, "even"),
        ('{"type":"response.output_audio.delta","content_index":0,"delta":"AAA="}',
         ErrorCode.INVALID_FIELD, "item_id"),
        ('{"type":"response.output_audio.delta","item_id":"a","content_index":-1,"delta":""}',
         ErrorCode.INVALID_FIELD, "content_index"),
        ('{"type":"error","error":"boom"}', ErrorCode.INVALID_FIELD, "`error`"),
    ],
)  # fmt: skip
def test_invalid_messages_say_what_is_wrong(text: str, code: ErrorCode, needle: str) -> None:
    result = one(opened().receive(text))
    assert isinstance(result, Invalid)
    assert result.error.code is code
    assert needle in result.error.message


def test_oversized_messages_are_invalid() -> None:
    session = OpenAIRealtimeSession({}, max_message_bytes=100)
    result = one(session.receive(delta("item_a", ms_of_audio(10))))
    assert result.error.code is ErrorCode.MESSAGE_TOO_LARGE


# `make fuzz` raises the count through the same variable tests/test_fuzz.py reads.
EXAMPLES = int(os.environ.get("SIDECAR_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=10,
)
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(
            [
                "response.output_audio.delta",
                "response.output_audio.done",
                "input_audio_buffer.speech_started",
                "response.output_audio_transcript.done",
                "conversation.item.input_audio_transcription.completed",
                "response.created",
                "response.output_item.done",
                "response.done",
                "error",
                "",
            ]
        )
        | json_values,
        "item_id": st.text(max_size=6) | json_values,
        "content_index": st.integers(-2, 3) | json_values,
        "delta": st.binary(max_size=16).map(lambda b: base64.b64encode(b).decode()) | json_values,
        "transcript": json_values,
        "error": json_values,
        "response": st.fixed_dictionaries({}, optional={"id": json_values, "status": json_values})
        | json_values,
        "item": st.fixed_dictionaries(
            {"type": st.just("function_call") | json_values},
            optional={"call_id": json_values, "name": json_values, "status": json_values},
        )
        | json_values,
    },
)


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), json_values.map(json.dumps)))
def test_receive_never_raises_on_anything(message: str | bytes) -> None:
    session = opened()
    for item in session.receive(message):
        assert isinstance(
            item, PlayAudio | ClearPlayout | Invalid | Notice | ToolCallIn | ToolCallCancelledIn
        )


@FUZZ
@given(st.lists(near_valid, max_size=6), st.integers(-10, 10_000))
def test_near_valid_events_keep_the_session_consistent(events: list[Any], heard: int) -> None:
    session = opened()
    for event in events:
        for item in session.receive(json.dumps(event)):
            if isinstance(item, PlayAudio):
                assert len(item.pcm) % 2 == 0 and item.rate == 24000
                wire = session.encode(ClearedOut(Heard(item.segment or "", heard)))
                for message in wire:
                    assert 0 <= json.loads(message)["audio_end_ms"] <= len(item.pcm) // 48


# -- the bot's commands -------------------------------------------------------------------------


def created(response_id: str) -> str:
    return json.dumps(
        {
            "type": "response.created",
            "event_id": "e",
            "response": {"id": response_id, "object": "realtime.response", "status": "in_progress"},
        }
    )


def done(response_id: str, status: str = "completed", reason: str | None = None) -> str:
    details = {"type": status, "reason": reason} if status != "completed" else None
    response: dict[str, Any] = {
        "id": response_id,
        "status": status,
        "status_details": details,
        "output": [],
    }
    return json.dumps({"type": "response.done", "event_id": "e", "response": response})


def call_done(
    response_id: str, call_id: str, name: str = "lookup", status: str = "completed"
) -> str:
    item = {
        "id": "item_" + call_id, "type": "function_call", "status": status,
        "call_id": call_id, "name": "lookup", "arguments": '{"q":"x"}',
    }  # fmt: skip
    return json.dumps(
        {
            "type": "response.output_item.done",
            "event_id": "e",
            "response_id": response_id,
            "output_index": 0,
            "item": item,
        }
    )


OUTPUT = (
    '{"type":"conversation.item.create",'
    '"item":{"type":"function_call_output","call_id":"%s","output":"%s"}}'
)
CREATE = '{"type":"response.create"}'


def test_all_five_commands_are_supported() -> None:
    d = dialect()
    for name in ("tool_result", "say", "user_text", "context", "instructions"):
        assert d.refuses(name) is None
    assert d.refuses("fly") is not None


def test_a_completed_function_call_is_a_tool_call() -> None:
    session = opened()
    assert session.receive(created("resp_1")) == ()
    call = one(session.receive(call_done("resp_1", "call_1")))
    assert call == ToolCallIn("call_1", "lookup", '{"q":"x"}')
    # One cut short is no call; nor is any other item.
    assert session.receive(call_done("resp_1", "call_2", status="incomplete")) == ()
    assert session.statistics().tool_calls == 1


def test_a_function_call_without_a_call_id_is_invalid() -> None:
    session = opened()
    bad = json.loads(call_done("resp_1", "c"))
    del bad["item"]["call_id"]
    result = one(session.receive(json.dumps(bad)))
    assert isinstance(result, Invalid) and "call_id" in result.error.message


def test_a_result_after_the_response_is_done_asks_for_one_response() -> None:
    session = opened()
    session.receive(created("resp_1"))
    session.receive(call_done("resp_1", "call_1"))
    assert list(session.receive(done("resp_1"))) == []
    assert session.replies() == ()
    assert session.encode(ToolResult("call_1", "42")) == (OUTPUT % ("call_1", "42"), CREATE)


def test_a_result_before_the_response_is_done_waits_for_it() -> None:
    session = opened()
    session.receive(created("resp_1"))
    session.receive(call_done("resp_1", "call_1"))
    # response.done has not come: the output goes, the create must wait.
    assert session.encode(ToolResult("call_1", "42")) == (OUTPUT % ("call_1", "42"),)
    assert list(session.receive(done("resp_1"))) == []
    assert session.replies() == (CREATE,)
    assert session.replies() == ()


def test_every_call_of_a_response_is_answered_before_it_goes_on() -> None:
    session = opened()
    session.receive(created("resp_1"))
    session.receive(call_done("resp_1", "call_1"))
    session.receive(call_done("resp_1", "call_2"))
    session.receive(done("resp_1"))
    assert session.encode(ToolResult("call_2", "b")) == (OUTPUT % ("call_2", "b"),)
    assert session.encode(ToolResult("call_1", "a")) == (OUTPUT % ("call_1", "a"), CREATE)


def test_a_result_for_an_unknown_or_answered_call_sends_nothing() -> None:
    session = opened()
    assert session.encode(ToolResult("call_of_an_earlier_connection", "x")) == ()
    session.receive(created("resp_1"))
    session.receive(call_done("resp_1", "call_1"))
    session.receive(done("resp_1"))
    assert len(session.encode(ToolResult("call_1", "x"))) == 2
    assert session.encode(ToolResult("call_1", "again")) == ()


def test_a_new_session_knows_no_call_of_the_old_one() -> None:
    d = dialect()
    old = d.session()
    old.receive(created("resp_1"))
    old.receive(call_done("resp_1", "call_1"))
    assert d.session().encode(ToolResult("call_1", "x")) == ()


@pytest.mark.parametrize(
    "status, reason, expected",
    [
        ("cancelled", "turn_detected", "interrupted"),
        ("cancelled", "client_cancelled", "cancelled"),
        ("incomplete", "max_output_tokens", "cancelled"),
        ("failed", None, "cancelled"),
    ],
)
def test_calls_of_a_response_that_did_not_complete_are_cancelled(
    status: str, reason: str | None, expected: str
) -> None:
    session = opened()
    session.receive(created("resp_1"))
    session.receive(call_done("resp_1", "call_1"))
    session.receive(call_done("resp_1", "call_2"))
    # One answered in time: nothing to cancel for it, and no response.create.
    assert session.encode(ToolResult("call_1", "a")) == (OUTPUT % ("call_1", "a"),)
    assert list(session.receive(done("resp_1", status, reason))) == [
        ToolCallCancelledIn("call_2", expected)
    ]
    assert session.replies() == ()
    assert session.encode(ToolResult("call_2", "late")) == ()


def test_say_asks_the_model_to_say_the_text() -> None:
    wire = json.loads(one(opened().encode(Say("We are out of time."))))
    assert wire == {
        "type": "response.create",
        "response": {"instructions": SAY_INSTRUCTIONS.format(text="We are out of time.")},
    }
    assert wire["response"]["instructions"].endswith("We are out of time.")


def test_user_text_is_a_user_message_and_a_response() -> None:
    item, create = opened().encode(UserText("Alice joined."))
    assert json.loads(item) == {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Alice joined."}],
        },
    }
    assert create == CREATE


def test_context_is_a_system_message_without_a_response() -> None:
    item = one(opened().encode(AddContext("Bob is the host.")))
    assert json.loads(item) == {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": "Bob is the host."}],
        },
    }


def test_instructions_are_a_session_update() -> None:
    wire = one(opened({"instructions": "Old."}).encode(SetInstructions("Be terse.")))
    assert json.loads(wire) == {
        "type": "session.update",
        "session": {"type": "realtime", "instructions": "Be terse."},
    }


def test_a_response_create_waits_while_a_response_is_active() -> None:
    session = opened()
    session.receive(created("resp_vad"))
    assert session.encode(Say("Hi.")) == ()
    item, *rest = session.encode(UserText("Alice joined."))
    assert rest == [] and json.loads(item)["item"]["role"] == "user"
    assert session.replies() == ()
    # The active one is done: the first deferred create goes, the next waits for it.
    session.receive(done("resp_vad"))
    (say,) = session.replies()
    assert json.loads(say)["response"]["instructions"].endswith("Hi.")
    session.receive(created("resp_say"))
    session.receive(done("resp_say"))
    assert session.replies() == (CREATE,)
    assert session.statistics().deferred_creates == 2


def test_a_create_sent_is_active_until_its_response_is_done() -> None:
    session = opened()
    assert session.encode(UserText("one"))[1] == CREATE
    # Its response.created has not come yet: a second create must not race it.
    assert session.encode(Say("two")) == ()
    session.receive(created("resp_1"))
    assert session.replies() == ()
    session.receive(done("resp_1"))
    assert json.loads(one(session.replies()))["response"]["instructions"].endswith("two")


def test_plain_creates_waiting_together_are_one() -> None:
    session = opened()
    session.receive(created("resp_1"))
    session.encode(UserText("a"))
    session.encode(UserText("b"))
    session.receive(done("resp_1"))
    assert session.replies() == (CREATE,)
    session.receive(created("resp_2"))
    session.receive(done("resp_2"))
    assert session.replies() == ()


def test_a_create_refused_for_an_active_response_goes_again_after_it() -> None:
    session = opened()
    assert session.encode(UserText("a"))[1] == CREATE
    # Server VAD's response came first, and ours was refused.
    session.receive(created("resp_vad"))
    error = {
        "type": "error",
        "event_id": "e",
        "error": {
            "type": "invalid_request_error",
            "code": "conversation_already_has_active_response",
            "message": "Conversation already has an active response in progress: resp_vad.",
        },
    }
    assert isinstance(one(session.receive(json.dumps(error))), Notice)
    assert session.replies() == ()
    session.receive(done("resp_vad"))
    assert session.replies() == (CREATE,)


def test_a_create_that_failed_does_not_hold_the_next_one() -> None:
    session = opened()
    assert json.loads(one(session.encode(Say("a"))))["type"] == "response.create"
    assert session.encode(Say("b")) == ()
    error = {"type": "error", "event_id": "e", "error": {"code": "invalid_value", "message": "x"}}
    assert isinstance(one(session.receive(json.dumps(error))), Notice)
    assert json.loads(one(session.replies()))["response"]["instructions"].endswith("b")


def test_the_bots_clear_truncates_cuts_and_cancels() -> None:
    session = opened()
    session.receive(created("resp_1"))
    segment = one(session.receive(delta("item_a", ms_of_audio(500)))).segment
    wires = session.encode(ClearedOut(Heard(segment, 120), by_bot=True))
    assert [json.loads(w) for w in wires] == [
        {
            "type": "conversation.item.truncate",
            "item_id": "item_a",
            "content_index": 0,
            "audio_end_ms": 120,
        },
        {"type": "response.cancel", "response_id": "resp_1"},
    ]
    # What is still in flight for that response is not played, but counted.
    assert one(session.receive(delta("item_a", ms_of_audio(10)))) == CutAudio(240, 24000)
    assert one(session.receive(delta("item_b", ms_of_audio(10)))) == CutAudio(240, 24000)
    session.receive(done("resp_1", "cancelled", "client_cancelled"))
    # Nothing active any more: a clear sends no cancel, and a new reply plays.
    assert session.encode(ClearedOut(None, by_bot=True)) == ()
    new = json.loads(delta("item_c", ms_of_audio(10))) | {"response_id": "resp_2"}
    assert isinstance(one(session.receive(json.dumps(new))), PlayAudio)


def test_instructions_and_context_outlive_the_session() -> None:
    d = dialect({"instructions": "You are helpful."})
    first = d.session()
    first.encode(AddContext("Bob is the host."))
    first.encode(SetInstructions("Be terse."))
    first.encode(AddContext("The meeting ends at 3."))
    update = json.loads(one(d.session().opening()))
    assert update["session"]["instructions"] == (
        "Be terse.\n\nBob is the host.\n\nThe meeting ends at 3."
    )
    assert update["session"]["audio"]["input"]["format"] == PCM_FORMAT
    # Context alone is added after the user's own instructions.
    d = dialect({"instructions": "You are helpful."})
    d.session().encode(AddContext("Bob is the host."))
    update = json.loads(one(d.session().opening()))
    assert update["session"]["instructions"] == "You are helpful.\n\nBob is the host."
    # Nothing changed: the opening is exactly the user's.
    assert "instructions" not in json.loads(one(opened().opening()))["session"]


def test_remembered_context_is_bounded_oldest_first() -> None:
    briefing = Briefing(max_context_bytes=10)
    for text in ("aaaa", "bbbb", "cccc"):
        briefing.add_context(text)
    assert briefing.contexts == ("bbbb", "cccc")
    briefing.add_context("x" * 11)
    assert briefing.contexts == ("bbbb", "cccc")
    assert briefing.contexts_dropped == 2
    assert briefing.prompt(None) == "bbbb\n\ncccc"
    assert Briefing().prompt("base") == "base"
    assert Briefing().prompt(None) is None


def test_remembered_context_is_bounded_in_count_too() -> None:
    briefing = Briefing(max_contexts=3)
    for text in "abcde":
        briefing.add_context(text)
    assert briefing.contexts == ("c", "d", "e")
    assert briefing.contexts_dropped == 2


def test_instructions_keep_the_context_this_session_began_with() -> None:
    d = dialect({"instructions": "Be brief."})
    d.session().encode(AddContext("Alice joined."))
    second = d.session()
    second.opening()
    update = json.loads(one(second.encode(SetInstructions("Be terse."))))
    # The live agent must not lose the context only its instructions hold.
    assert update["session"]["instructions"] == "Be terse.\n\nAlice joined."


def test_held_creates_are_bounded_in_bytes_and_counted() -> None:
    session = opened()
    session.receive(created("resp_vad"))
    for _ in range(3):
        assert session.encode(Say("x" * 600_000)) == ()
    # 1 MiB of held text: the oldest goes, counted where stats reads it.
    assert session.statistics().deferred_dropped == 2
    assert session.commands_dropped == 2


def test_a_response_that_never_ends_keeps_a_bounded_list_of_calls() -> None:
    session = opened()
    session.receive(created("resp_1"))
    for n in range(3 * MAX_CALLS):
        session.receive(call_done("resp_1", f"call_{n}"))
    assert all(len(r.calls) <= MAX_CALLS + 1 for r in session._responses.values())


# -- against the fake API --------------------------------------------------------------------


@pytest.fixture
def speech() -> bytes:
    """600 ms of a loud tone then 600 ms of silence, at 24 kHz: one user turn."""
    return tone(300, 0.6, rate=24000) + b"\x00\x00" * (24000 * 6 // 10)


async def test_a_turn_is_heard_and_answered(speech: bytes) -> None:
    config = RealtimeConfig(reply_ms=1200, speed=6.0)
    with RealtimeServer(config) as server, trio.fail_after(15):
        session = opened({"audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}})
        async with open_served(server, session) as client:
            await client.send_audio(speech, 24000)
            await client.wait(lambda: any(
                isinstance(i, Notice) and isinstance(i.event, Transcript)
                and i.event.role == "assistant" for i in client.incoming
            ))  # fmt: skip
            await _until(lambda: len(server.current.audio) == len(speech))
        conn = server.current
        assert conn.violations == []
        assert conn.path == "/v1/realtime?model=gpt-realtime"
        assert conn.received[0]["type"] == "session.update"
        assert len(conn.audio) == len(speech)
        plays = client.of(PlayAudio)
        assert sum(len(p.pcm) for p in plays) == 1200 * 48
        assert len({len(p.pcm) for p in plays}) > 2, "deltas come in uneven sizes"
        assert len({p.segment for p in plays}) == 1
        # The reply arrived faster than it plays (6x here): all of it well within its 1.2 s.
        assert client.span(PlayAudio) < 0.6
        roles = [i.event.role for i in client.of(Notice) if isinstance(i.event, Transcript)]
        assert roles == ["user", "assistant"]


async def test_a_barge_in_truncates_to_what_was_heard() -> None:
    config = RealtimeConfig(reply_ms=4000, speed=4.0, barge_in_at_ms=1600)
    with RealtimeServer(config) as server, trio.fail_after(15):
        session = opened()
        async with open_served(server, session) as client:
            server_conn = await _wait_conn(server)
            server.respond(server_conn)
            await client.wait(lambda: len({p.segment for p in client.of(PlayAudio)}) >= 2)
            await _until(lambda: server.state(server_conn).truncations != [])
        assert server_conn.violations == []
        item, end, accepted = one(server.state(server_conn).truncations)
        assert accepted
        cleared = one([c for c in client.clears if c.heard is not None])
        assert cleared.heard is not None and cleared.heard.segment == f"{item}:0"
        # 1.6 s were sent in about 0.4 s: what played (and so was heard) is far less.
        assert 0 < end == cleared.heard.ms < 1600
        assert server_conn.sent_json("error") == []
        assert [t.event.role for t in client.of(Notice)].count("assistant") >= 1


async def test_the_api_rejects_a_truncate_beyond_its_audio_and_the_dialect_never_sends_one() -> (
    None
):
    config = RealtimeConfig(reply_ms=3000, speed=2.0)
    with RealtimeServer(config) as server, trio.fail_after(10):
        session = opened()
        async with open_served(server, session) as client:
            server_conn = await _wait_conn(server)
            server.respond(server_conn)
            await client.wait(lambda: len(client.of(PlayAudio)) >= 3)
            segment = client.of(PlayAudio)[0].segment
            assert segment is not None
            item = segment.rpartition(":")[0]
            raw = {"type": "conversation.item.truncate", "item_id": item, "content_index": 0}
            await client.ws.send_message(json.dumps(raw | {"audio_end_ms": 10_000}))
            await client.wait(lambda: any(
                isinstance(i, Notice) and isinstance(i.event, AgentError) for i in client.incoming
            ))  # fmt: skip
            # Mid-reply, so not heard in full: the dialect truncates, to what it received.
            received = sum(len(p.pcm) for p in client.of(PlayAudio)) // 48
            for wire in session.encode(ClearedOut(Heard(segment, 10_000))):
                await client.ws.send_message(wire)
            await _until(lambda: len(server.state(server_conn).truncations) == 2)
        error = one([i.event for i in client.of(Notice) if isinstance(i.event, AgentError)])
        assert re.fullmatch(
            r"Audio content of \d+ms is already shorter than 10000ms", error.message
        )
        rejected, accepted = server.state(server_conn).truncations
        assert rejected == (item, 10_000, False)
        assert accepted == (item, received, True)


@pytest.mark.parametrize("expiry_error", [False, True])
async def test_the_session_length_close_is_a_routine_reconnect(expiry_error: bool) -> None:
    config = RealtimeConfig(max_session_s=0.3, expiry_error=expiry_error)
    with RealtimeServer(config) as server, trio.fail_after(10):
        session = opened()
        async with trio_websocket.open_websocket_url(
            server.url, extra_headers=[(b"Authorization", b"Bearer sk-test")]
        ) as ws:
            client = AgentClient(session, ws)
            await client.open()
            await client.serve()
        assert client.close_code == 1001
        assert "maximum duration" in client.close_reason
        assert session.reconnect_at_once(client.close_code, client.close_reason)
        errors = [i.event for i in client.of(Notice) if isinstance(i.event, AgentError)]
        assert [e.code for e in errors] == (["session_expired"] if expiry_error else [])


async def test_a_wrong_key_is_refused_at_the_handshake() -> None:
    with RealtimeServer() as server, trio.fail_after(10):
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with trio_websocket.open_websocket_url(
                server.url, extra_headers=[(b"Authorization", b"Bearer sk-wrong")]
            ):
                pass
        assert rejected.value.status_code == 401
        assert rejected.value.body is not None
        assert json.loads(rejected.value.body)["error"]["code"] == "invalid_api_key"
        assert server.connections == []


async def test_the_fake_api_rejects_fields_it_does_not_know() -> None:
    with RealtimeServer() as server, trio.fail_after(10):
        async with trio_websocket.open_websocket_url(
            server.url, extra_headers=[(b"Authorization", b"Bearer sk-test")]
        ) as ws:
            await ws.send_message('{"type":"input_audio_buffer.append","audio":"","rate":24000}')
            while True:
                event = json.loads(await ws.get_message())
                if event["type"] == "error":
                    break
        assert "rate" in event["error"]["message"]
        assert server.current.violations == ["unknown field $.rate"]


# -- the bot's commands, against the fake API ----------------------------------------------------


def _transcripts(client: AgentClient) -> list[str]:
    return [
        i.event.text
        for i in client.of(Notice)
        if isinstance(i.event, Transcript) and i.event.role == "assistant"
    ]


async def test_a_tool_call_answered_end_to_end(speech: bytes) -> None:
    """The meeting asks; the model calls a tool; the bot's result goes back with
    one response.create; the model's spoken answer is heard."""
    config = RealtimeConfig(reply_ms=600, speed=6.0, calls=[("lookup", '{"q":"clock"}')])
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    with RealtimeServer(config) as server, trio.fail_after(15):
        session = opened({"tools": tools})
        async with open_served(server, session) as client:
            await client.send_audio(speech, 24000)
            await client.wait(lambda: bool(client.of(ToolCallIn)))
            (call,) = client.of(ToolCallIn)
            assert (call.name, call.arguments_json) == ("lookup", '{"q":"clock"}')
            await client.wait(lambda: bool(server.state(server.current).calls))
            await client.command(ToolResult(call.call_id, '{"time":"15:04"}'))
            await client.wait(lambda: bool(_transcripts(client)))
            await _until(lambda: client.played_bytes() == 600 * 48)
        conn = server.current
        state = server.state(conn)
        assert conn.violations == []
        assert state.outputs == [(call.call_id, '{"time":"15:04"}')]
        assert state.calls == {call.call_id: True}
        kinds = [m["type"] for m in conn.received if m["type"] != "input_audio_buffer.append"]
        assert kinds == ["session.update", "conversation.item.create", "response.create"]
        assert state.refused_creates == 0
        # The answer's audio reached the bot, all of it, as one segment.
        assert _transcripts(client) == ["reply of 600 ms"]
        assert sum(len(p.pcm) for p in client.of(PlayAudio)) == 600 * 48


async def test_a_result_sent_while_another_response_runs_waits_for_it() -> None:
    config = RealtimeConfig(reply_ms=1500, speed=3.0)
    with RealtimeServer(config) as server, trio.fail_after(15):
        session = opened()
        async with open_served(server, session) as client:
            conn = await _wait_conn(server)
            server.call_function(conn, "lookup", "{}")
            await client.wait(lambda: bool(client.of(ToolCallIn)))
            (call,) = client.of(ToolCallIn)
            await _until(lambda: server.state(conn).responding is None)
            # A reply of the server's own (say, server VAD's) is under way...
            server.respond(conn)
            await client.wait(lambda: bool(client.of(PlayAudio)))
            # ...so the result's response.create waits for it, and no error comes.
            sent = await client.command(ToolResult(call.call_id, "ok"))
            assert [json.loads(w)["type"] for w in sent] == ["conversation.item.create"]
            await client.wait(lambda: len(_transcripts(client)) == 2)
        state = server.state(conn)
        assert conn.violations == []
        assert state.refused_creates == 0
        assert client.replied == ['{"type":"response.create"}']
        assert not any(
            isinstance(i, Notice) and isinstance(i.event, AgentError) for i in client.incoming
        )


async def test_say_user_text_context_and_instructions_against_the_api() -> None:
    config = RealtimeConfig(reply_ms=300, speed=6.0)
    with RealtimeServer(config) as server, trio.fail_after(15):
        session = opened({"instructions": "Be brief."})
        async with open_served(server, session) as client:
            conn = await _wait_conn(server)
            await client.command(SetInstructions("Be terse."))
            await client.command(AddContext("Bob is the host."))
            await client.command(Say("Welcome, everyone."))
            # Deferred until the greeting is done: one response at a time.
            assert await client.command(UserText("What time is it?")) != []
            await client.wait(lambda: len(_transcripts(client)) == 2)
        state = server.state(conn)
        assert conn.violations == []
        assert state.refused_creates == 0
        assert state.session["instructions"] == "Be terse."
        assert state.messages == [("system", "Bob is the host."), ("user", "What time is it?")]
        say = SAY_INSTRUCTIONS.format(text="Welcome, everyone.")
        assert state.instructions == [say, None]
        assert _transcripts(client) == [say, "reply of 300 ms"]


async def test_the_bots_clear_cancels_the_reply_and_truncates() -> None:
    config = RealtimeConfig(reply_ms=4000, speed=1.0)
    with RealtimeServer(config) as server, trio.fail_after(15):
        session = opened()
        async with open_served(server, session) as client:
            conn = await _wait_conn(server)
            await client.command(Say("A long story."))
            await client.wait(lambda: bool(client.of(PlayAudio)))
            await trio.sleep(0.3)
            sent = await client.clear()
            await _until(lambda: server.state(conn).responding is None)
            await trio.sleep(0.1)
        assert [json.loads(w)["type"] for w in sent] == [
            "conversation.item.truncate",
            "response.cancel",
        ]
        state = server.state(conn)
        assert conn.violations == []
        (truncated,) = state.truncations
        assert truncated[2], "the API accepted the truncate"
        done = conn.sent_json("response.done")[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"]["reason"] == "client_cancelled"
        # What still came of the reply was cut, not played: all of it accounted.
        sent_bytes = sum(i.sent_bytes for i in state.items.values())
        played = sum(len(p.pcm) for p in client.of(PlayAudio))
        cut = sum(c.samples * 2 for c in client.of(CutAudio))
        assert played + cut == sent_bytes


async def test_a_new_session_starts_with_what_the_bot_changed() -> None:
    with RealtimeServer() as server, trio.fail_after(15):
        d = dialect({"instructions": "Be brief."})
        async with open_served(server, d.session()) as client:
            first = await _wait_conn(server)
            await client.command(SetInstructions("Be terse."))
            await client.command(AddContext("Bob is the host."))
            await _until(lambda: len(first.sent_json("conversation.item.added")) == 1)
        async with open_served(server, d.session()):
            await _until(lambda: len(server.connections) == 2)
            second = server.current
            await _until(lambda: bool(second.sent_json("session.updated")))
        assert first.violations == second.violations == []
        update = second.received[0]
        assert update["type"] == "session.update"
        assert update["session"]["instructions"] == "Be terse.\n\nBob is the host."
        assert server.state(second).session["instructions"] == "Be terse.\n\nBob is the host."


@asynccontextmanager
async def open_served(
    server: RealtimeServer, session: OpenAIRealtimeSession
) -> AsyncIterator[AgentClient]:
    """A client on the fake API with the right key, opened, its messages read
    until the block ends."""
    async with (
        trio_websocket.open_websocket_url(
            server.url, extra_headers=[(b"Authorization", b"Bearer sk-test")]
        ) as ws,
        trio.open_nursery() as nursery,
    ):
        client = AgentClient(session, ws)
        nursery.start_soon(client.serve)
        await client.open()
        yield client
        nursery.cancel_scope.cancel()


async def _wait_conn(server: RealtimeServer) -> Any:
    await _until(lambda: bool(server.connections))
    return server.current


async def _until(predicate: Any) -> None:
    while not predicate():
        await trio.sleep(0.01)


def test_a_response_in_progress_is_a_reply_the_link_must_not_rotate_over() -> None:
    session = opened()
    seen = [session.replying]
    session.encode(Say("Hello."))  # our response.create: its audio is coming
    seen.append(session.replying)
    session.receive(created("resp_1"))
    seen.append(session.replying)
    session.receive(done("resp_1"))
    seen.append(session.replying)
    session.receive(created("resp_2"))  # the server's own, for the user's turn
    seen.append(session.replying)
    session.receive(done("resp_2", "cancelled", "turn_detected"))
    seen.append(session.replying)
    assert seen == [False, True, True, False, True, False]
