"""The gemini-live dialect: its session state machine, every message it sends read
back with google-genai's types, every message it receives built with them; then
against the fake Live API (tests/gemini_server.py) over a real websocket."""

from __future__ import annotations

import base64
import importlib.util
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio_websocket
from agent_servers import AgentClient, load_vectors, options_from, run_vector
from gemini_server import GeminiConfig, GeminiServer, validate_client_message
from google.genai import types
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import tone

from sidecar.dialects import DIALECTS, gemini_live
from sidecar.dialects.base import (
    AddContext,
    AudioOut,
    ClearedOut,
    ClearPlayout,
    CutAudio,
    DtmfOut,
    ErrorOut,
    Invalid,
    MarkOut,
    Notice,
    Options,
    PlayAudio,
    Say,
    SessionExpiring,
    SetInstructions,
    ToolCallCancelledIn,
    ToolCallIn,
    ToolResult,
    UserSpeaking,
    UserText,
    Utf8Text,
)
from sidecar.dialects.gemini_live import (
    DEFAULT_MODEL,
    GeminiLive,
    GeminiLiveSession,
    pcm_rate,
    prepare_setup,
    seconds,
    tool_response,
)
from sidecar.events import AgentEvent, MemoryRestored, Transcript
from sidecar.memory import (
    AgentState,
    AgentTurn,
    CommandKind,
    CommandTurn,
    MemorySnapshot,
    ToolState,
    ToolTurn,
    UserTurn,
)
from sidecar.messages import ErrorCode, MessageError
from sidecar.tools.protocols import resolve

SETUP: dict[str, Any] = {
    "model": "gemini-3.8-live",
    "systemInstruction": {"parts": [{"text": "Be brief."}]},
    "generationConfig": {
        "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}}}
    },
    "tools": [{"functionDeclarations": [{"name": "lookup_time", "description": "Now."}]}],
}


COMPRESSION: dict[str, Any] = {"contextWindowCompression": {"slidingWindow": {}}}


def dialect(setup: dict[str, Any] | None = None) -> GeminiLive:
    return GeminiLive(Options(session=SETUP if setup is None else setup))


def server(**fields: Any) -> bytes:
    """A server message as the service sends it: the SDK's model, camelCase JSON, binary."""
    message = types.LiveServerMessage(**fields)
    return message.model_dump_json(by_alias=True, exclude_none=True).encode()


def content(**fields: Any) -> bytes:
    return server(server_content=types.LiveServerContent(**fields))


def audio_parts(*pcms: bytes, rate: int = 24000) -> bytes:
    parts = [
        types.Part(inline_data=types.Blob(data=pcm, mime_type=f"audio/pcm;rate={rate}"))
        for pcm in pcms
    ]
    return content(model_turn=types.Content(role="model", parts=parts))


SETUP_COMPLETE = server(setup_complete=types.LiveServerSetupComplete(session_id="s1"))


def ready(session: GeminiLiveSession) -> GeminiLiveSession:
    session.opening()
    session.receive(SETUP_COMPLETE)
    session.replies()
    return session


def sent(wire: str | bytes) -> types.LiveClientMessage:
    """What the SDK reads the message as; any problem fails the test."""
    model, problems = validate_client_message(wire)
    assert model is not None and problems == [], problems
    return model


def events(items: Any) -> list[Any]:
    return [i.event for i in items if isinstance(i, Notice)]


# -- the dialect --------------------------------------------------------------------------


