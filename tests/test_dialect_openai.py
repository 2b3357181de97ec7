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
)
from sidecar.dialects.notices import AgentError, Transcript
from sidecar.dialects.notices import notice as as_notice
from sidecar.dialects.openai_realtime import (
    MAX_SEGMENTS,
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
    assert one(session.receive('{"type":"input_audio_buffer.speech_started"}')) == ClearPlayout()
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
    assert notice == as_notice(Transcript(role="assistant", text="Hello there.", item_id="item_a"))
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
    },
)


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), json_values.map(json.dumps)))
def test_receive_never_raises_on_anything(message: str | bytes) -> None:
    session = opened()
    for item in session.receive(message):
        assert isinstance(item, PlayAudio | ClearPlayout | Invalid | Notice)


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
