"""The deepgram-agent dialect: its session state machine, then against the fake Voice Agent."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio
import trio_websocket
from agent_servers import (
    AgentClient,
    AgentConfig,
    AgentServer,
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
from sidecar.dialects.deepgram_agent import DeepgramAgent, DeepgramAgentSession, prepare_settings
from sidecar.dialects.notices import AgentError, AgentEvent, AgentWarning, Transcript
from sidecar.dialects.notices import notice as as_notice
from sidecar.messages import ErrorCode, MessageError

AGENT: dict[str, Any] = {
    "listen": {"provider": {"type": "deepgram", "model": "nova-3"}},
    "think": {"provider": {"type": "open_ai", "model": "gpt-4o-mini"}, "prompt": "Be brief."},
    "speak": {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
}


def dialect(session: Any = None, rate: int = 16000) -> DeepgramAgent:
    user = {"agent": AGENT} if session is None else session
    return DeepgramAgent(Options(session=user, sample_rate=rate))


def opened(session: Any = None, rate: int = 16000) -> DeepgramAgentSession:
    return dialect(session, rate).session()


def one(items: Any) -> Any:
    assert len(items) == 1, items
    return items[0]


def audio_section(rate: int) -> dict[str, Any]:
    return {
        "input": {"encoding": "linear16", "sample_rate": rate},
        "output": {"encoding": "linear16", "sample_rate": rate, "container": "none"},
    }


# -- the dialect ----------------------------------------------------------------------


def test_registered_with_its_defaults() -> None:
    assert DIALECTS["deepgram-agent"] is DeepgramAgent
    assert DeepgramAgent.default_url == "wss://agent.deepgram.com/v1/agent/converse"
    assert dialect().uplink_audio().rate == 16000
    assert dialect(rate=24000).uplink_audio().rate == 24000
    assert DeepgramAgentSession.keepalive_s == 8.0


def test_auth_header_comes_from_the_environment() -> None:
    assert dialect().auth_headers({"DEEPGRAM_API_KEY": "dg1"}, "wss://x") == (
        ("Authorization", "Token dg1"),
    )
    assert dialect().auth_headers({}, "wss://x") == ()


def test_opening_is_settings_with_our_audio_section() -> None:
    user = {"tags": ["bot"], "agent": AGENT | {"greeting": "Hello!"}, "mip_opt_out": True}
    wire = one(opened(user).opening())
    assert json.loads(wire) == {
        "type": "Settings",
        "tags": ["bot"],
        "mip_opt_out": True,
        "audio": audio_section(16000),
        "agent": AGENT | {"greeting": "Hello!"},
    }
    assert wire.startswith('{"type":"Settings","tags":["bot"],"mip_opt_out":true,"audio":{')
    assert dialect(user).warnings() == ()
    assert dialect(user).problems() == ()


def test_the_rate_follows_the_sample_rate_option() -> None:
    assert json.loads(one(opened(rate=8000).opening()))["audio"] == audio_section(8000)


@pytest.mark.parametrize(
    "extra, needle",
    [
        ({"type": "SettingsConfiguration"}, '`type` "SettingsConfiguration" replaced'),
        ({"audio": {"input": {"encoding": "mulaw", "sample_rate": 8000}}}, "`audio`"),
        ({"audio": audio_section(24000)}, "(--sample-rate)"),
    ],
)
def test_warnings_name_what_disagrees(extra: dict[str, Any], needle: str) -> None:
    d = dialect({"agent": AGENT} | extra)
    assert d.problems() == ()
    assert any(needle in w for w in d.warnings()), d.warnings()
    assert json.loads(one(d.session().opening()))["audio"] == audio_section(16000)


def test_our_own_audio_section_raises_no_warning() -> None:
    assert dialect({"agent": AGENT, "audio": audio_section(16000)}).warnings() == ()


def test_client_side_functions_need_no_warning() -> None:
    # The bot answers them with tool_result.
    think = AGENT["think"] | {"functions": [{"name": "lookup", "parameters": {}}]}
    assert dialect({"agent": {"think": think}}).warnings() == ()
    assert dialect({"agent": {"think": [AGENT["think"], think]}}).warnings() == ()


@pytest.mark.parametrize(
    "user, needle",
    [
        ([], "must be a JSON object"),
        ({}, "`agent`"),
        ({"agent": AGENT, "agnet": {}}, "unknown field `agnet`"),
        ({"agent": 5}, "`agent`"),
        ({"agent": AGENT, "tags": "bot"}, "`tags`"),
        ({"agent": AGENT, "experimental": "yes"}, "`experimental`"),
    ],
)
def test_problems_are_usage_errors(user: Any, needle: str) -> None:
    problems = dialect(user).problems()
    assert any(needle in p for p in problems), problems


# -- the language-neutral vectors ------------------------------------------------------


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c["name"]) for c in load_vectors("deepgram-agent.json")]
)
def test_vector(case: dict[str, Any]) -> None:
    run_vector(DeepgramAgent(options_from(case["options"])), case)


# -- up -------------------------------------------------------------------------------------


def test_audio_goes_as_raw_binary_frames_once_settings_are_applied() -> None:
    session = opened()
    ready = [session.audio_ready]
    assert one(session.receive('{"type":"Welcome","request_id":"r-1"}')).event == AgentEvent(
        name="Welcome", request_id="r-1"
    )
    ready.append(session.audio_ready)
    session.receive('{"type":"SettingsApplied"}')
    ready.append(session.audio_ready)
    assert ready == [False, False, True]
    assert session.encode(AudioOut(b"\x01\x00\x02\x00", 16000, 0)) == (b"\x01\x00\x02\x00",)


def test_keepalive_is_the_documented_message() -> None:
    assert opened().keepalive() == ('{"type":"KeepAlive"}',)


def test_what_the_api_has_no_message_for_sends_nothing() -> None:
    session = opened()
    for item in (
        MarkOut("m", True),
        DtmfOut("1"),
        ErrorOut(MessageError(ErrorCode.INVALID_JSON, "x")),
        ClearedOut(),
        ClearedOut(Heard("anything", 100)),
        AudioOut(b"\x00\x00", 16000, 0, stream="6f1c2a5e-3b9d-4e7a-8c21-0d4f5a6b7c8d"),
    ):
        assert session.encode(item) == ()


# -- down -------------------------------------------------------------------------------------


def test_binary_frames_are_the_agents_voice() -> None:
    assert opened(rate=24000).receive(b"\x01\x00\x02\x00") == (
        PlayAudio(b"\x01\x00\x02\x00", 24000),
    )


def test_a_sample_split_across_frames_is_carried() -> None:
    session = opened()
    assert session.receive(b"\x01\x00\x02") == (PlayAudio(b"\x01\x00", 16000),)
    assert session.receive(b"\x00\x03\x00") == (PlayAudio(b"\x02\x00\x03\x00", 16000),)
    assert session.receive(b"\x04") == ()
    assert session.receive(b"\x00") == (PlayAudio(b"\x04\x00", 16000),)


def test_user_started_speaking_clears_playout_and_the_carried_byte() -> None:
    session = opened()
    session.receive(b"\x01\x00\x02")
    clear, started, notice = session.receive('{"type":"UserStartedSpeaking"}')
    assert clear == ClearPlayout()
    assert started == UserSpeaking()
    assert notice == as_notice(AgentEvent(name="UserStartedSpeaking"))
    assert session.receive(b"\x05\x00") == (PlayAudio(b"\x05\x00", 16000),)


@pytest.mark.parametrize(
    "message, event",
    [
        (
            {"type": "ConversationText", "role": "assistant", "content": "Hi!"},
            Transcript(role="assistant", text="Hi!"),
        ),
        (
            {"type": "ConversationText", "role": "user", "content": "Hello"},
            Transcript(role="user", text="Hello"),
        ),
        ({"type": "AgentThinking", "content": "hmm"}, AgentEvent(name="AgentThinking", text="hmm")),
        (
            {"type": "AgentStartedSpeaking", "total_latency": 0.5, "tts_latency": 0.1,
             "ttt_latency": 0.4},
            AgentEvent(name="AgentStartedSpeaking", total_latency=0.5, tts_latency=0.1,
                       ttt_latency=0.4),
        ),
        ({"type": "AgentAudioDone"}, AgentEvent(name="AgentAudioDone")),
        (
            {"type": "Error", "code": "CLIENT_MESSAGE_TIMEOUT", "description": "late"},
            AgentError(message="late", code="CLIENT_MESSAGE_TIMEOUT"),
        ),
        (
            {"type": "Warning", "code": "W1", "description": "careful"},
            AgentWarning(message="careful", code="W1"),
        ),
    ],
)  # fmt: skip
def test_text_events_become_stdout_events(message: dict[str, Any], event: Any) -> None:
    assert one(opened().receive(json.dumps(message))).event == event


def test_stdout_lines_carry_the_event_names() -> None:
    session = opened()
    for message, name in [
        ({"type": "ConversationText", "role": "user", "content": "x"}, "transcript"),
        ({"type": "Error", "code": "E", "description": "d"}, "agent_error"),
        ({"type": "Warning", "code": "W", "description": "d"}, "agent_warning"),
        ({"type": "AgentAudioDone"}, "agent_event"),
    ]:
        event = one(session.receive(json.dumps(message))).event
        assert json.loads(msgspec.json.encode(event))["event"] == name


def test_unknown_types_are_ignored_and_counted() -> None:
    session = opened()
    for kind in ("ThinkUpdated", "History", "PromptUpdated", "Something New"):
        assert session.receive(json.dumps({"type": kind, "x": 1})) == ()
    assert session.statistics().ignored == 4


@pytest.mark.parametrize(
    "text, code, needle",
    [
        ("nope", ErrorCode.INVALID_JSON, "not valid JSON"),
        ('"Welcome"', ErrorCode.INVALID_JSON, "JSON object"),
        ("{}", ErrorCode.MISSING_TRIGGER, "`type`"),
        ('{"type": ["Error"]}', ErrorCode.INVALID_FIELD, "`type` must be a string"),
        ('{"type": "ConversationText", "role": "user"}', ErrorCode.INVALID_FIELD, "content"),
        ('{"type": "AgentStartedSpeaking", "total_latency": "slow"}', ErrorCode.INVALID_FIELD,
         "total_latency"),
    ],
)  # fmt: skip
def test_invalid_messages_say_what_is_wrong(text: str, code: ErrorCode, needle: str) -> None:
    result = one(opened().receive(text))
    assert isinstance(result, Invalid)
    assert result.error.code is code
    assert needle in result.error.message


def test_oversized_frames_are_invalid() -> None:
    settings = prepare_settings({"agent": {}}, 16000).settings
    session = DeepgramAgentSession(settings, 16000, max_message_bytes=8)
    assert one(session.receive(b"\x00" * 10)).error.code is ErrorCode.MESSAGE_TOO_LARGE
    assert one(session.receive("{" + " " * 10 + "}")).error.code is ErrorCode.MESSAGE_TOO_LARGE


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
    {"type": st.sampled_from(["ConversationText", "AgentStartedSpeaking", "Error", "Warning",
                              "Welcome", "AgentThinking", "SettingsApplied"]) | json_values},
    optional={k: json_values for k in ("role", "content", "code", "description",
                                       "total_latency", "request_id")},
)  # fmt: skip


@FUZZ
@given(
    st.lists(st.one_of(st.text(max_size=200), st.binary(max_size=64), near_valid.map(json.dumps)))
)
def test_receive_never_raises_and_audio_stays_whole_samples(messages: list[str | bytes]) -> None:
    session = opened()
    played = 0
    received = 0
    for message in messages:
        if isinstance(message, bytes):
            received += len(message)
        for item in session.receive(message):
            assert isinstance(
                item,
                PlayAudio | ClearPlayout | Invalid | Notice | ToolCallIn | ToolCallCancelledIn,
            )
            if isinstance(item, PlayAudio):
                assert len(item.pcm) % 2 == 0 and item.pcm
                played += len(item.pcm)
            if isinstance(item, ClearPlayout):
                played = received = 0
    assert received - played in (0, 1)


# -- the bot's commands -------------------------------------------------------------------------


def request(*functions: tuple[str, str, bool]) -> str:
    entries = [
        {"id": id_, "name": name, "arguments": '{"q":"x"}', "client_side": client}
        for id_, name, client in functions
    ]
    return json.dumps({"type": "FunctionCallRequest", "functions": entries})


def test_all_five_commands_are_supported_with_think_settings() -> None:
    d = dialect()
    for name in ("tool_result", "say", "user_text", "context", "instructions"):
        assert d.refuses(name) is None


@pytest.mark.parametrize("agent", ["agent-id-123", {"listen": AGENT["listen"]}])
def test_instructions_and_context_need_think_settings(agent: Any) -> None:
    d = dialect({"agent": agent})
    for name in ("instructions", "context"):
        reason = d.refuses(name)
        assert reason is not None and "agent.think" in reason and name in reason
    for name in ("tool_result", "say", "user_text"):
        assert d.refuses(name) is None


def test_client_side_calls_are_tool_calls_and_server_side_ones_are_not() -> None:
    session = opened()
    calls = session.receive(request(("fc_1", "lookup", True), ("fc_2", "served", False)))
    assert list(calls) == [ToolCallIn("fc_1", "lookup", '{"q":"x"}')]
    stats = session.statistics()
    assert (stats.tool_calls, stats.server_side_calls) == (1, 1)


def test_a_result_is_a_function_call_response_with_the_calls_name() -> None:
    session = opened()
    session.receive(request(("fc_1", "lookup", True)))
    wire = one(session.encode(ToolResult("fc_1", '{"ok":true}')))
    assert wire == (
        '{"type":"FunctionCallResponse","id":"fc_1","name":"lookup","content":"{\\"ok\\":true}"}'
    )
    # Answered once; an unknown id (another connection's call) sends nothing.
    assert session.encode(ToolResult("fc_1", "again")) == ()
    assert session.encode(ToolResult("fc_9", "x")) == ()
    assert dialect().session().encode(ToolResult("fc_1", "x")) == ()


def test_a_cancelled_call_is_cancelled_and_its_result_sends_nothing() -> None:
    session = opened()
    session.receive(request(("fc_1", "lookup", True), ("fc_2", "other", True)))
    cancelled = {"type": "FunctionCallCancelled", "functions": [{"id": "fc_1", "name": "lookup"}]}
    got = session.receive(json.dumps(cancelled))
    assert list(got) == [ToolCallCancelledIn("fc_1", "cancelled")]
    assert session.encode(ToolResult("fc_1", "late")) == ()
    assert len(session.encode(ToolResult("fc_2", "ok"))) == 1
    # A call it never asked the bot about is not the bot's to hear of.
    unknown = {"type": "FunctionCallCancelled", "functions": [{"id": "fc_x", "name": "f"}]}
    assert list(session.receive(json.dumps(unknown))) == []


def test_say_user_text_and_context_are_their_messages() -> None:
    session = opened()
    assert session.encode(Say("Hello, room.")) == (
        '{"type":"InjectAgentMessage","message":"Hello, room."}',
    )
    assert session.encode(UserText("Alice joined.")) == (
        '{"type":"InjectUserMessage","content":"Alice joined."}',
    )
    assert session.encode(AddContext("Bob is the host.")) == (
        '{"type":"UpdatePrompt","prompt":"Bob is the host."}',
    )


def test_instructions_are_the_think_settings_with_the_new_prompt() -> None:
    session = opened()
    wire = json.loads(one(session.encode(SetInstructions("Be terse."))))
    assert wire == {"type": "UpdateThink", "think": AGENT["think"] | {"prompt": "Be terse."}}
    # A fallback list: every entry gets the prompt.
    think = [AGENT["think"], {"provider": {"type": "anthropic", "model": "claude"}}]
    session = opened({"agent": AGENT | {"think": think}})
    wire = json.loads(one(session.encode(SetInstructions("Be terse."))))
    assert [t["prompt"] for t in wire["think"]] == ["Be terse.", "Be terse."]
    assert wire["think"][1]["provider"] == {"type": "anthropic", "model": "claude"}


def test_instructions_and_context_outlive_the_session() -> None:
    d = dialect()
    first = d.session()
    first.encode(AddContext("Bob is the host."))
    # UpdateThink replaces the whole prompt: the context appended so far stays in it.
    think = json.loads(one(first.encode(SetInstructions("Be terse."))))["think"]
    assert think["prompt"] == "Be terse.\n\nBob is the host."
    first.encode(AddContext("The meeting ends at 3."))
    settings = json.loads(one(d.session().opening()))
    assert settings["agent"]["think"] == AGENT["think"] | {
        "prompt": "Be terse.\n\nBob is the host.\n\nThe meeting ends at 3."
    }
    assert settings["agent"]["listen"] == AGENT["listen"]
    # Context alone is appended to the user's prompt, as UpdatePrompt does.
    d = dialect()
    d.session().encode(AddContext("Bob is the host."))
    settings = json.loads(one(d.session().opening()))
    assert settings["agent"]["think"]["prompt"] == "Be brief.\n\nBob is the host."
    # Nothing changed: the user's settings as they were.
    assert json.loads(one(opened().opening()))["agent"] == AGENT


def test_injection_refused_is_a_warning() -> None:
    refused = {"type": "InjectionRefused", "message": "The user is speaking."}
    event = one(opened().receive(json.dumps(refused))).event
    assert event == AgentWarning(message="The user is speaking.", code="InjectionRefused")


def test_the_bots_clear_drops_the_rest_of_the_reply() -> None:
    session = opened()
    session.receive('{"type":"SettingsApplied"}')
    session.receive('{"type":"AgentStartedSpeaking","total_latency":1}')
    assert isinstance(one(session.receive(b"\x01\x00" * 10)), PlayAudio)
    assert session.encode(ClearedOut(Heard("x", 5), by_bot=True)) == ()
    assert one(session.receive(b"\x01\x00" * 10)) == CutAudio(10, 16000)
    assert one(session.receive(b"\x01\x00\x02")) == CutAudio(1, 16000)
    assert session.statistics().cut_frames == 2
    # The reply ended: the next one plays, from its first whole sample.
    session.receive('{"type":"AgentAudioDone"}')
    assert one(session.receive(b"\x03\x00")) == PlayAudio(b"\x03\x00", 16000)
    # Cut again mid-reply; a new reply starting ends the cut too.
    session.receive('{"type":"AgentStartedSpeaking"}')
    session.encode(ClearedOut(None, by_bot=True))
    assert isinstance(one(session.receive(b"\x00\x00")), CutAudio)
    session.receive('{"type":"AgentStartedSpeaking"}')
    assert isinstance(one(session.receive(b"\x00\x00")), PlayAudio)


def test_a_clear_between_replies_cuts_nothing() -> None:
    session = opened()
    session.receive('{"type":"AgentStartedSpeaking"}')
    session.receive('{"type":"AgentAudioDone"}')
    session.encode(ClearedOut(None, by_bot=True))
    assert isinstance(one(session.receive(b"\x00\x00")), PlayAudio)


# -- against the fake Voice Agent ---------------------------------------------------------------


def headers(token: str = "dg-test", scheme: str = "Token") -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"{scheme} {token}".encode())]


def speech(rate: int = 16000) -> bytes:
    """600 ms of a loud tone then 600 ms of silence: one user turn."""
    return tone(300, 0.6, rate=rate) + b"\x00\x00" * (rate * 6 // 10)


async def test_settings_first_then_audio_and_an_answered_turn() -> None:
    config = AgentConfig(reply_ms=900, speed=6.0)
    with AgentServer(config) as server, trio.fail_after(15):
        session = opened({"agent": AGENT | {"greeting": "Hello!"}})
        async with trio_websocket.open_websocket_url(server.url, extra_headers=headers()) as ws, \
                trio.open_nursery() as nursery:  # fmt: skip
            client = AgentClient(session, ws)
            nursery.start_soon(client.serve)
            await client.open()
            await client.wait(lambda: _names(client).count("AgentAudioDone") == 1)  # greeting
            await client.send_audio(speech(), 16000)
            await client.wait(lambda: _names(client).count("AgentAudioDone") == 2)
            await _until(lambda: len(server.current.audio) == len(speech()))
            nursery.cancel_scope.cancel()
        conn = server.current
        assert conn.violations == []
        assert conn.received[0]["type"] == "Settings"
        assert len(conn.audio) == len(speech())
        names = _names(client)
        assert names[:2] == ["Welcome", "SettingsApplied"]
        transcripts = [(t.role, t.text) for t in _events(client, Transcript)]
        assert transcripts == [
            ("assistant", "Hello!"),
            ("user", "what the user said"),
            ("assistant", "the agent's answer"),
        ]
        plays = client.of(PlayAudio)
        assert sum(len(p.pcm) for p in plays) == 2 * 900 * 32
        assert {p.rate for p in plays} == {16000}
        assert len({len(p.pcm) for p in plays}) > 2, "frames come in uneven sizes"
        assert client.span(PlayAudio) < 2 * 0.9, "two 0.9 s replies, each sent 6x real time"


async def test_user_started_speaking_mid_reply_stops_playback() -> None:
    config = AgentConfig(reply_ms=4000, speed=4.0, barge_in_at_ms=1200, answer_barge_in=False)
    with AgentServer(config) as server, trio.fail_after(15):
        session = opened({"agent": AGENT | {"greeting": "A long greeting."}})
        async with trio_websocket.open_websocket_url(server.url, extra_headers=headers()) as ws, \
                trio.open_nursery() as nursery:  # fmt: skip
            client = AgentClient(session, ws)
            nursery.start_soon(client.serve)
            await client.open()
            await client.wait(lambda: bool(client.clears))
            await trio.sleep(0.3)  # nothing of the cut reply may follow
            nursery.cancel_scope.cancel()
        assert server.current.violations == []
        received = sum(len(p.pcm) for p in client.of(PlayAudio))
        sent = sum(len(m) for m in server.current.sent if isinstance(m, bytes))
        assert received == sent, "every byte sent was played or cleared"
        assert 1200 * 32 <= sent < 1400 * 32, "audio stopped where the user barged in"
        assert client.playout.busy is False
        assert "AgentAudioDone" not in _names(client)
        assert client.clears == [ClearedOut()]


async def test_keepalive_holds_an_idle_session_open() -> None:
    config = AgentConfig(idle_timeout_s=0.6)
    with AgentServer(config) as server, trio.fail_after(10):
        session = opened()
        async with trio_websocket.open_websocket_url(server.url, extra_headers=headers()) as ws, \
                trio.open_nursery() as nursery:  # fmt: skip
            client = AgentClient(session, ws)
            nursery.start_soon(client.serve)
            await client.open()
            for _ in range(8):  # 1.6 s idle, a KeepAlive every 0.2 s
                await trio.sleep(0.2)
                for wire in session.keepalive():
                    await ws.send_message(wire)
            await _until(lambda: server.state(server.current).keepalives == 8)
            assert client.close_code is None
            nursery.cancel_scope.cancel()
        assert server.current.violations == []


async def test_an_idle_session_without_keepalive_is_closed() -> None:
    config = AgentConfig(idle_timeout_s=0.4)
    with AgentServer(config) as server, trio.fail_after(10):
        session = opened()
        async with trio_websocket.open_websocket_url(server.url, extra_headers=headers()) as ws:
            client = AgentClient(session, ws)
            await client.open()
            await client.serve()
        assert client.close_code is not None
        error = one(_events(client, AgentError))
        assert error.code == "CLIENT_MESSAGE_TIMEOUT"
        assert not session.reconnect_at_once(client.close_code, client.close_reason)


async def test_audio_before_settings_is_a_violation_the_fake_reports() -> None:
    with AgentServer() as server, trio.fail_after(10):
        async with trio_websocket.open_websocket_url(server.url, extra_headers=headers()) as ws:
            await ws.get_message()  # Welcome
            await ws.send_message(b"\x00\x00" * 160)
            error = json.loads(await ws.get_message())
        assert error["type"] == "Error"
        assert server.current.violations == ["audio before SettingsApplied"]


@pytest.mark.parametrize(
    "scheme, token", [("Token", "wrong"), ("Bearer", "wrong"), ("Basic", "dg-test")]
)
async def test_a_wrong_token_is_refused_at_the_handshake(scheme: str, token: str) -> None:
    with AgentServer() as server, trio.fail_after(10):
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with trio_websocket.open_websocket_url(
                server.url, extra_headers=headers(token, scheme)
            ):
                pass
        assert rejected.value.status_code == 401
        assert server.connections == []


async def test_a_bearer_token_is_accepted_too() -> None:
    with AgentServer() as server, trio.fail_after(10):
        async with trio_websocket.open_websocket_url(
            server.url, extra_headers=headers("dg-test", "Bearer")
        ) as ws:
            assert json.loads(await ws.get_message())["type"] == "Welcome"


async def test_invalid_settings_end_the_session() -> None:
    with AgentServer() as server, trio.fail_after(10):
        async with trio_websocket.open_websocket_url(server.url, extra_headers=headers()) as ws:
            client = AgentClient(opened(), ws)
            await ws.send_message('{"type":"Settings","audio":{},"agent":{},"bogus":1}')
            await client.serve()
        assert any("bogus" in v for v in server.current.violations)
        assert one(_events(client, AgentError)).code == "UNPARSABLE_CLIENT_MESSAGE"


async def _until(predicate: Any) -> None:
    while not predicate():
        await trio.sleep(0.01)


def _events(client: AgentClient, kind: type[Any]) -> list[Any]:
    return [n.event for n in client.of(Notice) if isinstance(n.event, kind)]


def _names(client: AgentClient) -> list[str]:
    return [e.name for e in _events(client, AgentEvent)]


# -- the bot's commands, against the fake Voice Agent ------------------------------------------


@asynccontextmanager
async def served(server: AgentServer, session: DeepgramAgentSession) -> AsyncIterator[AgentClient]:
    async with (
        trio_websocket.open_websocket_url(server.url, extra_headers=headers()) as ws,
        trio.open_nursery() as nursery,
    ):
        client = AgentClient(session, ws)
        nursery.start_soon(client.serve)
        await client.open()
        await client.wait(lambda: session.audio_ready)
        yield client
        nursery.cancel_scope.cancel()


def _said(client: AgentClient) -> list[str]:
    return [t.text for t in _events(client, Transcript) if t.role == "assistant"]


async def test_a_tool_call_answered_end_to_end() -> None:
    """The meeting asks; Deepgram asks the client to run a function; the bot's
    FunctionCallResponse goes back; the agent's spoken answer is heard."""
    config = AgentConfig(reply_ms=600, speed=6.0, calls=[("lookup", '{"q":"clock"}')])
    with AgentServer(config) as server, trio.fail_after(15):
        async with served(server, opened()) as client:
            await client.send_audio(speech(), 16000)
            await client.wait(lambda: bool(client.of(ToolCallIn)))
            (call,) = client.of(ToolCallIn)
            assert (call.name, call.arguments_json) == ("lookup", '{"q":"clock"}')
            await client.command(ToolResult(call.call_id, '{"time":"15:04"}'))
            await client.wait(lambda: "AgentAudioDone" in _names(client))
            await _until(lambda: client.played_bytes() == 600 * 32)
        conn = server.current
        state = server.state(conn)
        assert conn.violations == []
        assert state.answers == [(call.call_id, "lookup", '{"time":"15:04"}')]
        assert state.pending == {}
        assert _said(client) == ['the answer is {"time":"15:04"}']
        assert sum(len(p.pcm) for p in client.of(PlayAudio)) == 600 * 32