def test_registered_with_its_defaults() -> None:
    assert DIALECTS["gemini-live"] is GeminiLive
    assert GeminiLive.default_url == (
        "wss://generativelanguage.googleapis.com/ws/"
        "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    )
    assert "?" not in GeminiLive.default_url  # the key never goes in the URL
    assert dialect().uplink_audio().rate == 16000


def test_the_key_is_the_x_goog_api_key_header_from_either_variable() -> None:
    d = dialect()
    url = GeminiLive.default_url or ""
    assert d.auth_headers({"GEMINI_API_KEY": " k1 "}, url) == (("x-goog-api-key", "k1"),)
    assert d.auth_headers({"GOOGLE_API_KEY": "k2"}, url) == (("x-goog-api-key", "k2"),)
    # google-genai's order: "Both GOOGLE_API_KEY and GEMINI_API_KEY are set. Using GOOGLE_API_KEY."
    both = {"GEMINI_API_KEY": "k1", "GOOGLE_API_KEY": "k2"}
    assert d.auth_headers(both, url) == (("x-goog-api-key", "k2"),)
    assert d.auth_headers({}, url) == ()


def test_opening_is_the_setup_with_what_the_sidecar_needs() -> None:
    session = dialect().session()
    (wire,) = session.opening()
    setup = sent(wire).setup
    assert setup is not None
    assert setup.model == "models/gemini-3.8-live"
    assert setup.generation_config is not None
    assert setup.generation_config.response_modalities == [types.Modality.AUDIO]
    speech = setup.generation_config.speech_config
    assert speech is not None and speech.voice_config is not None
    assert setup.input_audio_transcription is not None
    assert setup.output_audio_transcription is not None
    assert setup.session_resumption is not None and setup.session_resumption.handle is None
    assert setup.history_config is None
    assert setup.tools is not None and isinstance(setup.tools[0], types.Tool)
    assert setup.tools[0].function_declarations is not None
    assert json.loads(wire)["setup"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}


def test_the_setup_may_be_given_whole_or_as_the_client_message() -> None:
    assert prepare_setup({"setup": SETUP}).setup == prepare_setup(SETUP).setup
    assert prepare_setup({}).setup["model"] == DEFAULT_MODEL
    vertex = "projects/p/locations/l/publishers/google/models/gemini-live-2.5-flash"
    assert prepare_setup({"model": vertex}).setup["model"] == vertex
    text = prepare_setup({"systemInstruction": "Hi."}).setup["systemInstruction"]
    assert text == {"parts": [{"text": "Hi."}]}


@pytest.mark.parametrize(
    ("user", "needle"),
    [
        ({"generationConfig": {"responseModalities": ["TEXT"]}}, "replaced by"),
        ({"sessionResumption": {"transparent": True}}, "set by the sidecar"),
        ({"historyConfig": {}}, "set by the sidecar"),
        ({"newField": 1}, "sent as given"),
    ],
)
def test_warnings_name_what_the_sidecar_overrides(user: dict[str, Any], needle: str) -> None:
    (warning,) = prepare_setup(user | COMPRESSION).warnings
    assert needle in warning


def test_a_session_without_compression_is_warned_of_its_15_minutes() -> None:
    (warning,) = prepare_setup({}).warnings
    assert "15 minutes" in warning and "contextWindowCompression" in warning


@pytest.mark.parametrize(
    ("user", "needle"),
    [
        ([1], "must be a JSON object"),
        ({"model": 3}, "`model` must be a model name"),
        ({"generation_config": {}}, "`generation_config` is written `generationConfig`"),
        ({"generationConfig": []}, "`generationConfig` must be an object"),
        ({"systemInstruction": 1}, "`systemInstruction` must be"),
        ({"inputAudioTranscription": True}, "`inputAudioTranscription` must be an object"),
    ],
)
def test_problems_are_usage_errors(user: Any, needle: str) -> None:
    problems = GeminiLive(Options(session=user)).problems()
    assert any(needle in p for p in problems), problems


def test_commands_say_is_refused_with_the_alternative() -> None:
    d = dialect()
    for command in ("tool_result", "user_text", "context", "instructions"):
        assert d.refuses(command) is None
    reason = d.refuses("say")
    assert reason is not None and "user_text" in reason


# -- setupComplete and audio -------------------------------------------------------------


def test_audio_waits_for_setup_complete_then_goes_as_realtime_input() -> None:
    session = dialect().session()
    session.opening()
    before = session.audio_ready
    assert events(session.receive(SETUP_COMPLETE)) == [AgentEvent(name="setupComplete")]
    assert (before, session.audio_ready) == (False, True)
    pcm = tone(440, 0.02, 16000)
    (wire,) = session.wire(AudioOut(pcm, 16000, 0))
    realtime = sent(wire).realtime_input
    assert realtime is not None and realtime.audio is not None
    assert realtime.audio.mime_type == "audio/pcm;rate=16000"
    assert realtime.audio.data == pcm


def test_audio_goes_as_msgspecs_bytes_the_same_text() -> None:
    session = ready(dialect().session())
    item = AudioOut(tone(440, 0.02, 16000), 16000, 0)
    (fast,) = session.wire_utf8(item)
    assert isinstance(fast, Utf8Text) and fast.data.decode() == session.wire(item)[0]
    assert session.wire_utf8(UserText("hi")) == session.wire(UserText("hi"))


def test_commands_before_setup_complete_are_held_until_it() -> None:
    session = dialect().session()
    session.opening()
    assert session.wire(UserText("hello")) == ()
    assert session.replies() == ()
    session.receive(SETUP_COMPLETE)
    (wire,) = session.replies()
    assert sent(wire).client_content is not None
    assert session.wire(UserText("again")) != ()


def test_what_the_api_has_no_message_for_sends_nothing() -> None:
    session = ready(dialect().session())
    for item in (
        AudioOut(b"\0\0", 16000, 0, "participant"),
        DtmfOut("1"),
        MarkOut("m", True),
        ErrorOut(MessageError(ErrorCode.INVALID_JSON, "x")),
        ClearedOut(),
        ClearedOut(by_bot=True),
        Say("hello"),
    ):
        assert session.wire(item) == ()


# -- the voice ------------------------------------------------------------------------------


def test_every_part_of_a_message_is_played_at_its_rate() -> None:
    session = ready(dialect().session())
    a, b, c = tone(300, 0.02, 24000), tone(300, 0.01, 24000), tone(300, 0.02, 16000)
    played = session.receive(audio_parts(a, b))
    assert played == [PlayAudio(a, 24000, "gemini-1"), PlayAudio(b, 24000, "gemini-1")]
    assert session.receive(audio_parts(c, rate=16000)) == [PlayAudio(c, 16000, "gemini-1")]
    session.receive(content(turn_complete=True))
    assert session.receive(audio_parts(a)) == [PlayAudio(a, 24000, "gemini-2")]


def test_mime_rates() -> None:
    assert pcm_rate("audio/pcm;rate=24000") == 24000
    assert pcm_rate("audio/pcm; rate=16000") == 16000
    assert pcm_rate("audio/pcm") == 24000
    assert pcm_rate("image/png") is None
    assert seconds("50s") == 50.0 and seconds("0.5s") == 0.5
    assert seconds("soon") is None and seconds(None) is None


def test_non_audio_parts_are_not_played_and_odd_audio_is_invalid() -> None:
    session = ready(dialect().session())
    text = content(model_turn=types.Content(role="model", parts=[types.Part(text="hi")]))
    assert session.receive(text) == []
    (invalid,) = session.receive(audio_parts(b"\0\0\0"))
    assert isinstance(invalid, Invalid) and invalid.error.code == ErrorCode.ODD_LENGTH
    assert session.statistics().other_parts == 1


def test_interrupted_clears_the_playout_and_drops_the_rest_of_that_turn() -> None:
    session = ready(dialect().session())
    pcm = tone(300, 0.02, 24000)
    session.receive(audio_parts(pcm))
    session.receive(content(output_transcription=types.Transcription(text="Sure, ")))
    out = session.receive(content(interrupted=True))
    assert out == [
        Notice(Transcript(role="assistant", text="Sure,", segment="gemini-1")),
        ClearPlayout(),
        UserSpeaking(),
    ]
    assert session.receive(audio_parts(pcm)) == [CutAudio(len(pcm) // 2, 24000)]
    session.receive(content(turn_complete=True))
    assert session.receive(audio_parts(pcm)) == [PlayAudio(pcm, 24000, "gemini-2")]


def test_the_bots_clear_drops_the_rest_of_the_turn_and_sends_nothing() -> None:
    session = ready(dialect().session())
    pcm = tone(300, 0.02, 24000)
    session.receive(audio_parts(pcm))
    assert session.wire(ClearedOut(by_bot=True)) == ()
    assert session.receive(audio_parts(pcm, pcm)) == [CutAudio(len(pcm) // 2, 24000)] * 2
    session.receive(content(turn_complete=True))
    assert session.receive(audio_parts(pcm)) == [PlayAudio(pcm, 24000, "gemini-2")]
    assert session.statistics().cut_parts == 2


def test_a_clear_between_turns_cuts_nothing() -> None:
    session = ready(dialect().session())
    session.wire(ClearedOut(by_bot=True))
    pcm = tone(300, 0.02, 24000)
    assert session.receive(audio_parts(pcm)) == [PlayAudio(pcm, 24000, "gemini-1")]


# -- transcripts ---------------------------------------------------------------------------


def test_transcription_pieces_are_one_transcript_per_turn() -> None:
    session = ready(dialect().session())
    heard = [
        session.receive(content(input_transcription=types.Transcription(text=piece)))
        for piece in ("book ", "a ", "room")
    ]
    assert heard == [[UserSpeaking()], [], []]  # the meeting's turn began
    pcm = tone(300, 0.02, 24000)
    out = session.receive(
        content(
            model_turn=types.Content(
                role="model",
                parts=[types.Part(inline_data=types.Blob(data=pcm, mime_type="audio/pcm"))],
            ),
            output_transcription=types.Transcription(text="Done, "),
        )
    )
    assert out == [
        Notice(Transcript(role="user", text="book a room")),
        PlayAudio(pcm, 24000, "gemini-1"),
    ]
    session.receive(content(output_transcription=types.Transcription(text="it is booked.")))
    out = session.receive(content(generation_complete=True))
    assert out == [
        Notice(Transcript(role="assistant", text="Done, it is booked.", segment="gemini-1"))
    ]
    assert session.receive(content(turn_complete=True)) == []


def test_a_finished_transcription_is_flushed_at_once() -> None:
    session = ready(dialect().session())
    finished = types.Transcription(text="hello", finished=True)
    out = session.receive(content(input_transcription=finished))
    assert out == [UserSpeaking(), Notice(Transcript(role="user", text="hello"))]


# -- tools -----------------------------------------------------------------------------------


def call_message(call_id: str = "fc_1", name: str = "lookup_time") -> bytes:
    function = types.FunctionCall(id=call_id, name=name, args={"tz": "UTC"})
    return server(tool_call=types.LiveServerToolCall(function_calls=[function]))


def test_a_tool_call_and_its_result() -> None:
    session = ready(dialect().session())
    assert session.receive(call_message()) == [ToolCallIn("fc_1", "lookup_time", '{"tz":"UTC"}')]
    (wire,) = session.wire(ToolResult("fc_1", '{"time": "15:04"}'))
    response = sent(wire).tool_response
    assert response is not None and response.function_responses is not None
    (answer,) = response.function_responses
    assert (answer.id, answer.name, answer.response) == ("fc_1", "lookup_time", {"time": "15:04"})
    assert session.wire(ToolResult("fc_1", "again")) == ()  # answered already


@pytest.mark.parametrize(
    ("output", "response"),
    [
        ('{"a": 1}', {"a": 1}),
        ("15:04", {"result": "15:04"}),
        ("[1, 2]", {"result": "[1, 2]"}),
        ('"text"', {"result": '"text"'}),
    ],
)
def test_tool_outputs(output: str, response: dict[str, Any]) -> None:
    assert tool_response(output) == response


def test_a_cancelled_call_is_cancelled_and_its_result_sends_nothing() -> None:
    session = ready(dialect().session())
    session.receive(call_message("fc_1"))
    cancel = server(tool_call_cancellation=types.LiveServerToolCallCancellation(ids=["fc_1", "x"]))
    assert session.receive(cancel) == [ToolCallCancelledIn("fc_1", "interrupted")]
    assert session.wire(ToolResult("fc_1", "late")) == ()


def test_a_call_without_an_id_is_invalid() -> None:
    session = ready(dialect().session())
    function = types.FunctionCall(name="f", args={})
    (invalid,) = session.receive(
        server(tool_call=types.LiveServerToolCall(function_calls=[function]))
    )
    assert isinstance(invalid, Invalid) and "id" in invalid.error.message


# -- user_text, instructions, context ---------------------------------------------------------


def test_user_text_is_a_complete_user_turn() -> None:
    session = ready(dialect().session())
    (wire,) = session.wire(UserText("What time is it?"))
    turn = sent(wire).client_content
    assert turn is not None and turn.turn_complete is True
    assert turn.turns is not None and turn.turns[0].role == "user"
    assert json.loads(wire) == {
        "clientContent": {
            "turns": [{"parts": [{"text": "What time is it?"}], "role": "user"}],
            "turnComplete": True,
        }
    }


def test_instructions_and_context_are_the_whole_system_instruction() -> None:
    d = dialect()
    session = ready(d.session())
    (wire,) = session.wire(AddContext("Bob is the host."))
    update = sent(wire).context_update
    assert update is not None
    assert json.loads(wire)["contextUpdate"]["systemInstruction"] == {
        "parts": [{"text": "Be brief.\n\nBob is the host."}]
    }
    (wire,) = session.wire(SetInstructions("Be terse."))
    assert json.loads(wire)["contextUpdate"]["systemInstruction"]["parts"][0]["text"] == (
        "Be terse.\n\nBob is the host."
    )
    # A new connection's setup carries them.
    (opening,) = d.session().opening()
    assert json.loads(opening)["setup"]["systemInstruction"] == {
        "parts": [{"text": "Be terse.\n\nBob is the host."}]
    }


# -- memory: resumption handles, else the record as initial history ----------------------------


def handle_update(handle: str | None, resumable: bool) -> bytes:
    update = types.LiveServerSessionResumptionUpdate(new_handle=handle, resumable=resumable)
    return server(session_resumption_update=update)


SNAPSHOT = MemorySnapshot(
    turns=(
        UserTurn("Book a room."),
        AgentTurn("Which day?", "gemini-1", AgentState.COMPLETE, 10),
        ToolTurn("fc_1", "book", '{"day":"Mon"}', "booked", ToolState.ANSWERED),
        CommandTurn(CommandKind.CONTEXT, "Bob is the host."),
        CommandTurn(CommandKind.USER_TEXT, "Thanks."),
    ),
    chars=80,
    dropped_turns=2,
)


def test_the_newest_resumable_handle_is_used_by_the_next_connection() -> None:
    d = dialect()
    session = ready(d.session(SNAPSHOT))
    session.receive(handle_update("h1", True))
    session.receive(handle_update(None, False))  # mid-reply: the last one stands
    nxt = d.session(SNAPSHOT)
    (wire,) = nxt.opening()
    setup = sent(wire).setup
    assert setup is not None and setup.session_resumption is not None
    assert setup.session_resumption.handle == "h1"
    assert setup.history_config is None
    assert nxt.restoring is not None and nxt.restoring.via == "resumption"
    assert nxt.restored() == MemoryRestored(turns=5, chars=80, dropped_turns=2)
    nxt.receive(SETUP_COMPLETE)
    assert nxt.replies() == ()  # the server has the conversation: no history sent


def test_with_memory_off_no_handle_is_asked_for_or_carried() -> None:
    d = GeminiLive(Options(session=SETUP, memory=False))
    first = d.session()
    assert "sessionResumption" not in json.loads(first.opening()[0])["setup"]
    ready(first).receive(handle_update("h1", True))  # a server that sends one anyway
    nxt = d.session(SNAPSHOT)
    setup = json.loads(nxt.opening()[0])["setup"]
    assert "sessionResumption" not in setup and "historyConfig" not in setup
    assert nxt.restored() is None
    nxt.receive(SETUP_COMPLETE)
    assert nxt.replies() == ()  # no history either


def test_a_handle_whose_connection_never_set_up_is_not_tried_again() -> None:
    d = dialect()
    ready(d.session()).receive(handle_update("h1", True))
    refused = d.session(SNAPSHOT)
    assert json.loads(refused.opening()[0])["setup"]["sessionResumption"] == {"handle": "h1"}
    # That connection ended before setupComplete: the next one seeds the record.
    nxt = d.session(SNAPSHOT)
    setup = json.loads(nxt.opening()[0])["setup"]
    assert setup["sessionResumption"] == {}
    assert d.resumption.rejected == 1
    assert nxt.restoring is not None and nxt.restoring.via == "history"


def test_a_handle_no_setup_carried_is_kept() -> None:
    """A connection that failed before its setup went (the handshake) says
    nothing about the handle."""
    d = dialect()
    ready(d.session()).receive(handle_update("h1", True))
    d.session(SNAPSHOT)  # never opened
    d.session(SNAPSHOT)  # never opened
    (wire,) = d.session(SNAPSHOT).opening()
    assert json.loads(wire)["setup"]["sessionResumption"] == {"handle": "h1"}
    assert d.resumption.rejected == 0


def test_without_a_handle_the_record_is_the_initial_history() -> None:
    d = dialect()
    session = d.session(SNAPSHOT)
    (wire,) = session.opening()
    setup = sent(wire).setup
    assert setup is not None and setup.history_config is not None
    assert setup.history_config.initial_history_in_client_content is True
    assert session.restoring is not None
    assert (session.restoring.turns, session.restoring.chars) == (5, 80)
    assert session.restoring.dropped_turns == 2
    session.receive(SETUP_COMPLETE)
    (history,) = session.replies()
    turns = sent(history).client_content
    assert turns is not None and turns.turn_complete is True
    assert [(t.role, t.parts[0].text if t.parts else None) for t in turns.turns or []] == [
        ("user", "Book a room."),
        ("model", "Which day?"),
        ("model", '(called the tool book with {"day":"Mon"}: result booked)'),
        ("user", "Thanks."),
    ]


def test_nothing_overtakes_the_seeded_history() -> None:
    """Between setupComplete and the link taking the history, neither audio nor
    a command may go: the server would take them for part of the history."""
    session = dialect().session(SNAPSHOT)
    session.opening()
    session.receive(SETUP_COMPLETE)
    before = session.audio_ready
    assert session.wire(UserText("Now?")) == ()
    history, held = session.replies()
    assert (before, session.audio_ready) == (False, True)
    assert sent(history).client_content is not None
    turn = sent(held).client_content
    assert turn is not None and turn.turns is not None and _text(turn.turns[0]) == "Now?"
    assert session.wire(UserText("Later.")) != ()


def _text(content: types.Content) -> str | None:
    return content.parts[0].text if content.parts else None


def test_the_first_connection_restores_nothing() -> None:
    session = dialect().session()
    assert session.restoring is None and session.restored() is None
    assert "historyConfig" not in json.loads(session.opening()[0])["setup"]
    empty = MemorySnapshot(turns=(), chars=0, dropped_turns=0)
    assert dialect().session(empty).restoring is None


# -- goAway ----------------------------------------------------------------------------------


def test_go_away_is_an_event_and_its_close_a_routine_end() -> None:
    session = ready(dialect().session())
    assert not session.reconnect_at_once(1011, "Deadline expired")
    out = session.receive(server(go_away=types.LiveServerGoAway(time_left="50s")))
    assert out == [Notice(AgentEvent(name="goAway", text="50s")), SessionExpiring(50.0)]
    # Without a time: the end is near, the link rotates at once.
    (_, expiring) = ready(dialect().session()).receive(server(go_away=types.LiveServerGoAway()))
    assert expiring == SessionExpiring(0.0)
    assert session.reconnect_at_once(1011, "Deadline expired before operation could complete.")


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "code", "needle"),
    [
        ("not json", ErrorCode.INVALID_JSON, "not valid JSON"),
        ("[1]", ErrorCode.INVALID_JSON, "JSON object"),
        ('{"serverContent": {"interrupted": "yes"}}', ErrorCode.INVALID_FIELD, "interrupted"),
        (
            '{"serverContent": {"modelTurn": {"parts": [{"inlineData": '
            '{"data": "@@", "mimeType": "audio/pcm"}}]}}}',
            ErrorCode.INVALID_BASE64,
            "inlineData.data",
        ),
    ],
)
def test_invalid_messages_say_what_is_wrong(wire: str, code: ErrorCode, needle: str) -> None:
    (invalid,) = ready(dialect().session()).receive(wire)
    assert isinstance(invalid, Invalid) and invalid.error.code == code
    assert needle in invalid.error.message


def test_messages_with_nothing_to_act_on_are_ignored_and_counted() -> None:
    session = ready(dialect().session())
    usage = server(usage_metadata=types.UsageMetadata(total_token_count=3))
    assert session.receive(usage) == []
    assert session.receive("{}") == []
    assert session.statistics().ignored == 2


def test_oversized_messages_are_invalid() -> None:
    session = GeminiLive(Options(session=SETUP, max_message_bytes=100)).session()
    (invalid,) = session.receive(b"{" + b" " * 200 + b"}")
    assert isinstance(invalid, Invalid) and invalid.error.code == ErrorCode.MESSAGE_TOO_LARGE


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.text(max_size=64),
            st.builds(
                lambda b, r: content(
                    model_turn=types.Content(
                        parts=[types.Part(inline_data=types.Blob(data=b, mime_type=r))]
                    )
                ).decode(),
                st.binary(max_size=32),
                st.sampled_from(["audio/pcm;rate=24000", "audio/pcm", "x/y", ""]),
            ),
        ),
        max_size=8,
    )
)
def test_receive_never_raises_and_audio_stays_whole_samples(messages: list[str | bytes]) -> None:
    session = ready(dialect().session())
    for message in messages:
        for item in session.receive(message):
            if isinstance(item, PlayAudio):
                assert len(item.pcm) % 2 == 0 and item.pcm


