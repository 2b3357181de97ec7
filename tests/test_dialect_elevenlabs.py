"""The elevenlabs-agent dialect: its session state machine, message by message (sans-I/O)."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest
import trio
import trio_websocket
from agent_servers import AgentClient, load_vectors, options_from, run_vector
from elevenlabs_server import ElevenLabsConfig, ElevenLabsServer, SignedUrlServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import dominant_frequency, tone

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
    ToolCallIn,
    ToolResult,
    UrlAnswerError,
    UrlRequest,
    UserSpeaking,
    UserText,
    Utf8Text,
)
from sidecar.dialects.elevenlabs_agent import (
    DEFAULT_API_BASE,
    DEFAULT_URL,
    ElevenLabsAgent,
    ElevenLabsAgentSession,
    Format,
    agent_id_of,
    prepare_initiation,
    signed_url_from,
    signed_url_request,
)
from sidecar.dialects.g711 import pcm16_from_ulaw
from sidecar.dialects.notices import AgentEvent, Transcript
from sidecar.messages import ErrorCode, MessageError
from sidecar.tools.protocols import resolve
from sidecar.voice import Voice

SESSION: dict[str, Any] = {
    "conversation_config_override": {
        "agent": {"prompt": {"prompt": "Be brief."}, "first_message": "Hello!", "language": "en"},
        "tts": {"voice_id": "21m00Tcm4TlvDq8ikWAM"},
    },
    "dynamic_variables": {"user_name": "Ada"},
    "user_id": "bot-7",
}


def dialect(session: dict[str, Any] | None = None, rate: int = 16000) -> ElevenLabsAgent:
    return ElevenLabsAgent(
        Options(session=SESSION if session is None else session, sample_rate=rate)
    )


def metadata(input_format: str = "pcm_16000", output_format: str = "pcm_16000") -> str:
    event = {
        "conversation_id": "conv_1",
        "agent_output_audio_format": output_format,
        "user_input_audio_format": input_format,
    }
    return json.dumps(
        {
            "type": "conversation_initiation_metadata",
            "conversation_initiation_metadata_event": event,
        }
    )


def audio(data: bytes, event_id: int) -> str:
    event = {"audio_base_64": base64.b64encode(data).decode(), "event_id": event_id}
    return json.dumps({"type": "audio", "audio_event": event})


def interruption(event_id: int) -> str:
    return json.dumps({"type": "interruption", "interruption_event": {"event_id": event_id}})


def opened(
    input_format: str = "pcm_16000", output_format: str = "pcm_16000", rate: int = 16000
) -> ElevenLabsAgentSession:
    session = dialect(rate=rate).session()
    session.opening()
    session.receive(metadata(input_format, output_format))
    return session


def one(items: Any) -> Any:
    (item,) = items
    return item


def sent(wires: Any) -> list[dict[str, Any]]:
    return [json.loads(w) for w in wires]


# -- the dialect --------------------------------------------------------------------------------


def test_registered_with_its_defaults() -> None:
    assert DIALECTS["elevenlabs-agent"] is ElevenLabsAgent
    assert ElevenLabsAgent.default_url == "wss://api.elevenlabs.io/v1/convai/conversation"
    assert ElevenLabsAgent.takes("--session")
    assert dialect().uplink_audio().rate == 16000
    assert dialect(rate=8000).uplink_audio().rate == 8000


def test_say_and_instructions_are_refused_with_a_reason() -> None:
    d = dialect()
    assert d.refuses("tool_result") is None
    assert d.refuses("user_text") is None
    assert d.refuses("context") is None
    assert "speak a text" in (d.refuses("say") or "")
    assert "conversation_config_override" in (d.refuses("instructions") or "")


def test_opening_is_the_initiation_data_from_the_session() -> None:
    (wire,) = dialect().session().opening()
    assert json.loads(wire) == {"type": "conversation_initiation_client_data", **SESSION}


def test_an_empty_session_is_a_bare_initiation() -> None:
    (wire,) = dialect({}).session().opening()
    assert json.loads(wire) == {"type": "conversation_initiation_client_data"}


@pytest.mark.parametrize(
    ("user", "needle"),
    [
        ([], "must be a JSON object"),
        ({"prompt": "x"}, "`prompt`"),
        ({"user_id": 5}, "`user_id`"),
        ({"dynamic_variables": []}, "`dynamic_variables`"),
    ],
)
def test_problems_are_usage_errors(user: Any, needle: str) -> None:
    (problem,) = prepare_initiation(user).problems
    assert needle in problem


def test_warnings_name_what_disagrees() -> None:
    prepared = prepare_initiation(
        {"type": "x", "conversation_config_override": {"conversation": {"text_only": True}}}
    )
    assert prepared.problems == ()
    assert [w.split(":")[1].strip() for w in prepared.warnings] == [
        '`type` "x" replaced by "conversation_initiation_client_data"',
        "`conversation_config_override.conversation.text_only` is true",
    ]


# -- the language-neutral vectors ------------------------------------------------------


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c["name"]) for c in load_vectors("elevenlabs-agent.json")]
)
def test_vector(case: dict[str, Any]) -> None:
    run_vector(ElevenLabsAgent(options_from(case["options"])), case)


# -- audio formats, per connection ----------------------------------------------------------


def test_no_audio_before_the_metadata_names_the_formats() -> None:
    session = dialect().session()
    before = (session.audio_ready, session.formats)
    (event,) = session.receive(metadata("ulaw_8000", "pcm_22050"))
    assert before == (False, None)
    assert isinstance(event, Notice) and isinstance(event.event, AgentEvent)
    assert event.event.name == "conversation_initiation_metadata"
    assert event.event.request_id == "conv_1"
    assert session.audio_ready
    assert session.formats == (Format(8000, mulaw=True), Format(22050))
    assert session.conversation_id == "conv_1"


def test_audio_at_the_announced_rate_goes_as_is() -> None:
    session = opened("pcm_16000")
    pcm = tone(440, 0.02, 16000)
    (message,) = sent(session.wire(AudioOut(pcm, 16000, 0)))
    assert message == {"user_audio_chunk": base64.b64encode(pcm).decode()}


def test_the_links_utf8_audio_is_the_same_text() -> None:
    first, second = opened(), opened()
    pcm = tone(440, 0.02, 16000)
    (fast,) = first.wire_utf8(AudioOut(pcm, 16000, 0))
    assert isinstance(fast, Utf8Text)
    assert [fast.data.decode()] == list(second.wire(AudioOut(pcm, 16000, 0)))
    # Anything else goes by wire().
    assert first.wire_utf8(UserText("hi")) == first.wire(UserText("hi"))


@pytest.mark.parametrize(("name", "rate"), [("pcm_8000", 8000), ("pcm_44100", 44100)])
def test_audio_is_resampled_to_the_announced_input_rate(name: str, rate: int) -> None:
    session = opened(name)
    pcm = tone(440, 1.0, 16000)
    out = b""
    for i in range(0, len(pcm), 640):
        for message in sent(session.wire(AudioOut(pcm[i : i + 640], 16000, 0))):
            assert set(message) == {"user_audio_chunk"}
            out += base64.b64decode(message["user_audio_chunk"])
    # The converter holds a few samples back: all but those came out.
    assert rate * 0.97 <= len(out) // 2 <= rate
    assert abs(dominant_frequency(out, rate) - 440) < 5


def test_ulaw_input_is_resampled_to_8k_and_encoded() -> None:
    session = opened("ulaw_8000")
    pcm = tone(440, 1.0, 16000)
    out = b""
    for i in range(0, len(pcm), 640):
        for message in sent(session.wire(AudioOut(pcm[i : i + 640], 16000, 0))):
            out += base64.b64decode(message["user_audio_chunk"])
    assert 8000 * 0.97 <= len(out) <= 8000  # one byte a sample
    assert abs(dominant_frequency(pcm16_from_ulaw(out), 8000) - 440) < 5


def test_a_new_connection_takes_its_own_formats() -> None:
    d = dialect()
    first, second = d.session(), d.session()
    first.receive(metadata("pcm_16000", "pcm_16000"))
    second.receive(metadata("ulaw_8000", "pcm_44100"))
    pcm = tone(440, 0.02, 16000)
    assert (
        len(base64.b64decode(sent(first.wire(AudioOut(pcm, 16000, 0)))[0]["user_audio_chunk"]))
        == 640
    )
    assert one(second.receive(audio(bytes(8820), 3))).rate == 44100


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100, 48000])
def test_agent_audio_plays_at_the_announced_rate(rate: int) -> None:
    session = opened("pcm_16000", f"pcm_{rate}")
    pcm = tone(440, 0.1, rate)
    play = one(session.receive(audio(pcm, 4)))
    assert play == PlayAudio(pcm, rate, "4")


@pytest.mark.parametrize("rate", [22050, 44100])
def test_the_voice_plays_elevenlabs_odd_rates(rate: int) -> None:
    """22.05 and 44.1 kHz, which no other dialect sends: the voice resamples them to 48 kHz."""
    voice = Voice()
    assert voice.audio(tone(440, 1.0, rate), rate) == 0
    frames = [voice.tick().frame for _ in range(60)]
    pcm = b"".join(f for f in frames if f is not None)
    assert len(pcm) // 2 >= 48000 * 0.9
    assert abs(dominant_frequency(pcm, 48000) - 440) < 5


def test_ulaw_agent_audio_is_decoded() -> None:
    session = opened("pcm_16000", "ulaw_8000")
    data = bytes([0xFF, 0x7F, 0x00, 0x80])
    assert one(session.receive(audio(data, 2))) == PlayAudio(pcm16_from_ulaw(data), 8000, "2")


# -- barge-in ---------------------------------------------------------------------------------


def test_an_interruption_clears_and_cuts_that_replys_late_audio() -> None:
    session = opened()
    assert isinstance(one(session.receive(audio(bytes(640), 5))), PlayAudio)
    clear, speaking, event = session.receive(interruption(5))
    assert isinstance(clear, ClearPlayout) and speaking == UserSpeaking()
    assert isinstance(event, Notice) and event.event == AgentEvent(name="interruption")
    # Still in flight when it came: counted, never played.
    assert one(session.receive(audio(bytes(640), 5))) == CutAudio(320, 16000)
    assert one(session.receive(audio(bytes(640), 4))) == CutAudio(320, 16000)
    assert isinstance(one(session.receive(audio(bytes(640), 6))), PlayAudio)
    assert session.statistics().cut_events == 2


def test_an_older_interruption_does_not_lower_the_cut() -> None:
    session = opened()
    session.receive(interruption(9))
    session.receive(interruption(3))
    assert isinstance(one(session.receive(audio(bytes(2), 8))), CutAudio)


def test_the_bots_clear_cuts_the_reply_in_flight() -> None:
    session = opened()
    session.receive(audio(bytes(640), 7))
    assert session.wire(ClearedOut(Heard("7", 20), by_bot=True)) == ()
    assert isinstance(one(session.receive(audio(bytes(640), 7))), CutAudio)
    assert isinstance(one(session.receive(audio(bytes(640), 8))), PlayAudio)


def test_a_server_barge_ins_clear_sends_nothing() -> None:
    session = opened()
    session.receive(audio(bytes(640), 7))
    assert session.wire(ClearedOut(Heard("7", 20))) == ()
    # Nothing was cut by our clear alone: the server's interruption says what.
    assert isinstance(one(session.receive(audio(bytes(640), 7))), PlayAudio)


# -- ping, transcripts, ignored and invalid messages ------------------------------------------


def test_a_ping_is_answered_with_its_event_id() -> None:
    session = opened()
    ping = {"type": "ping", "ping_event": {"event_id": 3, "ping_ms": 120}}
    assert session.receive(json.dumps(ping)) == ()
    assert sent(session.replies()) == [{"type": "pong", "event_id": 3}]
    assert session.replies() == ()
    ping["ping_event"] = {"event_id": 4}  # no ping_ms on the first ping
    session.receive(json.dumps(ping))
    assert sent(session.replies()) == [{"type": "pong", "event_id": 4}]


@pytest.mark.parametrize(
    ("message", "event"),
    [
        (
            {
                "type": "agent_response",
                "agent_response_event": {"agent_response": " Hi. ", "event_id": 7},
            },
            Transcript(role="assistant", text="Hi.", item_id="7", segment="7"),
        ),
        (
            {
                "type": "agent_response_correction",
                "agent_response_correction_event": {
                    "original_agent_response": "Hello there, how are you",
                    "corrected_agent_response": "Hello there",
                    "event_id": 7,
                },
            },
            Transcript(role="assistant", text="Hello there", item_id="7", segment="7"),
        ),
        (
            {
                "type": "user_transcript",
                "user_transcription_event": {"user_transcript": "yes", "event_id": 8},
            },
            Transcript(role="user", text="yes", item_id="8"),
        ),
    ],
)
def test_transcripts_become_stdout_events(message: dict[str, Any], event: Any) -> None:
    assert one(opened().receive(json.dumps(message))) == Notice(event)


def test_unknown_types_are_ignored_and_counted() -> None:
    session = opened()
    assert (
        session.receive(json.dumps({"type": "vad_score", "vad_score_event": {"vad_score": 0.9}}))
        == ()
    )
    assert session.statistics().ignored == 1


@pytest.mark.parametrize(
    ("text", "code", "needle"),
    [
        ("not json", ErrorCode.INVALID_JSON, "not valid JSON"),
        ("[]", ErrorCode.INVALID_JSON, "JSON object"),
        ('{"audio_event": {}}', ErrorCode.MISSING_TRIGGER, "`type`"),
        ('{"type": "audio", "audio_event": {"event_id": 1}}',
         ErrorCode.INVALID_FIELD, "audio_base_64"),
        ('{"type": "audio", "audio_event": {"audio_base_64": "!!", "event_id": 1}}',
         ErrorCode.INVALID_BASE64, "audio_base_64"),
        ('{"type": "ping", "ping_event": {"event_id": "x"}}', ErrorCode.INVALID_FIELD, "event_id"),
        (metadata("mp3_44100"), ErrorCode.INVALID_FIELD, "user_input_audio_format"),
        (audio(b"\x00\x01\x02", 1), ErrorCode.ODD_LENGTH, "even"),
    ],
)  # fmt: skip
def test_invalid_messages_say_what_is_wrong(text: str, code: ErrorCode, needle: str) -> None:
    session = opened()
    error = one(session.receive(text))
    assert isinstance(error, Invalid) and error.error.code is code
    assert needle in error.error.message
    assert session.statistics().invalid == 1


def test_audio_before_the_metadata_is_invalid() -> None:
    session = dialect().session()
    error = one(session.receive(audio(bytes(4), 1)))
    assert isinstance(error, Invalid) and "conversation_initiation_metadata" in error.error.message


def test_oversized_messages_are_invalid() -> None:
    session = ElevenLabsAgent(Options(max_message_bytes=64)).session()
    assert one(session.receive("{" + " " * 80 + "}")).error.code is ErrorCode.MESSAGE_TOO_LARGE


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
    {"type": st.sampled_from(sorted(["conversation_initiation_metadata", "audio", "interruption",
                                     "ping", "agent_response", "agent_response_correction",
                                     "user_transcript", "client_tool_call"])) | json_values},
    optional={k: json_values for k in ("audio_event", "interruption_event", "ping_event",
                                       "agent_response_event", "client_tool_call",
                                       "conversation_initiation_metadata_event")},
)  # fmt: skip


@FUZZ
@given(
    st.lists(st.one_of(st.text(max_size=200), st.binary(max_size=64), near_valid.map(json.dumps)))
)
def test_receive_never_raises(messages: list[str | bytes]) -> None:
    session = opened()
    for message in messages:
        for item in session.receive(message):
            assert isinstance(
                item,
                PlayAudio | ClearPlayout | CutAudio | Invalid | Notice | ToolCallIn | UserSpeaking,
            )
            if isinstance(item, PlayAudio):
                assert len(item.pcm) % 2 == 0 and item.pcm
        for wire in session.replies():
            assert json.loads(wire)["type"] == "pong"


# -- the bot's commands ---------------------------------------------------------------------------


def tool_call(call_id: str = "t_1", parameters: Any = None) -> str:
    call = {"tool_name": "lookup_time", "tool_call_id": call_id, "event_id": 9}
    if parameters is not None:
        call["parameters"] = parameters
    return json.dumps({"type": "client_tool_call", "client_tool_call": call})


def test_a_client_tool_call_is_a_tool_call_with_its_parameters_as_given() -> None:
    session = opened()
    call = one(session.receive(tool_call(parameters={"tz": "UTC"})))
    assert call == ToolCallIn("t_1", "lookup_time", '{"tz": "UTC"}')
    assert one(session.receive(tool_call("t_2"))) == ToolCallIn("t_2", "lookup_time", "{}")


def test_a_result_is_a_client_tool_result_once() -> None:
    session = opened()
    session.receive(tool_call())
    assert sent(session.wire(ToolResult("t_1", '{"time":"15:04"}'))) == [
        {
            "type": "client_tool_result",
            "tool_call_id": "t_1",
            "result": '{"time":"15:04"}',
            "is_error": False,
        }
    ]
    assert session.wire(ToolResult("t_1", "again")) == ()
    assert session.wire(ToolResult("never-called", "x")) == ()


def test_user_text_and_context_are_their_messages() -> None:
    session = opened()
    assert sent(session.wire(UserText("What time is it?"))) == [
        {"type": "user_message", "text": "What time is it?"}
    ]
    assert sent(session.wire(AddContext("Bob joined."))) == [
        {"type": "contextual_update", "text": "Bob joined."}
    ]


def test_context_outlives_the_connection() -> None:
    d = dialect({})
    d.session().wire(AddContext("Bob is the host."))
    opening = sent(d.session().opening())
    assert opening == [
        {"type": "conversation_initiation_client_data"},
        {"type": "contextual_update", "text": "Bob is the host."},
    ]


def test_what_the_api_has_no_message_for_sends_nothing() -> None:
    session = opened()
    for item in (
        DtmfOut("1"),
        MarkOut("m", True),
        ErrorOut(MessageError(ErrorCode.INVALID_JSON, "x")),
        AudioOut(bytes(640), 16000, 0, stream="participant"),
    ):
        assert session.wire(item) == ()


# -- the signed URL ---------------------------------------------------------------------------


def test_the_signed_url_request_needs_the_key_and_takes_the_base() -> None:
    assert signed_url_request({}, "agent_1") is None
    request = signed_url_request({"ELEVENLABS_API_KEY": " k1 "}, "agent 1")
    assert request is not None
    assert (
        request.url == f"{DEFAULT_API_BASE}/v1/convai/conversation/get-signed-url?agent_id=agent+1"
    )
    assert request.headers == (("xi-api-key", "k1"),)
    assert "k1" not in request.url
    based = signed_url_request(
        {"ELEVENLABS_API_KEY": "k1", "ELEVENLABS_API_BASE": "http://127.0.0.1:9/"}, "a"
    )
    assert based is not None
    assert based.url == "http://127.0.0.1:9/v1/convai/conversation/get-signed-url?agent_id=a"


def test_the_signed_url_is_read_from_the_answer() -> None:
    url = "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=a&conversation_signature=s"
    assert signed_url_from(json.dumps({"signed_url": url}).encode()) == url
    assert agent_id_of(url) == "a"
    assert agent_id_of("wss://x/v1/convai/conversation") is None
    for body, needle in (
        (b"{}", "signed_url"),
        (b"nope", "signed_url"),
        (b'{"signed_url":"https://x"}', "ws://"),
    ):
        with pytest.raises(UrlAnswerError, match=needle):
            signed_url_from(body)


def test_the_run_rate_is_the_capture_rate() -> None:
    pcm = np.zeros(160, dtype="<i2").tobytes()
    session = opened("pcm_16000", rate=8000)
    # Captured at 8 kHz, announced 16 kHz: twice the samples, less the hold-back.
    out = b"".join(
        base64.b64decode(m["user_audio_chunk"])
        for _ in range(10)
        for m in sent(session.wire(AudioOut(pcm, 8000, 0)))
    )
    assert 3200 * 0.9 <= len(out) // 2 <= 3200


# -- against the fake service, over real sockets (the sidecar's link does this in the e2e tests) --


async def fetch(request: UrlRequest) -> tuple[int, bytes]:
    def get() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(
                urllib.request.Request(request.url, headers=dict(request.headers)), timeout=5
            ) as answer:
                return int(answer.status), bytes(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    return await trio.to_thread.run_sync(get)


async def converse(url: str, session: ElevenLabsAgentSession) -> AgentClient:
    """Open, wait for the metadata and one ping answered; the client, closed."""
    async with trio_websocket.open_websocket_url(url) as ws:
        client = AgentClient(session, ws)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.serve)
            await client.open()
            await client.wait(lambda: session.audio_ready and bool(client.replied))
            nursery.cancel_scope.cancel()
    return client


async def test_a_signed_url_serves_one_conversation_and_a_new_one_is_fetched() -> None:
    config = ElevenLabsConfig(private=True, ping_every_s=0.05)
    with trio.fail_after(20), ElevenLabsServer(config) as agents, SignedUrlServer(agents) as rest:
        environ = {"ELEVENLABS_API_KEY": rest.api_key, "ELEVENLABS_API_BASE": rest.base}
        request = signed_url_request(environ, agent_id_of(agents.url) or "")
        assert request is not None
        status, body = await fetch(request)
        assert status == 200
        first = signed_url_from(body)
        client = await converse(first, dialect().session())
        assert sent(client.replied)[0]["type"] == "pong"
        # The old signed URL no longer opens a conversation; a new one does.
        agents.expire()
        with pytest.raises(trio_websocket.HandshakeError):
            await converse(first, dialect().session())
        status, body = await fetch(request)
        await converse(signed_url_from(body), dialect().session())
    assert [k for _, k in rest.requests] == [rest.api_key, rest.api_key]
    assert len(set(rest.issued)) == 2
    assert agents.refusals == ["the signature is unknown or expired"]
    assert all(conn.violations == [] for conn in agents.connections)
    assert all(conn.received[0]["type"] == "conversation_initiation_client_data"
               for conn in agents.connections)  # fmt: skip


async def test_a_wrong_key_is_401() -> None:
    with trio.fail_after(20), ElevenLabsServer() as agents, SignedUrlServer(agents) as rest:
        environ = {"ELEVENLABS_API_KEY": "xi-wrong", "ELEVENLABS_API_BASE": rest.base}
        request = signed_url_request(environ, "agent_test")
        assert request is not None
        status, body = await fetch(request)
    assert status == 401
    assert json.loads(body)["detail"]["status"] == "invalid_api_key"
    with pytest.raises(UrlAnswerError, match="signed_url"):
        signed_url_from(body)


# -- what the dialect tells the link and the CLI (the seam) ------------------------------------


def test_the_dialect_declares_its_flags_key_and_rates() -> None:
    assert ElevenLabsAgent.takes("--session") and ElevenLabsAgent.takes("--agent-id")
    assert not ElevenLabsAgent.takes("--call-sid")
    assert ElevenLabsAgent.credential_envs() == ("ELEVENLABS_API_KEY",)
    assert ElevenLabsAgent.sample_rates == (8000, 16000, 24000)
    # The key goes to get-signed-url only, never to the websocket.
    assert dialect().auth_headers({"ELEVENLABS_API_KEY": "k"}, "wss://x/?agent_id=a") == ()


def test_the_agent_id_comes_from_the_flag_or_the_url() -> None:
    flagged = ElevenLabsAgent(Options(extra={"--agent-id": "agent_7"}))
    environ = {"ELEVENLABS_API_KEY": "k", "ELEVENLABS_API_BASE": "http://127.0.0.1:9"}
    request = flagged.url_request(ElevenLabsAgent.default_url or "", environ)
    assert request is not None and request.url.endswith("get-signed-url?agent_id=agent_7")
    url = "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=agent_8"
    request = dialect().url_request(url, environ)
    assert request is not None and request.url.endswith("?agent_id=agent_8")
    # No key: a public agent, reached at the URL itself.
    assert dialect().url_request(url, {}) is None
    assert flagged.connect_url(DEFAULT_URL) == f"{DEFAULT_URL}?agent_id=agent_7"
    assert flagged.connect_url(url) == f"{DEFAULT_URL}?agent_id=agent_7"
    assert dialect().connect_url(url) == url
    answer = json.dumps({"signed_url": url + "&conversation_signature=s"}).encode()
    assert flagged.url_from_answer("", 200, answer).endswith("conversation_signature=s")
    assert ElevenLabsAgent(Options(extra={"--agent-id": " "})).problems() == (
        "--agent-id must not be empty",
    )


def test_the_conversation_so_far_is_told_in_a_contextual_update() -> None:
    from sidecar.memory import ConversationRecord

    record = ConversationRecord()
    record.user_said("What time is it?")
    record.tool_called("t_1", "lookup_time", '{"tz":"UTC"}')
    record.tool_answered("t_1", "15:04")
    record.agent_said("It is 15:04.", "7")
    record.agent_finished("7")
    history = record.snapshot()
    d = dialect({})
    d.briefing.add_context("Bob is the host.")
    session = d.session(history)
    initiation, context, told = sent(session.opening())
    assert initiation == {"type": "conversation_initiation_client_data"}
    assert context == {"type": "contextual_update", "text": "Bob is the host."}
    assert told["type"] == "contextual_update"
    assert told["text"].splitlines()[1:] == [
        "User: What time is it?",
        'Tool lookup_time({"tz":"UTC"}) -> 15:04',
        "Agent: It is 15:04.",
    ]
    restored = session.restored()
    assert restored is not None
    assert (restored.turns, restored.chars, restored.dropped_turns) == (
        history.turn_count,
        history.chars,
        history.dropped_turns,
    )
    assert d.session().restored() is None
    assert d.session(ConversationRecord().snapshot()).restored() is None


@pytest.mark.parametrize("key", ["", "xi-key"])
def test_the_default_url_needs_no_header_with_or_without_a_key(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A public agent takes no key; a private one's key goes to get-signed-url, so
    the run is settled either way and no header carries the key to the websocket."""
    monkeypatch.setenv("ELEVENLABS_API_KEY", key)
    config = resolve("elevenlabs-agent", DEFAULT_URL, session={})
    assert config.headers == ()