async def test_server_side_and_cancelled_calls_are_not_answered() -> None:
    with AgentServer() as server, trio.fail_after(15):
        async with served(server, opened()) as client:
            conn = server.current
            server.request_call(conn, "served", "{}", client_side=False)
            server.request_call(conn, "lookup", "{}")
            await client.wait(lambda: bool(client.of(ToolCallIn)))
            server.cancel_calls(conn)
            await client.wait(lambda: bool(client.of(ToolCallCancelledIn)))
            (call,) = client.of(ToolCallIn)
            assert call.name == "lookup"
            assert client.of(ToolCallCancelledIn) == [
                ToolCallCancelledIn(call.call_id, "cancelled")
            ]
            # Deepgram: "Send no FunctionCallResponse for this id".
            assert await client.command(ToolResult(call.call_id, "late")) == []
        assert conn.violations == []
        assert server.state(conn).answers == []


async def test_say_user_text_context_and_instructions_against_the_agent() -> None:
    config = AgentConfig(reply_ms=300, speed=6.0)
    with AgentServer(config) as server, trio.fail_after(15):
        async with served(server, opened()) as client:
            conn = server.current
            await client.command(AddContext("Bob is the host."))
            await client.command(SetInstructions("Be terse."))
            await client.command(Say("Welcome, everyone."))
            await client.wait(lambda: "AgentAudioDone" in _names(client))
            await client.command(UserText("What time is it?"))
            await client.wait(lambda: _names(client).count("AgentAudioDone") == 2)
        state = server.state(conn)
        assert conn.violations == []
        assert state.prompt_updates == ["Bob is the host."]
        assert state.thinks == [AGENT["think"] | {"prompt": "Be terse.\n\nBob is the host."}]
        assert state.injected == [
            ("InjectAgentMessage", "Welcome, everyone."),
            ("InjectUserMessage", "What time is it?"),
        ]
        assert _said(client) == ["Welcome, everyone.", "the agent's answer"]