# -- golden vectors (proto/vectors/gemini-live.json) --------------------------------------------


@pytest.mark.parametrize("case", load_vectors("gemini-live.json"), ids=lambda c: str(c["name"]))
def test_vector(case: dict[str, Any]) -> None:
    run_vector(GeminiLive(options_from(case.get("options", {}))), case)


# -- against the fake Live API ------------------------------------------------------------------


@asynccontextmanager
async def connected(
    fake: GeminiServer, d: GeminiLive, session: GeminiLiveSession | None = None
) -> AsyncIterator[AgentClient]:
    headers = [(b"x-goog-api-key", fake.config.api_key.encode())]
    async with trio_websocket.open_websocket_url(fake.url, extra_headers=headers) as ws:
        client = AgentClient(session or d.session(), ws)
        await client.open()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.serve)
            yield client
            nursery.cancel_scope.cancel()


async def test_setup_then_audio_and_an_answered_turn() -> None:
    config = GeminiConfig(reply_ms=800)
    d = dialect()
    with trio.fail_after(30), GeminiServer(config) as fake:
        async with connected(fake, d) as client:
            await client.send_audio(tone(1000, 0.5, 16000) + bytes(16000), 16000)
            await client.wait(
                lambda: any(
                    isinstance(e, Transcript) and e.role == "assistant"
                    for e in events(client.incoming)
                )
            )
            await client.wait(lambda: d.resumption.handle is not None)
    conn = fake.connections[0]
    assert conn.violations == []
    played = client.of(PlayAudio)
    assert sum(len(p.pcm) for p in played) == 800 * 48
    assert {p.rate for p in played} == {24000} and {p.segment for p in played} == {"gemini-1"}
    said = [e for e in events(client.incoming) if isinstance(e, Transcript)]
    assert [(e.role, e.text) for e in said] == [
        ("user", "what the user said"),
        ("assistant", "the agent's answer"),
    ]


