"""The agent dialects' messages, checked with the vendors' own code.

Everything openai-realtime and deepgram-agent SEND is validated with the
official SDK's models (`openai`, `deepgram-sdk`), strictly: both SDKs allow
unknown fields (to survive API additions), so `unknown_fields` walks the
validated model and any field the SDK did not recognise is a failure. Server
events are built with the SDKs' models, serialised as the SDKs serialise them,
and fed through `Session.receive()`.
"""

from __future__ import annotations

import base64
import json
import typing
import warnings
from collections.abc import Iterator
from typing import Any

import msgspec
import pydantic
import pytest
from agent_servers import unknown_fields, validate_agent_settings, validate_realtime_client_event
from deepgram.agent.v1 import types as dg
from openai.types import realtime as oa
from openai.types.realtime.realtime_client_event import RealtimeClientEvent
from openai.types.realtime.realtime_error import RealtimeError
from openai.types.realtime.realtime_server_event import RealtimeServerEvent

from sidecar.dialects import deepgram_agent, openai_realtime
from sidecar.dialects.base import (
    AddContext,
    AudioOut,
    ClearedOut,
    ClearPlayout,
    Heard,
    Incoming,
    Invalid,
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
from sidecar.dialects.notices import AgentError, AgentEvent, AgentWarning, Transcript

with warnings.catch_warnings():
    # The SDK's socket module imports websockets.legacy for its async client.
    warnings.simplefilter("ignore", DeprecationWarning)
    from deepgram.agent.v1.socket_client import V1SocketClientResponse

# -- what the SDKs know ------------------------------------------------------------------


def _members(union: Any) -> Iterator[type[pydantic.BaseModel]]:
    for arg in typing.get_args(union):
        if isinstance(arg, type) and issubclass(arg, pydantic.BaseModel):
            yield arg
        elif typing.get_origin(arg) is not None:
            yield from _members(arg)


def _type_literals(union: Any) -> set[str]:
    found: set[str] = set()
    for model in _members(union):
        annotation = model.model_fields["type"].annotation
        found.update(a for a in typing.get_args(annotation) if isinstance(a, str))
    return found


OPENAI_CLIENT_TYPES = _type_literals(RealtimeClientEvent)
OPENAI_SERVER_TYPES = _type_literals(RealtimeServerEvent)
DEEPGRAM_SERVER_TYPES = _type_literals(V1SocketClientResponse)


def test_the_sdk_unions_were_read() -> None:
    assert "conversation.item.truncate" in OPENAI_CLIENT_TYPES
    assert "response.output_audio.delta" in OPENAI_SERVER_TYPES
    assert "UserStartedSpeaking" in DEEPGRAM_SERVER_TYPES


def test_openai_event_types_we_act_on_are_the_sdks() -> None:
    """A GA name misspelt, or a beta name (`response.audio.delta`), would fail here."""
    assert openai_realtime.SERVER_TYPES <= OPENAI_SERVER_TYPES
    sent = {t.__struct_config__.tag for t in typing.get_args(openai_realtime.ClientEvent)}
    assert sent <= OPENAI_CLIENT_TYPES


def test_deepgram_message_types_we_act_on_are_the_sdks() -> None:
    assert deepgram_agent.SERVER_TYPES <= DEEPGRAM_SERVER_TYPES


SDK_OF_OPENAI = {
    openai_realtime.OutputAudioDelta: oa.ResponseAudioDeltaEvent,
    openai_realtime.OutputAudioDone: oa.ResponseAudioDoneEvent,
    openai_realtime.SpeechStarted: oa.InputAudioBufferSpeechStartedEvent,
    openai_realtime.OutputTranscriptDone: oa.ResponseAudioTranscriptDoneEvent,
    openai_realtime.OutputTextDone: oa.ResponseTextDoneEvent,
    openai_realtime.InputTranscriptCompleted: (
        oa.ConversationItemInputAudioTranscriptionCompletedEvent
    ),
    openai_realtime.ErrorEvent: oa.RealtimeErrorEvent,
    openai_realtime.ErrorDetail: RealtimeError,
    openai_realtime.ResponseCreated: oa.ResponseCreatedEvent,
    openai_realtime.ResponseDone: oa.ResponseDoneEvent,
    openai_realtime.ResponseRef: oa.RealtimeResponse,
    openai_realtime.StatusDetails: oa.RealtimeResponseStatus,
    openai_realtime.OutputItemDone: oa.ResponseOutputItemDoneEvent,
    openai_realtime.OutputItem: oa.RealtimeConversationItemFunctionCall,
}
SDK_OF_DEEPGRAM = {
    deepgram_agent.Welcome: dg.AgentV1Welcome,
    deepgram_agent.SettingsApplied: dg.AgentV1SettingsApplied,
    deepgram_agent.ConversationText: dg.AgentV1ConversationText,
    deepgram_agent.UserStartedSpeaking: dg.AgentV1UserStartedSpeaking,
    deepgram_agent.AgentThinking: dg.AgentV1AgentThinking,
    deepgram_agent.AgentStartedSpeaking: dg.AgentV1AgentStartedSpeaking,
    deepgram_agent.AgentAudioDone: dg.AgentV1AgentAudioDone,
    deepgram_agent.ErrorMessage: dg.AgentV1Error,
    deepgram_agent.WarningMessage: dg.AgentV1Warning,
    deepgram_agent.FunctionCallRequest: dg.AgentV1FunctionCallRequest,
    deepgram_agent.FunctionCall: dg.AgentV1FunctionCallRequestFunctionsItem,
    deepgram_agent.FunctionCallCancelled: dg.AgentV1FunctionCallCancelled,
    deepgram_agent.CancelledCall: dg.AgentV1FunctionCallCancelledFunctionsItem,
    deepgram_agent.InjectionRefused: dg.AgentV1InjectionRefused,
}


@pytest.mark.parametrize(
    "ours, theirs", [*SDK_OF_OPENAI.items(), *SDK_OF_DEEPGRAM.items()], ids=lambda t: t.__name__
)
def test_we_require_no_field_the_sdk_calls_optional(ours: Any, theirs: Any) -> None:
    """Else a valid server event would be reported as invalid."""
    for f in msgspec.structs.fields(ours):
        assert f.name in theirs.model_fields, f"{ours.__name__}.{f.name} is not in the SDK"
        if f.required:
            assert theirs.model_fields[f.name].is_required(), f"{ours.__name__}.{f.name}"


# -- what the dialects send, validated --------------------------------------------------------


def _strict_openai(wire: str | bytes, model: type[pydantic.BaseModel]) -> pydantic.BaseModel:
    assert isinstance(wire, str), "the Realtime API takes JSON text frames"
    data = json.loads(wire)
    parsed, problems = validate_realtime_client_event(data)
    assert problems == []
    assert isinstance(parsed, model)
    # Nothing was coerced or dropped on the way in: the SDK reads what we wrote.
    assert parsed.model_dump(mode="json", exclude_unset=True) == data
    return parsed


FULL_SESSION: dict[str, Any] = {
    "instructions": "You are a meeting assistant. Be brief.",
    "output_modalities": ["audio"],
    "audio": {
        "input": {
            "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 500,
                "create_response": True,
                "interrupt_response": True,
            },
            "noise_reduction": {"type": "far_field"},
        },
        "output": {"voice": "marin", "speed": 1.1},
    },
    "tools": [
        {
            "type": "function",
            "name": "lookup",
            "description": "Look a term up.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ],
    "tool_choice": "auto",
    "max_output_tokens": 800,
}


@pytest.mark.parametrize(
    "user",
    [
        {},
        FULL_SESSION,
        {"audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None}}},
        {"type": "transcription", "instructions": "x"},
        {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "low"}}}},
    ],
    ids=["empty", "full", "formats-overridden", "type-overridden", "semantic-vad"],
)
def test_openai_session_update_is_valid(user: dict[str, Any]) -> None:
    session = openai_realtime.OpenAIRealtime(Options(session=user)).session()
    (wire,) = session.opening()
    event = _strict_openai(wire, oa.SessionUpdateEvent)
    assert isinstance(event, oa.SessionUpdateEvent)
    assert isinstance(event.session, oa.RealtimeSessionCreateRequest)
    audio = event.session.audio
    assert audio is not None and audio.input is not None and audio.output is not None
    for fmt in (audio.input.format, audio.output.format):
        assert isinstance(fmt, oa.realtime_audio_formats.AudioPCM) and fmt.rate == 24000