async def test_an_injection_while_the_agent_speaks_is_refused_with_a_warning() -> None:
    config = AgentConfig(reply_ms=3000, speed=1.0)
    with AgentServer(config) as server, trio.fail_after(15):
        async with served(server, opened()) as client:
            await client.command(Say("First."))
            await client.wait(lambda: bool(client.of(PlayAudio)))
            await client.command(Say("Second."))
            await client.wait(lambda: bool(_events(client, AgentWarning)))
        (warning,) = _events(client, AgentWarning)
        assert warning.code == "InjectionRefused"
        assert server.state(server.current).refused == 1


async def test_the_bots_clear_cuts_the_reply_on_the_wire() -> None:
    config = AgentConfig(reply_ms=2000, speed=2.0)
    session = opened()
    with AgentServer(config) as server, trio.fail_after(15):
        async with served(server, session) as client:
            await client.command(Say("A long story."))
            await client.wait(lambda: bool(client.of(PlayAudio)))
            await trio.sleep(0.2)
            assert await client.clear() == []
            await client.wait(lambda: "AgentAudioDone" in _names(client))
            await client.command(Say("Next."))
            await client.wait(lambda: _names(client).count("AgentAudioDone") == 2)
        conn = server.current
        assert conn.violations == []
        sent = sum(len(m) for m in conn.sent if isinstance(m, bytes))
        played = sum(len(p.pcm) for p in client.of(PlayAudio))
        cut = sum(c.samples * 2 for c in client.of(CutAudio))
        assert cut > 0, "the rest of the first reply was dropped"
        assert played + cut == sent, "every byte sent was played or cut"
        assert session.statistics().cut_frames == len(client.of(CutAudio))
        assert _said(client) == ["A long story.", "Next."]


async def test_a_new_session_starts_with_what_the_bot_changed() -> None:
    with AgentServer() as server, trio.fail_after(15):
        d = dialect()
        async with served(server, d.session()) as client:
            first = server.current
            await client.command(SetInstructions("Be terse."))
            await client.command(AddContext("Bob is the host."))
            await _until(lambda: len(first.sent_json("PromptUpdated")) == 1)
        async with served(server, d.session()):
            second = server.current
        assert first.violations == second.violations == []
        think = server.state(second).settings["agent"]["think"]
        assert think == AGENT["think"] | {"prompt": "Be terse.\n\nBob is the host."}