async def test_a_barge_in_clears_and_cuts_the_turn() -> None:
    config = GeminiConfig(reply_ms=3000, barge_in_at_ms=1000, answer_barge_in=False)
    d = dialect()
    with trio.fail_after(30), GeminiServer(config) as fake:
        async with connected(fake, d) as client:
            await client.send_audio(tone(1000, 0.4, 16000) + bytes(12800), 16000)
            await client.wait(lambda: bool(client.of(ClearPlayout)))
    assert fake.connections[0].violations == []
    assert len(client.clears) == 1


async def test_a_tool_call_answered_and_a_user_text_and_instructions() -> None:
    config = GeminiConfig(reply_ms=400, calls=[("lookup_time", '{"tz":"UTC"}')])
    d = dialect()
    with trio.fail_after(30), GeminiServer(config) as fake:
        async with connected(fake, d) as client:
            await client.send_audio(tone(1000, 0.4, 16000) + bytes(12800), 16000)
            await client.wait(lambda: bool(client.of(ToolCallIn)))
            (call,) = client.of(ToolCallIn)
            await client.command(ToolResult(call.call_id, '{"time": "15:04"}'))
            await client.wait(lambda: bool(client.of(PlayAudio)))
            await client.command(SetInstructions("Be terse."))
            await client.command(UserText("And tomorrow?"))
            state = fake.state(fake.current)
            await client.wait(lambda: state.replies >= 2)
    conn = fake.connections[0]
    assert conn.violations == []
    assert state.answers == [(call.call_id, "lookup_time", {"time": "15:04"})]
    assert state.instructions == ["Be terse."]
    assert state.user_texts == ["And tomorrow?"]