def test_openai_append_and_truncate_are_valid() -> None:
    session = openai_realtime.OpenAIRealtime(Options()).session()
    pcm = bytes(range(256)) * 4
    (append,) = session.encode(AudioOut(pcm, 24000, 0))
    event = _strict_openai(append, oa.InputAudioBufferAppendEvent)
    assert isinstance(event, oa.InputAudioBufferAppendEvent)
    assert base64.b64decode(event.audio) == pcm
    session.receive(_openai_delta("item_Cq1", b"\x00\x00" * 2400))
    session.receive(_openai_json(oa.InputAudioBufferSpeechStartedEvent, audio_start_ms=10))
    (truncate,) = session.encode(ClearedOut(Heard("item_Cq1:0", 70)))
    event = _strict_openai(truncate, oa.ConversationItemTruncateEvent)
    assert isinstance(event, oa.ConversationItemTruncateEvent)
    assert (event.item_id, event.content_index, event.audio_end_ms) == ("item_Cq1", 0, 70)


def test_the_strict_check_catches_a_field_the_sdk_does_not_know() -> None:
    _, problems = validate_realtime_client_event(
        {"type": "input_audio_buffer.append", "audio": "", "sample_rate": 24000}
    )
    assert problems == ["unknown field $.sample_rate"]
    _, problems = validate_realtime_client_event(
        {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"fmt": 1}}}}
    )
    assert problems == ["unknown field $.session.audio.input.fmt"]
    _, problems = validate_agent_settings({"type": "Settings", "audio": {}, "agent": {}, "x": 1})
    assert problems == ["unknown field $.x"]


