"""The Vonage Voice API websocket dialect, sans-I/O: golden vectors, behaviour, fuzzing."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
import trio
from dialect_servers import VonageServer
from hypothesis import given
from hypothesis import strategies as st
from support import dominant_frequency, tone, wait_until
from test_dialect_twilio import (
    FUZZ,
    Json,
    json_values,
    load,
    never_raises,
    open_client,
    options_from,
    params,
    run_receive_case,
    run_session_case,
)

from sidecar.dialects import DIALECTS, make
from sidecar.dialects.base import (
    AudioOut,
    ClearedOut,
    ClearPlayout,
    DtmfOut,
    ErrorOut,
    Invalid,
    MarkIn,
    MarkOut,
    Options,
    PlayAudio,
    WireAudio,
)
from sidecar.dialects.server import server_session
from sidecar.dialects.vonage import MAX_NOTIFY_PAYLOAD, Vonage, VonageSession
from sidecar.messages import ErrorCode, MessageError

# -- the vectors -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", params("vonage.json", "session"))
def test_vector_session(case: Json) -> None:
    run_session_case(case, Vonage(options_from(case["options"])))


@pytest.mark.parametrize("case", params("vonage.json", "receive"))
def test_vector_receive(case: Json) -> None:
    run_receive_case(case, Vonage(options_from(case["options"])).session())


def test_every_error_code_vonage_can_give_has_a_vector() -> None:
    seen = {
        c["expect"]["error"]
        for c in load("vonage.json")
        if c["kind"] == "receive" and isinstance(c["expect"], dict)
    }
    # too_many_marks is the downlink's, not the dialect's.
    possible = set(ErrorCode) - {
        ErrorCode.INVALID_BASE64,
        ErrorCode.UNSUPPORTED_SAMPLE_RATE,
        ErrorCode.TOO_MANY_MARKS,
    }
    # invalid_field: a notify without payload; the others name themselves.
    assert {code.value for code in possible} <= seen


# -- the dialect -----------------------------------------------------------------------------


def session(**options: Any) -> VonageSession:
    return Vonage(Options(**options)).session()


def pcm(samples: int, start: int = 0) -> bytes:
    return struct.pack(
        f"<{samples}h", *(((start + i) * 97) % 20000 - 10000 for i in range(samples))
    )


def test_registered_with_its_properties() -> None:
    assert DIALECTS["vonage"] is Vonage
    dialect = make("vonage", Options(sample_rate=8000))
    assert dialect.per_participant is False
    assert dialect.error_replies is False
    assert [f.name for f in dialect.accepted_flags()] == ["--stream-param"]
    assert dialect.uplink_audio() == WireAudio(8000, "pcm16")
    assert make("vonage", Options()).uplink_audio() == WireAudio(16000, "pcm16")
    assert dialect.problems() == []


@pytest.mark.parametrize("rate", [24000, 44100, 0])
def test_rates_vonage_does_not_stream_are_problems(rate: int) -> None:
    (problem,) = Vonage(Options(sample_rate=rate)).problems()
    assert str(rate) in problem and "8000 or 16000" in problem


def test_reserved_header_names_are_problems() -> None:
    found = Vonage(Options(stream_params=(("event", "x"), ("content-type", "y")))).problems()
    assert len(found) == 2 and all("replace" in p for p in found)


def test_opening_fields_come_first_then_headers() -> None:
    (opening,) = session(stream_params=(("b", "2"), ("a", "1"))).opening()
    assert isinstance(opening, str)
    assert list(json.loads(opening)) == ["event", "content-type", "b", "a"]


@FUZZ
@given(
    st.lists(st.integers(0, 700), max_size=40),
    st.sampled_from([8000, 16000]),
)
def test_frames_are_exactly_20ms_and_keep_every_sample(sizes: list[int], rate: int) -> None:
    s = session(sample_rate=rate)
    s.opening()
    frame = rate // 50 * 2
    sent: list[bytes] = []
    audio = b""
    for size in sizes:
        data = pcm(size, start=len(audio) // 2)
        audio += data
        for message in s.encode(AudioOut(data, rate, 0)):
            assert isinstance(message, bytes)
            sent.append(message)
    for message in s.closing():
        assert isinstance(message, bytes)
        sent.append(message)
    assert all(len(f) == frame for f in sent)
    first = next((n for n in sizes if n), 0)  # the first chunk with audio is led
    lead = bytes(-2 * first % frame)  # see Packetizer
    tail = (len(lead) + len(audio)) % frame
    assert b"".join(sent) == lead + audio + (bytes(frame - tail) if tail else b"")


def test_wrong_rate_and_odd_pcm_are_caller_bugs() -> None:
    with pytest.raises(ValueError, match="16000 Hz"):
        session().encode(AudioOut(b"\0\0", 8000, 0))
    with pytest.raises(ValueError, match="even"):
        session().encode(AudioOut(b"\0", 16000, 0))


def test_participant_audio_and_errors_are_not_sent() -> None:
    s = session()
    assert s.encode(AudioOut(bytes(640), 16000, 0, "6f1c2a5e-3b9d-4e7a-8c21-0d4f5a6b7c8d")) == ()
    assert s.encode(ErrorOut(MessageError(ErrorCode.INVALID_JSON, "x"))) == ()


def test_clear_and_cleared() -> None:
    s = session()
    assert s.receive('{"action":"clear"}') == (ClearPlayout(),)
    assert s.encode(ClearedOut()) == ('{"event":"websocket:cleared"}',)


def test_dtmf() -> None:
    assert session().encode(DtmfOut("*")) == ('{"event":"websocket:dtmf","digit":"*"}',)


finite_json: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(finite_json)
def test_notify_payload_round_trips_exactly(payload: Any) -> None:
    """Whatever JSON a server puts in a notify, and however it spaces it, the
    answer carries the very same text."""
    s = session()
    for spacing in (None, 2):
        body = json.dumps(payload, indent=spacing, ensure_ascii=False)
        text = '{"action": "notify", "payload": ' + body + "}"
        (mark,) = s.receive(text)
        assert isinstance(mark, MarkIn)
        assert mark.name == body
        for played in (True, False):
            (answer,) = s.encode(MarkOut(mark.name, played))
            assert answer == '{"event":"websocket:notify","payload":' + body + "}"
            assert json.loads(answer)["payload"] == payload


@pytest.mark.parametrize(
    "body",
    ["1e99999", "-1e-99999", "1" * 5000, '{"n": 12345678901234567890123, "x": [1E400]}'],
)
def test_a_notify_payload_no_decoder_can_hold_comes_back_byte_for_byte(body: str) -> None:
    # Numbers past float or 64-bit range are still JSON: echoed, not re-parsed
    # (they once came back as JSON strings).
    s = session()
    (mark,) = s.receive('{"action":"notify","payload":' + body + "}")
    assert isinstance(mark, MarkIn)
    (answer,) = s.encode(MarkOut(mark.name, True))
    assert answer == '{"event":"websocket:notify","payload":' + body + "}"


@FUZZ
@given(st.text(max_size=40))
def test_any_mark_name_gives_valid_json(name: str) -> None:
    (answer,) = session().encode(MarkOut(name, True))
    assert isinstance(answer, str)
    assert json.loads(answer)["event"] == "websocket:notify"


def test_a_lone_surrogate_name_still_gives_valid_json() -> None:
    (answer,) = session().encode(MarkOut("a\ud800", True))
    assert isinstance(answer, str)
    assert json.loads(answer)["payload"] == "a?"


def test_audio_plays_at_the_session_rate() -> None:
    assert session(sample_rate=8000).receive(bytes(320)) == (PlayAudio(bytes(320), 8000),)


# -- receive never raises ------------------------------------------------------------------


def near_valid() -> st.SearchStrategy[Any]:
    actions = st.sampled_from(["clear", "notify", "websocket:notify", "", "CLEAR"])
    return st.fixed_dictionaries(
        {},
        optional={
            "action": actions | json_values,
            "payload": json_values,
            "event": st.sampled_from(["websocket:cleared", "websocket:notify"]),
        },
    )


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_receive_never_raises_on_anything(message: str | bytes) -> None:
    never_raises(session(max_message_bytes=200), message)


@FUZZ
@given(near_valid())
def test_receive_never_raises_on_near_valid(message: Any) -> None:
    text = json.dumps(message)
    never_raises(session(), text)
    never_raises(session(max_message_bytes=len(text.encode()) - 1), text)


# -- against a server written from Vonage's docs -----------------------------------------


def chunks(pcm: bytes, rate: int) -> list[AudioOut]:
    """Cut the way the capture cuts: 20 ms give or take a sample."""
    out: list[AudioOut] = []
    at, nominal = 0, rate // 50
    while at < len(pcm):
        size = (nominal + (-1, 1, 0, 2)[len(out) % 4]) * 2
        out.append(AudioOut(pcm[at : at + size], rate, 0))
        at += size
    return out


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_a_vonage_server_accepts_the_stream_and_its_echo_plays(rate: int) -> None:
    with trio.fail_after(10), VonageServer(echo=True) as server:
        dialect = Vonage(Options(sample_rate=rate, stream_params=(("caller", "+15550100"),)))
        async with open_client(server.url, dialect.session()) as client:
            sent = tone(500, 0.505, rate=rate)
            pieces = chunks(sent, rate)
            lead = -len(pieces[0].pcm) % (rate // 50 * 2)  # see Packetizer
            for item in pieces:
                await client.send(item)
            await client.send(DtmfOut("9"))
            await client.close()
            frame = rate // 50 * 2
            await wait_until(
                lambda: len(client.played()) >= -(-(lead + len(sent)) // frame) * frame
            )
        assert server.violations() == []
        assert server.rate() == rate
        assert server.headers() == {"caller": "+15550100"}
        assert server.inbound_pcm()[: lead + len(sent)] == bytes(lead) + sent
        assert client.played()[: lead + len(sent)] == bytes(lead) + sent
        assert abs(dominant_frequency(client.played(), rate) - 500) < 10
        assert server.events("websocket:dtmf") == [{"event": "websocket:dtmf", "digit": "9"}]


async def test_a_vonage_servers_notify_and_clear() -> None:
    with trio.fail_after(10), VonageServer() as server:
        async with open_client(server.url, Vonage(Options()).session()) as client:
            await wait_until(lambda: bool(server.texts()))
            server.send_audio(tone(300, 0.02, rate=16000))
            server.send_notify({"reply": 1, "words": ["a", "b"]})
            server.send_audio(tone(300, 0.02, rate=16000))
            server.send_notify("second")
            server.send_clear()
            await wait_until(lambda: bool(client.of(ClearPlayout)))
            assert [type(i) for i in client.incoming] == [
                PlayAudio,
                MarkIn,
                PlayAudio,
                MarkIn,
                ClearPlayout,
            ]
            # What the downlink will do: the first played, the second dropped by the clear.
            first, second = client.of(MarkIn)
            await client.send(MarkOut(first.name, True))
            await client.send(MarkOut(second.name, False))
            await client.send(ClearedOut())
            await wait_until(lambda: bool(server.events("websocket:cleared")))
        assert server.violations() == []
        assert server.notifies_pending() == []
        assert [m["payload"] for m in server.events("websocket:notify")] == [
            {"reply": 1, "words": ["a", "b"]},
            "second",
        ]


def test_a_notify_payload_is_capped_so_pending_marks_stay_small() -> None:
    s = session()
    fits = json.dumps("x" * (MAX_NOTIFY_PAYLOAD - 2))
    (mark,) = s.receive('{"action":"notify","payload":' + fits + "}")
    assert mark == MarkIn(fits)
    (refused,) = s.receive('{"action":"notify","payload":' + fits[:-1] + 'x"}')
    assert isinstance(refused, Invalid)
    assert refused.error.code == ErrorCode.INVALID_FIELD
    assert refused.error.trigger == "notify"
    assert f"8193 bytes of JSON; at most {MAX_NOTIFY_PAYLOAD}" in refused.error.message


def test_the_server_role_reads_a_notify_answer_no_decoder_can_hold() -> None:
    # Not one it sent (its own are strings): refused by name, not a traceback.
    server = server_session("vonage")
    server.receive('{"event":"websocket:connected","content-type":"audio/l16;rate=16000"}')
    (refused,) = server.receive('{"event":"websocket:notify","payload":1e99999}')
    assert isinstance(refused, Invalid)
    assert "'1e99999'" in refused.error.message