async def test_the_meeting_speaking_again_cancels_an_open_call() -> None:
    config = GeminiConfig(calls=[("lookup_time", '{"tz":"UTC"}')])
    d = dialect()
    with trio.fail_after(30), GeminiServer(config) as fake:
        async with connected(fake, d) as client:
            await client.send_audio(tone(1000, 0.4, 16000) + bytes(12800), 16000)
            await client.wait(lambda: bool(client.of(ToolCallIn)))
            await client.send_audio(tone(1000, 0.2, 16000), 16000)
            await client.wait(lambda: bool(client.of(ToolCallCancelledIn)))
            (call,) = client.of(ToolCallIn)
            assert await client.command(ToolResult(call.call_id, "late")) == []
    assert fake.connections[0].violations == []
    assert client.of(ToolCallCancelledIn) == [ToolCallCancelledIn(call.call_id, "interrupted")]


async def test_a_new_connection_resumes_with_the_handle() -> None:
    config = GeminiConfig(reply_ms=300)
    d = dialect()
    with trio.fail_after(30), GeminiServer(config) as fake:
        async with connected(fake, d) as client:
            await client.command(UserText("Hello"))
            await client.wait(lambda: d.resumption.handle is not None)
        handle = d.resumption.handle
        async with connected(fake, d, d.session(SNAPSHOT)) as client:
            await client.wait(lambda: client.session.audio_ready)
    first, second = fake.connections
    assert first.violations == [] and second.violations == []
    state = fake.state(second)
    assert state.resumed_from == handle
    assert ("user", "Hello") in state.history


