"""The Twilio Media Streams dialect, sans-I/O: golden vectors, behaviour, fuzzing.

The golden-vector runner at the top is shared with test_dialect_vonage.py.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
import trio_websocket
from dialect_servers import TwilioServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import dominant_frequency, tone, wait_until
from twilio.request_validator import RequestValidator

from sidecar.capture import CaptureStream
from sidecar.dialects import DIALECTS, make
from sidecar.dialects.base import (
    MIXED,
    AudioOut,
    ClearedOut,
    ClearPlayout,
    Dialect,
    DtmfOut,
    ErrorOut,
    Incoming,
    Invalid,
    MarkIn,
    MarkOut,
    Notice,
    Options,
    Outgoing,
    PlayAudio,
    Session,
    Wire,
    WireAudio,
)
from sidecar.dialects.g711 import Packetizer, pcm16_from_ulaw, ulaw_from_pcm16
from sidecar.dialects.twilio import MAX_MARK_NAME, RATE, Twilio, TwilioSession
from sidecar.frames import Audio
from sidecar.messages import ErrorCode, MessageError

VECTORS = Path(__file__).resolve().parent.parent / "proto" / "vectors"
Json = dict[str, Any]

EXAMPLES = int(os.environ.get("SIDECAR_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- golden vectors (shared with test_dialect_vonage.py) -----------------------------------


def load(name: str) -> list[Json]:
    cases: list[Json] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return cases


def params(name: str, kind: str) -> list[Any]:
    return [pytest.param(case, id=case["name"]) for case in load(name) if case["kind"] == kind]


def options_from(obj: Json) -> Options:
    fields = dict(obj)
    if "stream_params" in fields:
        fields["stream_params"] = tuple((k, v) for k, v in fields["stream_params"])
    return Options(**fields)


def item_from(obj: Json) -> Outgoing:
    match obj["kind"]:
        case "audio":
            pcm = bytes.fromhex(obj["pcm_hex"])
            return AudioOut(pcm, obj["rate"], 0, obj.get("stream", MIXED))
        case "dtmf":
            return DtmfOut(obj["digit"])
        case "mark":
            return MarkOut(obj["name"], obj["played"])
        case "error":
            return ErrorOut(MessageError(ErrorCode(obj["code"]), obj["message"]))
        case "cleared":
            return ClearedOut()
    raise AssertionError(obj)


def wire_json(messages: Iterable[Wire]) -> list[Json]:
    return [{"text": m} if isinstance(m, str) else {"hex": m.hex()} for m in messages]


def wire_from(obj: Json) -> Wire:
    if "hex" in obj:
        return bytes.fromhex(obj["hex"])
    text: str = obj["text"]
    return text


def incoming_json(item: Incoming) -> Json:
    match item:
        case PlayAudio(pcm=pcm, rate=rate):
            return {"kind": "play_audio", "rate": rate, "pcm_hex": pcm.hex()}
        case ClearPlayout():
            return {"kind": "clear"}
        case MarkIn(name=name):
            return {"kind": "mark", "name": name}
        case Invalid() | Notice():
            raise AssertionError(f"not a decoded message: {item}")
    raise AssertionError(item)


def run_session_case(case: Json, dialect: Dialect) -> None:
    session: Session | None = None
    for n, step in enumerate(case["steps"]):
        where = f"step {n} ({step['do']})"
        if step["do"] in ("opening", "reconnect"):
            session = dialect.session()
            sent = list(session.opening())
        else:
            assert session is not None, "a case starts with its opening"
            if step["do"] == "send":
                sent = list(session.wire(item_from(step["item"])))
            else:
                assert step["do"] == "closing"
                sent = list(session.closing())
        assert wire_json(sent) == step["wire"], where


def run_receive_case(case: Json, session: Session) -> None:
    result = list(session.receive(wire_from(case["wire"])))
    expect = case["expect"]
    if isinstance(expect, dict):
        assert len(result) == 1 and isinstance(result[0], Invalid), result
        error = result[0].error
        assert error.code == expect["error"]
        assert error.trigger == expect["trigger"]
        assert error.message
        if "field" in expect:
            assert expect["field"] in error.message, error.message
    else:
        assert [incoming_json(item) for item in result] == expect


class DialectClient:
    """A websocket client that speaks through one dialect session, as the
    sidecar will: its opening first, every item encoded at send time, every
    server message decoded into `incoming`. Drains its socket in its own task
    (trio-websocket's one-message queue must never fill)."""

    def __init__(self, ws: Any, session: Session) -> None:
        self.ws = ws
        self.session = session
        self.incoming: list[Incoming] = []
        self.closed = trio.Event()

    async def send(self, item: Outgoing) -> None:
        for message in self.session.wire(item):
            await self.ws.send_message(message)

    async def close(self) -> None:
        for message in self.session.closing():
            await self.ws.send_message(message)

    def of(self, kind: type[Any]) -> list[Any]:
        return [item for item in self.incoming if isinstance(item, kind)]

    def played(self) -> bytes:
        return b"".join(item.pcm for item in self.of(PlayAudio))

    async def _read(self) -> None:
        try:
            while True:
                self.incoming.extend(self.session.receive(await self.ws.get_message()))
        except trio_websocket.ConnectionClosed:
            self.closed.set()


@asynccontextmanager
async def open_client(url: str, session: Session) -> AsyncIterator[DialectClient]:
    async with (
        trio_websocket.open_websocket_url(
            url, max_message_size=1 << 22, connect_timeout=5, disconnect_timeout=5
        ) as ws,
        trio.open_nursery() as nursery,
    ):
        client = DialectClient(ws, session)
        for message in session.opening():
            await ws.send_message(message)
        nursery.start_soon(client._read)
        yield client
        nursery.cancel_scope.cancel()


def generator() -> ModuleType:
    path = VECTORS / "generate_dialects.py"
    spec = importlib.util.spec_from_file_location("dialect_vector_generator", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the Twilio vectors ----------------------------------------------------------------------


def sid_pool(pools: dict[str, list[str]]) -> Callable[[str], str]:
    queues = {prefix: list(values) for prefix, values in pools.items()}
    return lambda prefix: queues[prefix].pop(0)


def twilio_from(case: Json) -> Twilio:
    return Twilio(options_from(case["options"]), sids=sid_pool(case.get("sids", {})))


@pytest.mark.parametrize("case", params("twilio.json", "session"))
def test_vector_session(case: Json) -> None:
    run_session_case(case, twilio_from(case))


@pytest.mark.parametrize("case", params("twilio.json", "receive"))
def test_vector_receive(case: Json) -> None:
    run_receive_case(case, Twilio(options_from(case["options"])).session())


def test_vectors_are_up_to_date() -> None:
    assert generator().main(["--check"]) == 0, "run: python proto/vectors/generate_dialects.py"


def test_every_error_code_twilio_can_give_has_a_vector() -> None:
    seen = {
        c["expect"]["error"]
        for c in load("twilio.json")
        if c["kind"] == "receive" and isinstance(c["expect"], dict)
    }
    # too_many_marks is the downlink's, not the dialect's.
    possible = set(ErrorCode) - {
        ErrorCode.ODD_LENGTH,
        ErrorCode.UNSUPPORTED_SAMPLE_RATE,
        ErrorCode.TOO_MANY_MARKS,
    }
    assert {code.value for code in possible} <= seen


def test_the_vectors_mu_law_is_audioops() -> None:
    """The generator's G.711 (written from the ITU-T algorithm) and the codec the
    dialect uses agree on every sample and every byte."""
    reference = generator()
    every_sample = struct.pack("<65536h", *range(-32768, 32768))
    assert reference.ulaw(every_sample) == ulaw_from_pcm16(every_sample)
    every_byte = bytes(range(256))
    assert reference.pcm_of_ulaw(every_byte) == pcm16_from_ulaw(every_byte)


# -- the dialect -----------------------------------------------------------------------------

SID = re.compile(r"(MZ|CA|AC)[0-9a-f]{32}")


def session(**options: Any) -> TwilioSession:
    return Twilio(Options(**options)).session()


def decoded(text: str) -> Json:
    value: Json = json.loads(text)
    return value


def texts(wire: Any) -> list[Json]:
    assert all(isinstance(m, str) for m in wire), wire
    return [decoded(m) for m in wire]


def chunk(samples: int, start: int = 0) -> AudioOut:
    pcm = struct.pack(f"<{samples}h", *(((start + i) * 97) % 20000 - 10000 for i in range(samples)))
    return AudioOut(pcm, 8000, 1_700_000_000_000)


def test_registered_with_its_properties() -> None:
    assert DIALECTS["twilio"] is Twilio
    dialect = make("twilio", Options())
    assert dialect.per_participant is False
    assert dialect.error_replies is False
    assert [f.name for f in dialect.accepted_flags()] == [
        "--stream-param",
        "--call-sid",
        "--account-sid",
    ]
    assert dialect.uplink_audio() == WireAudio(8000, "mulaw")
    assert dialect.problems() == ()
    assert not dialect.warnings()


def test_ids_are_in_twilios_shapes_and_new_per_stream() -> None:
    dialect = Twilio(Options())
    first, second = dialect.session(), dialect.session()
    start_1, start_2 = texts(first.opening())[1], texts(second.opening())[1]
    for start in (start_1, start_2):
        for key in ("accountSid", "streamSid", "callSid"):
            assert SID.fullmatch(start["start"][key]), start
        assert start["streamSid"] == start["start"]["streamSid"]
    assert start_1["start"]["streamSid"].startswith("MZ")
    assert start_1["start"]["callSid"].startswith("CA")
    assert start_1["start"]["accountSid"].startswith("AC")
    # A reconnect is a new stream of the same call.
    assert start_1["streamSid"] != start_2["streamSid"]
    assert start_1["start"]["callSid"] == start_2["start"]["callSid"]
    assert start_1["start"]["accountSid"] == start_2["start"]["accountSid"]
    # ... and a new run is a new call.
    assert (
        texts(Twilio(Options()).session().opening())[1]["start"]["callSid"]
        != (start_1["start"]["callSid"])
    )


def test_given_ids_are_used() -> None:
    call, account = "CA" + "a" * 32, "AC" + "b" * 32
    start = texts(session(call_sid=call, account_sid=account).opening())[1]
    assert start["start"]["callSid"] == call
    assert start["start"]["accountSid"] == account


def test_counters_strings_and_media_time() -> None:
    s = session()
    opening = texts(s.opening())
    assert "sequenceNumber" not in opening[0]
    assert opening[1]["sequenceNumber"] == "1"
    sent = texts(s.encode(chunk(480)))  # 60 ms: three messages
    sent += texts(s.encode(DtmfOut("7")))
    sent += texts(s.encode(MarkOut("m", True)))
    sent += texts(s.encode(chunk(160)))
    sent += texts(s.closing())
    assert [m["event"] for m in sent] == ["media"] * 3 + ["dtmf", "mark", "media", "stop"]
    assert [m["sequenceNumber"] for m in sent] == [str(n) for n in range(2, 9)]
    media = [m["media"] for m in sent if m["event"] == "media"]
    assert [m["chunk"] for m in media] == ["1", "2", "3", "4"]
    assert [m["timestamp"] for m in media] == ["0", "20", "40", "60"]
    assert {m["track"] for m in media} == {"inbound"}
    assert all(len(base64.b64decode(m["payload"])) == 160 for m in media)


@FUZZ
@given(st.lists(st.integers(0, 500), max_size=40), st.sampled_from([10, 20, 30, 40, 60]))
def test_recut_keeps_every_sample_in_exact_pieces(sizes: list[int], chunk_ms: int) -> None:
    """Whatever sizes the capture delivers: every message holds exactly
    chunk_ms of audio, in order, nothing lost or added but the lead before
    the first chunk and the tail padded with silence at closing, timestamps
    the media time."""
    s = session(chunk_ms=chunk_ms)
    s.opening()
    piece = 8 * chunk_ms
    pcm = b""
    sent: list[Json] = []
    for n, size in enumerate(sizes):
        item = chunk(size, start=len(pcm) // 2 + n)
        pcm += item.pcm
        sent += texts(s.encode(item))
    sent += texts(s.closing())
    assert sent[-1]["event"] == "stop"
    media = [m["media"] for m in sent[:-1]]
    payloads = [base64.b64decode(m["payload"]) for m in media]
    assert all(len(p) == piece for p in payloads)
    first = next((n for n in sizes if n), 0)  # the first chunk with audio is led
    lead = b"\xff" * (-first % piece)
    tail = (len(lead) + len(pcm) // 2) % piece
    expected = lead + ulaw_from_pcm16(pcm) + (b"\xff" * (piece - tail) if tail else b"")
    assert b"".join(payloads) == expected
    assert [int(m["timestamp"]) for m in media] == [n * chunk_ms for n in range(len(media))]
    assert [m["chunk"] for m in media] == [str(n + 1) for n in range(len(media))]


def test_wrong_rate_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="8000 Hz"):
        session().encode(AudioOut(b"\0\0", 16000, 0))


def test_participant_audio_is_not_sent() -> None:
    s = session()
    s.opening()
    assert s.encode(AudioOut(b"\0\0" * 160, 8000, 0, "6f1c2a5e-3b9d-4e7a-8c21-0d4f5a6b7c8d")) == ()


def test_no_error_reply_and_no_clear_answer() -> None:
    s = session()
    error = MessageError(ErrorCode.INVALID_JSON, "x")
    assert s.encode(ErrorOut(error)) == ()
    assert s.encode(ClearedOut()) == ()


def test_custom_parameters_reach_start() -> None:
    start = texts(session(stream_params=(("a", "1"), ("b", "é"))).opening())[1]
    assert start["start"]["customParameters"] == {"a": "1", "b": "é"}
    assert start["start"]["tracks"] == ["inbound"]
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }


def test_warnings() -> None:
    dialect = Twilio(
        Options(
            call_sid="call-1", account_sid="AC" + "0" * 32, stream_params=(("a", "1"), ("a", "2"))
        )
    )
    found = list(dialect.warnings())
    assert any("'call-1'" in w and "call SID" in w for w in found)
    assert not any("account SID" in w for w in found)
    assert any("'a' is given twice" in w for w in found)


def test_played_audio_is_the_decoded_payload() -> None:
    mulaw = bytes(range(256))
    text = json.dumps({"event": "media", "media": {"payload": base64.b64encode(mulaw).decode()}})
    (play,) = session().receive(text)
    assert play == PlayAudio(pcm16_from_ulaw(mulaw), 8000)
    assert len(play.pcm) == 512


def test_a_mark_name_is_capped_so_pending_marks_stay_small() -> None:
    # Each pending name is held until its audio has played: 1 MB names once
    # held 341 MiB in 300 marks.
    s = session()
    for name, ok in [("é" * MAX_MARK_NAME, True), ("x" * (MAX_MARK_NAME + 1), False)]:
        (result,) = s.receive(json.dumps({"event": "mark", "mark": {"name": name}}))
        if ok:
            assert result == MarkIn(name)
        else:
            assert isinstance(result, Invalid)
            assert result.error.code == ErrorCode.INVALID_FIELD
            assert "`mark.name`" in result.error.message and "1024" in result.error.message


@FUZZ
@given(st.text(max_size=60))
def test_any_mark_name_is_echoed_as_valid_json(name: str) -> None:
    s = session()
    (echo,) = s.encode(MarkOut(name, False))
    assert isinstance(echo, str)
    assert decoded(echo)["mark"] == {"name": name}


# -- receive never raises ------------------------------------------------------------------


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def near_valid() -> st.SearchStrategy[Any]:
    """Twilio-shaped messages one mutation away from valid."""
    events = st.sampled_from(["media", "mark", "clear", "start", "stop", "", "MEDIA"])
    payload = st.one_of(
        st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
        st.text(max_size=20),
        st.integers(),
        st.none(),
    )
    inner = st.fixed_dictionaries(
        {}, optional={"payload": payload, "name": st.one_of(st.text(max_size=30), st.integers())}
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "event": events | json_values,
            "media": inner | json_values,
            "mark": inner | json_values,
            "streamSid": st.text(max_size=5),
        },
    )


def never_raises(s: Session, message: Wire) -> None:
    out = s.receive(message)
    assert all(isinstance(item, PlayAudio | ClearPlayout | MarkIn | Invalid) for item in out)


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_receive_never_raises_on_anything(message: Wire) -> None:
    never_raises(session(max_message_bytes=200), message)


@FUZZ
@given(near_valid())
def test_receive_never_raises_on_near_valid(message: Any) -> None:
    text = json.dumps(message)
    never_raises(session(), text)
    never_raises(session(max_message_bytes=len(text.encode()) - 1), text)


def test_receive_survives_deep_nesting() -> None:
    (out,) = session().receive('{"event":"media","media":' + "[" * 100_000 + "]" * 100_000 + "}")
    assert isinstance(out, Invalid)


def test_receive_refuses_a_lone_surrogate() -> None:
    (out,) = session().receive('{"event":"mark","mark":{"name":"\ud800"}}')
    assert isinstance(out, Invalid) and out.error.code is ErrorCode.INVALID_JSON


# -- G.711 and the packetizer --------------------------------------------------------------


def test_mulaw_round_trip_is_within_g711_step() -> None:
    pcm = struct.pack("<5h", 0, 1000, -1000, 32767, -32768)
    back = struct.unpack("<5h", pcm16_from_ulaw(ulaw_from_pcm16(pcm)))
    assert back[0] == 0
    for original, decoded_sample in zip(struct.unpack("<5h", pcm), back, strict=True):
        assert abs(original - decoded_sample) <= max(64, abs(original) // 16)


def test_mulaw_refuses_odd_pcm() -> None:
    with pytest.raises(ValueError, match="even"):
        ulaw_from_pcm16(b"\0")


def test_packetizer() -> None:
    cutter = Packetizer(4)
    assert cutter.feed(b"abc") == []
    assert cutter.pending == 3
    assert cutter.feed(b"defghij") == [b"abcd", b"efgh"]
    assert cutter.pending == 2
    assert cutter.flush(b"\0") == b"ij\0\0"
    assert cutter.flush(b"\0") is None
    assert cutter.feed(b"") == []
    with pytest.raises(ValueError):
        Packetizer(0)
    odd = Packetizer(4)
    odd.feed(b"a")
    with pytest.raises(ValueError, match="padding"):
        odd.flush(b"\0\0")


@pytest.mark.parametrize(
    "url",
    [
        "wss://bot.example.com/media",
        "wss://bot.example.com:8443/media?tenant=7&lang=fr",
        "ws://127.0.0.1:8765/stream",
        "wss://bot.example.com/média?name=Zo%C3%AB",
    ],
)
def test_the_signature_is_what_twilios_own_validator_accepts(url: str) -> None:
    token = "12345678901234567890123456789012"
    (header,) = Twilio(Options()).auth_headers({"TWILIO_AUTH_TOKEN": f" {token}\n"}, url)
    assert header[0] == "X-Twilio-Signature"
    assert RequestValidator(token).validate(url, {}, header[1])
    assert not RequestValidator(token[::-1]).validate(url, {}, header[1])
    assert Twilio(Options()).auth_headers({}, url) == ()


def test_packetizer_lead_pads_only_the_first_feed_to_whole_packets() -> None:
    cutter = Packetizer(4, lead=b"_")
    assert cutter.feed(b"") == []
    assert cutter.feed(b"abc") == [b"_abc"]
    assert cutter.feed(b"defg") == [b"defg"]
    assert cutter.feed(b"hi") == []  # later feeds are never padded: no re-timing mid-stream
    assert cutter.pending == 2
    whole = Packetizer(4, lead=b"_")
    assert whole.feed(b"abcd") == [b"abcd"]  # a whole first feed needs no lead
    with pytest.raises(ValueError, match="lead"):
        Packetizer(3, lead=b"__")
    with pytest.raises(ValueError, match="whole number"):
        Packetizer(4, lead=b"__").feed(b"abc")


@pytest.mark.parametrize("in_rate", [48000, 44100, 16000])
def test_the_capture_s_chunks_each_leave_as_one_packet_at_once(in_rate: int) -> None:
    """The first chunk is short by the resampler's hold-back; the lead makes up
    for it, so no packet waits for the next chunk (the 20 ms it used to cost)."""
    capture = CaptureStream(RATE)
    cutter = Packetizer(RATE // 50, lead=b"\xff")
    frame = Audio(in_rate, tone(440, 0.02, rate=in_rate))
    for n in range(1, 51):
        chunks = capture.push(frame, arrival_ms=20.0 * n)
        packets = [p for c in chunks for p in cutter.feed(ulaw_from_pcm16(c.pcm))]
        assert len(packets) == len(chunks) == 1, f"frame {n}"
        assert cutter.pending == 0


# -- against a server written from Twilio's docs -----------------------------------------


FIRST_CHUNK = 115
LEAD = RATE // 50 - FIRST_CHUNK
"""The first chunk at 8 kHz, short by the resampler's hold-back, and its lead."""


def tone_chunks(seconds: float, freq: float = 440.0) -> list[AudioOut]:
    """8 kHz audio cut the way the capture cuts it (its first chunk short by
    the resampler's hold-back), then off by a sample, as from odd input rates."""
    pcm = tone(freq, seconds, rate=8000)
    out: list[AudioOut] = []
    at, sizes = 0, [159, 161, 160, 162, 158]
    while at < len(pcm):
        size = (sizes[len(out) % len(sizes)] if out else FIRST_CHUNK) * 2
        out.append(AudioOut(pcm[at : at + size], 8000, 0))
        at += size
    return out


async def test_a_twilio_server_accepts_the_stream_and_its_echo_plays() -> None:
    with trio.fail_after(10), TwilioServer(echo=True) as server:
        dialect = Twilio(Options(stream_params=(("botId", "bot_1"),)))
        async with open_client(server.url, dialect.session()) as client:
            chunks = tone_chunks(1.005)  # a 5 ms tail, padded at closing
            for item in chunks:
                await client.send(item)
            await client.send(DtmfOut("5"))
            await wait_until(lambda: len(client.played()) >= 2 * 7900)
            await client.close()
            await wait_until(lambda: bool(server.events("stop")))
        assert server.violations() == []
        start = server.events("start")[0]["start"]
        assert start["customParameters"] == {"botId": "bot_1"}
        assert start["callSid"] == dialect.call_sid
        sent = b"".join(item.pcm for item in chunks)
        heard = server.inbound_pcm()
        assert len(heard) == -(-(2 * LEAD + len(sent)) // 320) * 320  # whole 20 ms messages
        assert heard[: 2 * LEAD] == bytes(2 * LEAD)
        assert heard[2 * LEAD : 2 * LEAD + 2000] == pcm16_from_ulaw(ulaw_from_pcm16(sent[:2000]))
        assert abs(dominant_frequency(heard, 8000) - 440) < 10
        assert abs(dominant_frequency(client.played(), 8000) - 440) < 10
        assert server.events("dtmf")[0]["dtmf"]["digit"] == "5"


async def test_a_twilio_servers_marks_and_clear() -> None:
    with trio.fail_after(10), TwilioServer() as server:
        async with open_client(server.url, Twilio(Options()).session()) as client:
            await wait_until(lambda: bool(server.events("start")))
            server.send_pcm(tone(300, 0.1, rate=8000))
            server.send_mark("first")
            server.send_pcm(tone(300, 0.1, rate=8000))
            server.send_mark("second")
            server.send_clear()
            await wait_until(lambda: bool(client.of(ClearPlayout)))
            assert [type(i) for i in client.incoming] == [
                PlayAudio,
                MarkIn,
                PlayAudio,
                MarkIn,
                ClearPlayout,
            ]
            assert len(client.played()) == 2 * 1600
            # What the downlink will do: "first" played, "second" dropped by the clear.
            await client.send(MarkOut("first", True))
            await client.send(MarkOut("second", False))
            await client.send(ClearedOut())
            await wait_until(lambda: not server.marks_pending())
        assert server.violations() == []
        assert [m["mark"]["name"] for m in server.events("mark")] == ["first", "second"]


async def test_a_reconnect_is_a_new_stream_of_the_same_call() -> None:
    with trio.fail_after(10), TwilioServer() as server:
        dialect = Twilio(Options())
        for n in range(2):
            async with open_client(server.url, dialect.session()) as client:
                for item in tone_chunks(0.1):
                    await client.send(item)
                await client.close()

                def stopped(n: int = n) -> bool:
                    conns = server.connections
                    return len(conns) > n and bool(server.events("stop", conns[n]))

                await wait_until(stopped)
        assert server.violations() == []
        first, second = (server.events("start", c)[0] for c in server.connections)
        assert first["streamSid"] != second["streamSid"]
        assert first["start"]["callSid"] == second["start"]["callSid"]