DOCS_SETTINGS: dict[str, Any] = {
    "tags": ["meeting-bot"],
    "experimental": False,
    "mip_opt_out": True,
    "flags": {"history": True},
    "agent": {
        "language": "en",
        "listen": {"provider": {"type": "deepgram", "model": "nova-3", "smart_format": False}},
        "think": [
            {
                "provider": {"type": "open_ai", "model": "gpt-4o-mini", "temperature": 0.7},
                "prompt": "You are a meeting assistant.",
                "functions": [
                    {
                        "name": "lookup",
                        "description": "Look a term up.",
                        "parameters": {"type": "object", "properties": {}},
                        "endpoint": {"url": "https://example.com/lookup", "method": "post"},
                    }
                ],
            },
            {"provider": {"type": "anthropic", "model": "claude-3-5-haiku-latest"}},
        ],
        "speak": {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
        "greeting": "Hello! How can I help?",
    },
}


@pytest.mark.parametrize(
    "user, rate",
    [
        (DOCS_SETTINGS, 16000),
        (DOCS_SETTINGS | {"audio": {"input": {"encoding": "mulaw", "sample_rate": 8000}}}, 24000),
        (
            {"agent": {"listen": {"provider": {"type": "deepgram", "model": "flux-general-en"}}}},
            8000,
        ),
    ],
    ids=["docs", "audio-overridden", "minimal"],
)
def test_deepgram_settings_are_valid(user: dict[str, Any], rate: int) -> None:
    session = deepgram_agent.DeepgramAgent(Options(session=user, sample_rate=rate)).session()
    (wire,) = session.opening()
    assert isinstance(wire, str)
    model, problems = validate_agent_settings(json.loads(wire))
    assert problems == []
    assert model is not None and model.type == "Settings"
    audio_in, audio_out = model.audio.input, model.audio.output
    assert audio_in is not None and audio_out is not None
    # The SDK types encodings as "one of these, or Any": check they are one of these.
    assert (audio_in.encoding, audio_in.sample_rate) == ("linear16", rate)
    assert (audio_out.encoding, audio_out.sample_rate, audio_out.container) == (
        "linear16",
        rate,
        "none",
    )


def test_deepgram_keepalive_is_valid() -> None:
    session = deepgram_agent.DeepgramAgent(Options(session={"agent": {}})).session()
    (wire,) = session.keepalive()
    model = dg.AgentV1KeepAlive.model_validate_json(wire)
    assert unknown_fields(model) == []
    assert model.model_dump(mode="json") == json.loads(wire)


# -- what the services send, built with the SDKs ---------------------------------------------------


def _openai_json(model: type[pydantic.BaseModel], **fields: Any) -> str:
    literal = typing.get_args(model.model_fields["type"].annotation)[0]
    defaults: dict[str, Any] = {"type": literal, "event_id": "event_B1"}
    for name in ("item_id", "response_id"):
        if name in model.model_fields:
            defaults[name] = f"{name}_1"
    for name in ("output_index", "content_index"):
        if name in model.model_fields:
            defaults[name] = 0
    return model(**(defaults | fields)).model_dump_json()


def _openai_delta(item_id: str, pcm: bytes) -> str:
    delta = base64.b64encode(pcm).decode()
    return _openai_json(oa.ResponseAudioDeltaEvent, item_id=item_id, delta=delta)


def _receive_openai(wire: str) -> tuple[Incoming, ...]:
    return tuple(openai_realtime.OpenAIRealtime(Options()).session().receive(wire))


def test_openai_server_events_the_dialect_acts_on() -> None:
    pcm = b"\x01\x00\x02\x00" * 240
    assert _receive_openai(_openai_delta("item_1", pcm)) == (PlayAudio(pcm, 24000, "item_1:0"),)
    started = _openai_json(oa.InputAudioBufferSpeechStartedEvent, audio_start_ms=1200)
    assert _receive_openai(started) == (ClearPlayout(), UserSpeaking("item_id_1"))
    done = _openai_json(oa.ResponseAudioTranscriptDoneEvent, transcript="Sure.")
    assert _notice(_receive_openai(done)) == Transcript(
        role="assistant", text="Sure.", item_id="item_id_1", segment="item_id_1:0"
    )
    heard = _openai_json(
        oa.ConversationItemInputAudioTranscriptionCompletedEvent,
        transcript="Can you hear me?",
        usage={"type": "duration", "seconds": 1.5},
    )
    assert _notice(_receive_openai(heard)) == Transcript(
        role="user", text="Can you hear me?", item_id="item_id_1"
    )
    text = _openai_json(oa.ResponseTextDoneEvent, text="In text.")
    assert _notice(_receive_openai(text)) == Transcript(
        role="assistant", text="In text.", item_id="item_id_1"
    )
    error = RealtimeError(type="invalid_request_error", message="Bad.", code="x", event_id="e7")
    wire = _openai_json(oa.RealtimeErrorEvent, error=error)
    assert _notice(_receive_openai(wire)) == AgentError(
        message="Bad.", type="invalid_request_error", code="x", event_id="e7"
    )


def _ignored_openai_events() -> Iterator[Any]:
    session = oa.RealtimeSessionCreateRequest(type="realtime", instructions="hi")
    response = oa.RealtimeResponse(id="resp_1", status="completed", output=[])
    yield pytest.param(_openai_json(oa.SessionCreatedEvent, session=session), id="session.created")
    yield pytest.param(_openai_json(oa.SessionUpdatedEvent, session=session), id="session.updated")
    yield pytest.param(_openai_json(oa.ResponseCreatedEvent, response=response), id="created")
    yield pytest.param(_openai_json(oa.ResponseDoneEvent, response=response), id="response.done")
    yield pytest.param(_openai_json(oa.ResponseAudioDoneEvent), id="output_audio.done")
    yield pytest.param(
        _openai_json(oa.ResponseAudioTranscriptDeltaEvent, delta="Su"), id="transcript.delta"
    )
    yield pytest.param(
        _openai_json(oa.InputAudioBufferSpeechStoppedEvent, audio_end_ms=900), id="speech_stopped"
    )
    yield pytest.param(_openai_json(oa.InputAudioBufferCommittedEvent), id="committed")
    yield pytest.param(
        _openai_json(oa.ConversationItemTruncatedEvent, audio_end_ms=70), id="item.truncated"
    )
    yield pytest.param(
        _openai_json(
            oa.RateLimitsUpdatedEvent,
            rate_limits=[{"name": "tokens", "limit": 10, "remaining": 5, "reset_seconds": 1.0}],
        ),
        id="rate_limits",
    )
    yield pytest.param(
        _openai_json(
            oa.ResponseFunctionCallArgumentsDoneEvent, call_id="c", arguments="{}", name="f"
        ),
        id="function_call_arguments.done",
    )


@pytest.mark.parametrize("wire", list(_ignored_openai_events()))
def test_openai_server_events_the_dialect_ignores(wire: str) -> None:
    assert _receive_openai(wire) == ()


def _receive_deepgram(wire: str | bytes) -> tuple[Incoming, ...]:
    session = deepgram_agent.DeepgramAgent(Options(session={"agent": {}})).session()
    return tuple(session.receive(wire))


@pytest.mark.parametrize(
    "model, expected",
    [
        (dg.AgentV1Welcome(request_id="req-1"), AgentEvent(name="Welcome", request_id="req-1")),
        (dg.AgentV1SettingsApplied(), AgentEvent(name="SettingsApplied")),
        (
            dg.AgentV1ConversationText(role="assistant", content="Hello!"),
            Transcript(role="assistant", text="Hello!"),
        ),
        (dg.AgentV1AgentThinking(content="Hmm"), AgentEvent(name="AgentThinking", text="Hmm")),
        (
            dg.AgentV1AgentStartedSpeaking(total_latency=0.9, tts_latency=0.2, ttt_latency=0.7),
            AgentEvent(
                name="AgentStartedSpeaking", total_latency=0.9, tts_latency=0.2, ttt_latency=0.7
            ),
        ),
        (dg.AgentV1AgentAudioDone(), AgentEvent(name="AgentAudioDone")),
        (
            dg.AgentV1Error(code="INTERNAL_SERVER_ERROR", description="Oops."),
            AgentError(message="Oops.", code="INTERNAL_SERVER_ERROR"),
        ),
        (
            dg.AgentV1Warning(code="SLOW", description="Slow LLM."),
            AgentWarning(message="Slow LLM.", code="SLOW"),
        ),
    ],
    ids=lambda v: type(v).__name__,
)
def test_deepgram_messages_the_dialect_acts_on(model: pydantic.BaseModel, expected: Any) -> None:
    assert _notice(_receive_deepgram(model.model_dump_json())) == expected


def test_deepgram_user_started_speaking_clears_first() -> None:
    wire = dg.AgentV1UserStartedSpeaking().model_dump_json()
    clear, started, notice = _receive_deepgram(wire)
    assert clear == ClearPlayout()
    assert started == UserSpeaking()
    assert isinstance(notice, Notice)


@pytest.mark.parametrize(
    "model",
    [
        dg.AgentV1ThinkUpdated(),
        dg.ConversationHistoryMessage(role="user", content="Hi"),
        dg.AgentV1PromptUpdated(),
        dg.AgentV1SpeakUpdated(),
    ],
    ids=lambda m: type(m).__name__,
)
def test_deepgram_messages_the_dialect_ignores(model: pydantic.BaseModel) -> None:
    assert _receive_deepgram(model.model_dump_json()) == ()


def _notice(items: tuple[Incoming, ...]) -> Any:
    assert len(items) == 1 and not isinstance(items[0], Invalid), items
    assert isinstance(items[0], Notice)
    return items[0].event


# -- the bot's commands, as each dialect sends them, validated ------------------------------------


def _openai_call(session: Any, call_id: str, response_id: str = "resp_1") -> None:
    created = oa.RealtimeResponse(id=response_id, status="in_progress", output=[])
    session.receive(_openai_json(oa.ResponseCreatedEvent, response=created))
    item = oa.RealtimeConversationItemFunctionCall(
        type="function_call", id="item_F1", call_id=call_id, name="lookup",
        arguments='{"q":"x"}', status="completed",
    )  # fmt: skip
    wire = _openai_json(oa.ResponseOutputItemDoneEvent, item=item, response_id=response_id)
    (call,) = session.receive(wire)
    assert call == ToolCallIn(call_id, "lookup", '{"q":"x"}')
    done = oa.RealtimeResponse(id=response_id, status="completed", output=[item])
    assert list(session.receive(_openai_json(oa.ResponseDoneEvent, response=done))) == []


def test_openai_commands_are_valid() -> None:
    session = openai_realtime.OpenAIRealtime(Options(session=FULL_SESSION)).session()
    _openai_call(session, "call_1")
    output, create = session.encode(ToolResult("call_1", '{"a":1}'))
    item = _strict_openai(output, oa.ConversationItemCreateEvent)
    assert isinstance(item, oa.ConversationItemCreateEvent)
    assert isinstance(item.item, oa.RealtimeConversationItemFunctionCallOutput)
    assert (item.item.call_id, item.item.output) == ("call_1", '{"a":1}')
    assert isinstance(_strict_openai(create, oa.ResponseCreateEvent), oa.ResponseCreateEvent)
    # The create is answered before the next command's may go.
    created = oa.RealtimeResponse(id="resp_2", status="in_progress", output=[])
    session.receive(_openai_json(oa.ResponseCreatedEvent, response=created))
    done = oa.RealtimeResponse(id="resp_2", status="completed", output=[])
    session.receive(_openai_json(oa.ResponseDoneEvent, response=done))
    (say,) = session.encode(Say("Hello, room."))
    event = _strict_openai(say, oa.ResponseCreateEvent)
    assert isinstance(event, oa.ResponseCreateEvent) and event.response is not None
    assert event.response.instructions is not None
    assert "Hello, room." in event.response.instructions
    session.receive(_openai_json(oa.ResponseCreatedEvent, response=created))
    session.receive(_openai_json(oa.ResponseDoneEvent, response=done))
    user, create = session.encode(UserText("Alice joined."))
    event = _strict_openai(user, oa.ConversationItemCreateEvent)
    assert isinstance(event, oa.ConversationItemCreateEvent)
    assert isinstance(event.item, oa.RealtimeConversationItemUserMessage)
    assert event.item.content[0].type == "input_text"
    _strict_openai(create, oa.ResponseCreateEvent)
    (context,) = session.encode(AddContext("The meeting ends at 3."))
    event = _strict_openai(context, oa.ConversationItemCreateEvent)
    assert isinstance(event, oa.ConversationItemCreateEvent)
    assert isinstance(event.item, oa.RealtimeConversationItemSystemMessage)
    (update,) = session.encode(SetInstructions("Be terse."))
    event = _strict_openai(update, oa.SessionUpdateEvent)
    assert isinstance(event, oa.SessionUpdateEvent)
    assert isinstance(event.session, oa.RealtimeSessionCreateRequest)
    assert event.session.instructions == "Be terse."
    # An active response, cut by the bot's clear: cancelled.
    session.receive(_openai_json(oa.ResponseCreatedEvent, response=created))
    (cancel,) = session.encode(ClearedOut(None, by_bot=True))
    event = _strict_openai(cancel, oa.ResponseCancelEvent)
    assert isinstance(event, oa.ResponseCancelEvent) and event.response_id == "resp_2"


def test_openai_next_session_update_with_what_the_bot_changed_is_valid() -> None:
    dialect = openai_realtime.OpenAIRealtime(Options(session=FULL_SESSION))
    first = dialect.session()
    first.encode(SetInstructions("Be terse."))
    first.encode(AddContext("Bob is the host."))
    (wire,) = dialect.session().opening()
    event = _strict_openai(wire, oa.SessionUpdateEvent)
    assert isinstance(event, oa.SessionUpdateEvent)
    assert isinstance(event.session, oa.RealtimeSessionCreateRequest)
    assert event.session.instructions == "Be terse.\n\nBob is the host."


def _strict_deepgram(wire: str | bytes, model: type[pydantic.BaseModel]) -> Any:
    assert isinstance(wire, str)
    data = json.loads(wire)
    parsed = model.model_validate(data)
    assert unknown_fields(parsed) == []
    assert parsed.model_dump(mode="json", exclude_unset=True) == data
    return parsed


def test_deepgram_commands_are_valid() -> None:
    dialect = deepgram_agent.DeepgramAgent(Options(session=DOCS_SETTINGS))
    session = dialect.session()
    request = dg.AgentV1FunctionCallRequest.model_validate(
        {"functions": [{"id": "fc_1", "name": "lookup", "arguments": "{}", "client_side": True}]}
    )
    (call,) = session.receive(request.model_dump_json())
    assert call == ToolCallIn("fc_1", "lookup", "{}")
    (answer,) = session.encode(ToolResult("fc_1", "42"))
    model = _strict_deepgram(answer, dg.AgentV1SendFunctionCallResponse)
    assert (model.id, model.name, model.content) == ("fc_1", "lookup", "42")
    (say,) = session.encode(Say("Hello, room."))
    assert _strict_deepgram(say, dg.AgentV1InjectAgentMessage).message == "Hello, room."
    (user,) = session.encode(UserText("Alice joined."))
    assert _strict_deepgram(user, dg.AgentV1InjectUserMessage).content == "Alice joined."
    (context,) = session.encode(AddContext("Bob is the host."))
    assert _strict_deepgram(context, dg.AgentV1UpdatePrompt).prompt == "Bob is the host."
    (think,) = session.encode(SetInstructions("Be terse."))
    model = _strict_deepgram(think, dg.AgentV1UpdateThink)
    assert isinstance(model.think, list) and len(model.think) == 2
    assert [t.prompt for t in model.think] == ["Be terse.\n\nBob is the host."] * 2
    # And the next session's Settings carry it.
    (settings,) = dialect.session().opening()
    parsed, problems = validate_agent_settings(json.loads(settings))
    assert problems == [] and parsed is not None
    assert json.loads(settings)["agent"]["think"][0]["prompt"] == "Be terse.\n\nBob is the host."


@pytest.mark.parametrize(
    "model, expected",
    [
        (
            dg.AgentV1FunctionCallCancelled.model_validate(
                {"functions": [{"id": "fc_1", "name": "lookup"}]}
            ),
            [ToolCallCancelledIn("fc_1", "cancelled")],
        ),
        (dg.AgentV1InjectionRefused(message="Busy."), None),
    ],
    ids=lambda v: type(v).__name__,
)
def test_deepgram_call_messages_the_dialect_acts_on(model: Any, expected: Any) -> None:
    session = deepgram_agent.DeepgramAgent(Options(session={"agent": {}})).session()
    request = dg.AgentV1FunctionCallRequest.model_validate(
        {"functions": [{"id": "fc_1", "name": "lookup", "arguments": "{}", "client_side": True}]}
    )
    session.receive(request.model_dump_json())
    got = list(session.receive(model.model_dump_json()))
    if expected is None:
        assert _notice(tuple(got)) == AgentWarning(message="Busy.", code="InjectionRefused")
    else:
        assert got == expected