async def test_a_fresh_session_is_seeded_with_the_record() -> None:
    d = dialect()
    with trio.fail_after(30), GeminiServer() as fake:
        async with connected(fake, d, d.session(SNAPSHOT)) as client:
            await client.wait(lambda: client.session.audio_ready)
            await client.send_audio(bytes(640), 16000)
            await trio.sleep(0.2)
    conn = fake.connections[0]
    assert conn.violations == []
    state = fake.state(conn)
    assert state.history[0] == ("user", "Book a room.") and not state.history_open
    assert state.replies == 0  # history gets no answer


@pytest.mark.parametrize(("headers", "status"), [([], 401), ([(b"x-goog-api-key", b"bad")], 403)])
async def test_a_wrong_key_is_refused_at_the_handshake(
    headers: list[tuple[bytes, bytes]], status: int
) -> None:
    with (
        trio.fail_after(10),
        GeminiServer() as fake,
        pytest.raises(trio_websocket.ConnectionRejected) as info,
    ):
        async with trio_websocket.open_websocket_url(fake.url, extra_headers=headers):
            pass
    assert info.value.status_code == status


def test_the_fake_refuses_what_the_gemini_api_refuses() -> None:
    bad = {"setup": {"model": "models/x", "sessionResumption": {"transparent": True}}}
    _, problems = validate_client_message(json.dumps(bad))
    assert any("Gemini API refuses" in p for p in problems)
    _, problems = validate_client_message(json.dumps({"realtimeInput": {"audio": {"x": 1}}}))
    assert problems
    two = {"clientContent": {"turnComplete": True}, "realtimeInput": {"text": "x"}}
    _, problems = validate_client_message(json.dumps(two))
    assert any("exactly one" in p for p in problems)
    b64 = base64.b64encode(b"\0\0").decode()
    ok = {"realtimeInput": {"audio": {"data": b64, "mimeType": "audio/pcm;rate=16000"}}}
    assert validate_client_message(json.dumps(ok))[1] == []


def test_the_vectors_are_up_to_date() -> None:
    path = Path(__file__).resolve().parent.parent / "proto" / "vectors" / "generate_gemini.py"
    spec = importlib.util.spec_from_file_location("generate_gemini", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run: python proto/vectors/generate_gemini.py"


@pytest.mark.parametrize(
    ("ours", "sdk"),
    [
        (gemini_live.ServerMessage, types.LiveServerMessage),
        (gemini_live.ServerContent, types.LiveServerContent),
        (gemini_live.InContent, types.Content),
        (gemini_live.InPart, types.Part),
        (gemini_live.InBlob, types.Blob),
        (gemini_live.InTranscription, types.Transcription),
        (gemini_live.SetupComplete, types.LiveServerSetupComplete),
        (gemini_live.ToolCall, types.LiveServerToolCall),
        (gemini_live.FunctionCall, types.FunctionCall),
        (gemini_live.ToolCallCancellation, types.LiveServerToolCallCancellation),
        (gemini_live.GoAway, types.LiveServerGoAway),
        (gemini_live.ResumptionUpdate, types.LiveServerSessionResumptionUpdate),
        (gemini_live.Blob, types.Blob),
        (gemini_live.Content, types.Content),
        (gemini_live.LiveClientContent, types.LiveClientContent),
        (gemini_live.RealtimeInput, types.LiveClientRealtimeInput),
        (gemini_live.FunctionResponse, types.FunctionResponse),
        (gemini_live.ToolResponse, types.LiveClientToolResponse),
        (gemini_live.ContextUpdate, types.LiveClientContextUpdate),
        (gemini_live.ClientMessage, types.LiveClientMessage),
    ],
)
def test_every_field_name_is_the_sdks(ours: type[msgspec.Struct], sdk: type[Any]) -> None:
    """The dialect's own structs spell each field as google-genai's models alias it."""
    names = {f.encode_name for f in msgspec.structs.fields(ours)}
    aliases = {field.alias or name for name, field in sdk.model_fields.items()}
    assert names <= aliases, names - aliases


def test_a_users_bearer_keeps_the_google_key_at_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-secret")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    config = resolve(
        "gemini-live",
        "wss://proxy.example/live",
        headers=(("Authorization", "Bearer ya29.token"),),
        session={"model": "gemini-3.8-live"},
    )
    names = [name.lower() for name, _ in config.headers]
    assert names == ["authorization"]
    # Without a header of the user's, the key goes as Google's own header.
    config = resolve("gemini-live", "wss://proxy.example/live", session={"model": "m"})
    assert ("x-goog-api-key", "AIza-secret") in config.headers
