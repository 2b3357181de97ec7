"""The dialects' server role (sidecar/dialects/server.py), sans-I/O.

Round trips against the client role: what a client `Session` encodes, the
`ServerSession` reads back unchanged, and what the server session says, the
client session decodes; the golden vectors (what the sidecar sends, byte for
byte) read clean; the rules each dialect's server holds a client to; fuzzing.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_dialect_twilio import (
    FUZZ,
    Json,
    item_from,
    load,
    wire_from,
)

from sidecar.dialects import DIALECTS, make
from sidecar.dialects.attendee import AttendeeServerSession
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
    Session,
    Wire,
)
from sidecar.dialects.g711 import pcm16_from_ulaw, ulaw_from_pcm16
from sidecar.dialects.server import (
    SERVER_SESSIONS,
    AudioIn,
    ClearAnswer,
    Closed,
    DtmfIn,
    ErrorReplyIn,
    MarkAnswer,
    Opened,
    ServerIncoming,
    ServerOptions,
    ServerSession,
    server_session,
)
from sidecar.dialects.twilio import TwilioServerSession
from sidecar.messages import ErrorCode, MessageError

PROTOCOLS = ("attendee", "twilio", "vonage")


def pcm(samples: int, start: int = 0) -> bytes:
    return struct.pack(
        f"<{samples}h", *(((start + i) * 97) % 20000 - 10000 for i in range(samples))
    )


class Pair:
    """A client session and a server session joined back to back, as on one connection."""

    def __init__(self, protocol: str, **options: Any) -> None:
        self.dialect = make(protocol, Options(**options))
        self.client: Session = self.dialect.session()
        self.server = server_session(protocol)
        self.rate = self.dialect.uplink_audio().rate
        self.heard: list[ServerIncoming] = []
        self.opening = self.client.opening()
        self.up(self.opening)

    def up(self, wires: Sequence[Wire]) -> list[ServerIncoming]:
        got = [item for wire in wires for item in self.server.receive(wire)]
        self.heard.extend(got)
        return got

    def send(self, item: Any) -> list[ServerIncoming]:
        return self.up(self.client.encode(item))

    def down(self, wires: Sequence[Wire]) -> list[Any]:
        return [item for wire in wires for item in self.client.receive(wire)]

    def of(self, kind: type[Any]) -> list[Any]:
        return [item for item in self.heard if isinstance(item, kind)]


def errors(items: Sequence[object]) -> list[MessageError]:
    return [item.error for item in items if isinstance(item, Invalid)]


def test_every_dialect_with_a_server_role_is_registered() -> None:
    assert tuple(SERVER_SESSIONS) == PROTOCOLS
    for name, factory in SERVER_SESSIONS.items():
        assert name in DIALECTS
        assert isinstance(factory(ServerOptions()), ServerSession)
    assert isinstance(server_session("twilio"), TwilioServerSession)


# -- client -> server ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_what_the_client_sends_the_server_reads_back(protocol: str) -> None:
    pair = Pair(protocol)
    assert pair.server.ready
    sizes = [159, 161, 160, 162, 158] * 10  # the capture's sizes: off by a sample
    sent, stamps = b"", []
    for size in sizes:
        chunk = pcm(size * pair.rate // 8000, len(sent) // 2)
        stamps.append(1_700_000_000_000 + len(sent) // 2 * 1000 // pair.rate)
        sent += chunk
        pair.send(AudioOut(chunk, pair.rate, stamps[-1]))
    pair.send(DtmfOut("7"))
    pair.up(pair.client.closing())
    assert errors(pair.heard) == []
    audio = pair.of(AudioIn)
    heard = b"".join(item.pcm for item in audio)
    assert {item.rate for item in audio} == {pair.rate}
    if protocol == "twilio":
        sent = pcm16_from_ulaw(ulaw_from_pcm16(sent))
    # Telephony dialects send whole 20 ms pieces: the first chunk is led with
    # silence up to one (see Packetizer), the tail padded at closing.
    lead = 0 if protocol == "attendee" else 2 * (-sizes[0] % 160) * pair.rate // 8000
    assert not any(heard[:lead])
    assert heard[lead : lead + len(sent)] == sent
    assert not any(heard[lead + len(sent) :])
    if protocol == "attendee":
        assert [item.timestamp_ms for item in audio] == stamps
        assert pair.of(DtmfIn) == []  # Attendee has no DTMF message
    else:
        assert pair.of(DtmfIn) == [DtmfIn("7")]


def test_twilio_opening_timestamps_and_stop() -> None:
    pair = Pair("twilio", stream_params=(("botId", "b1"),))
    (opened,) = pair.of(Opened)
    assert opened.rate == 8000
    assert opened.info["customParameters"] == {"botId": "b1"}
    start = json.loads(pair.opening[1])["start"]
    assert opened.info == start
    for _ in range(3):
        pair.send(AudioOut(pcm(160), 8000, 0))
    assert [a.timestamp_ms for a in pair.of(AudioIn)] == [0, 20, 40]
    pair.up(pair.client.closing())
    (closed,) = pair.of(Closed)
    assert closed.info == {"accountSid": start["accountSid"], "callSid": start["callSid"]}
    assert errors(pair.heard) == []


def test_vonage_opening_gives_the_rate_and_the_headers() -> None:
    pair = Pair("vonage", sample_rate=8000, stream_params=(("caller", "+4412"),))
    assert pair.of(Opened) == [
        Opened({"content-type": "audio/l16;rate=8000", "caller": "+4412"}, 8000)
    ]
    assert pair.server.output_rates == (8000,)
    assert pair.send(AudioOut(pcm(160), 8000, 0)) == [AudioIn(pcm(160), 8000, None)]


def test_attendee_participant_audio_and_error_replies() -> None:
    pair = Pair("attendee", participant_sample_rate=8000)
    (audio,) = pair.send(AudioOut(pcm(80), 8000, 5, stream="uuid-1"))
    assert audio == AudioIn(pcm(80), 8000, 5, "uuid-1")
    error = MessageError(ErrorCode.UNKNOWN_TRIGGER, "unknown trigger 'x'", "x")
    assert pair.send(ErrorOut(error)) == [
        ErrorReplyIn("unknown_trigger", "unknown trigger 'x'", "x")
    ]


# -- server -> client, and the client's answers ---------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_what_the_server_says_the_client_hears_and_answers(protocol: str) -> None:
    pair = Pair(protocol)
    server = pair.server
    rate = server.output_rates[-1]
    speech = pcm(rate // 10)  # 100 ms
    heard = pair.down(server.audio(speech, rate))
    heard += pair.down(server.mark("first"))
    heard += pair.down(server.audio(speech, rate))
    heard += pair.down(server.mark("second"))
    heard += pair.down(server.clear())
    assert server.pending_marks == ("first", "second")
    expect = speech if protocol != "twilio" else pcm16_from_ulaw(ulaw_from_pcm16(speech))
    played = [item for item in heard if isinstance(item, PlayAudio)]
    assert b"".join(p.pcm for p in played) == expect * 2
    assert {p.rate for p in played} == {rate}
    marks = [item for item in heard if isinstance(item, MarkIn)]
    assert len(marks) == 2
    assert isinstance(heard[-1], ClearPlayout)
    # What the downlink does: the first played, the clear dropped the second.
    said = pair.send(MarkOut(marks[0].name, True))
    said += pair.send(MarkOut(marks[1].name, False))
    said += pair.send(ClearedOut())
    played_says = {"attendee": (True, False), "twilio": (None, None), "vonage": (None, None)}
    first, second = played_says[protocol]
    answers = [MarkAnswer("first", first), MarkAnswer("second", second)]
    assert said == answers + ([ClearAnswer()] if protocol == "vonage" else [])
    assert not server.pending_marks


def played(pair: Pair, wire: Wire) -> bytes:
    (item,) = pair.client.receive(wire)
    assert isinstance(item, PlayAudio)
    return item.pcm


def test_twilio_sends_mulaw_media_in_pieces_with_the_stream_id() -> None:
    pair = Pair("twilio")
    server = pair.server
    sid = json.loads(pair.opening[1])["streamSid"]
    wires = server.audio(pcm(8000), 8000)  # 1 s: fifty 20 ms pieces
    media = [json.loads(w) for w in wires]
    assert len(media) == 50
    assert all(m["event"] == "media" and m["streamSid"] == sid for m in media)
    assert {len(played(pair, w)) for w in wires} == {320}
    assert len(server.audio(pcm(240), 8000)) == 1  # 30 ms: one piece, 10 ms held back
    tail, mark = server.mark("end")
    assert len(played(pair, tail)) == 320  # padded with silence to a whole piece
    assert json.loads(mark) == {"event": "mark", "streamSid": sid, "mark": {"name": "end"}}
    assert server.audio(pcm(80), 8000) == []
    assert [json.loads(w) for w in server.clear()] == [{"event": "clear", "streamSid": sid}]
    assert server.flush() == ()  # the clear dropped what was held back


def test_twilio_pieces_follow_chunk_ms_and_vonage_frames_are_20ms() -> None:
    pair = Pair("twilio")
    pair.server = twilio = TwilioServerSession(ServerOptions(chunk_ms=40))
    pair.up(pair.client.opening())
    assert [len(played(pair, w)) for w in twilio.audio(pcm(800), 8000)] == [640, 640]
    vonage = Pair("vonage").server
    assert [len(w) for w in vonage.audio(pcm(500), 16000)] == [640]
    (tail,) = vonage.flush()
    assert tail == pcm(500)[640:] + bytes(640 - 360)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_what_no_server_of_the_dialect_can_say(protocol: str) -> None:
    server = Pair(protocol).server
    with pytest.raises(ValueError, match="Hz"):
        server.audio(pcm(441), 44100)
    with pytest.raises(ValueError, match="even"):
        server.audio(b"\0\0\0", server.output_rates[0])


def test_nothing_is_said_before_the_opening() -> None:
    for protocol in ("twilio", "vonage"):
        server = server_session(protocol)
        assert not server.ready
        with pytest.raises(RuntimeError, match="opening"):
            server.mark("m")
        with pytest.raises(RuntimeError, match="opening"):
            server.clear()
        with pytest.raises(RuntimeError, match="opening"):
            server.audio(b"", 8000)
    assert server_session("vonage").output_rates == ()
    assert server_session("attendee").ready


@given(st.text(min_size=1, max_size=40))
def test_any_mark_name_comes_back_unchanged(name: str) -> None:
    for protocol in PROTOCOLS:
        pair = Pair(protocol)
        (mark,) = [i for i in pair.down(pair.server.mark(name)) if isinstance(i, MarkIn)]
        assert pair.send(MarkOut(mark.name, True)) == [
            MarkAnswer(name, True if protocol == "attendee" else None)
        ]


# -- the golden vectors: what the sidecar sends reads clean ------------------------------------


SESSION_CASES = [
    pytest.param(protocol, case, id=f"{protocol}-{case['name']}")
    for protocol in ("twilio", "vonage")
    for case in load(f"{protocol}.json")
    if case["kind"] == "session"
]


@pytest.mark.parametrize(("protocol", "case"), SESSION_CASES)
def test_the_dialect_vectors_read_clean_on_the_server(protocol: str, case: Json) -> None:
    server: ServerSession | None = None
    heard: list[ServerIncoming] = []
    for step in case["steps"]:
        if step["do"] in ("opening", "reconnect"):
            server = server_session(protocol)
        assert server is not None
        item = item_from(step["item"]) if step["do"] == "send" else None
        # The server had sent what the client answers.
        if isinstance(item, MarkOut):
            server.mark(item.name)
        elif isinstance(item, ClearedOut) and protocol == "vonage":
            server.clear()
        for wire in step["wire"]:
            heard.extend(server.receive(wire_from(wire)))
    assert errors(heard) == []
    openings = sum(step["do"] in ("opening", "reconnect") for step in case["steps"])
    assert len([item for item in heard if isinstance(item, Opened)]) == openings


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=f"{name}-{case['name']}")
        for name in ("messages.json", "messages_encode.json")
        for case in load(name)
        if case["direction"] == "sidecar_to_server"
    ],
)
def test_the_attendee_vectors_read_the_same_on_the_server(case: Json) -> None:
    server = AttendeeServerSession(ServerOptions())
    message = case.get("message") or case["expect"]
    if message.get("trigger") == "realtime_audio.mark" and "data" in message:
        server.mark(message["data"]["name"])
    wire: Wire = bytes.fromhex(case["bytes_hex"]) if "bytes_hex" in case else case["json"]
    found = errors(server.receive(wire))
    expect = case.get("expect", {})
    if "error" in expect:
        assert [(e.code, e.trigger) for e in found] == [(expect["error"], expect["trigger"])]
    else:
        assert found == []


# -- the rules a server holds its client to ---------------------------------------------------


def twilio_pair() -> tuple[Pair, str]:
    pair = Pair("twilio")
    return pair, json.loads(pair.opening[1])["streamSid"]


def twilio_media(sid: str, seq: int, chunk: int, ts: int, **media: Any) -> str:
    body = {"track": "inbound", "chunk": str(chunk), "timestamp": str(ts), "payload": "//8="}
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": sid,
            "media": body | media,
        }
    )


def messages_of(items: Sequence[object]) -> list[str]:
    return [error.message for error in errors(items)]


def test_twilio_rules() -> None:
    pair, sid = twilio_pair()
    server = pair.server
    up = pair.up
    # sequenceNumber 2 comes next; 4 skips one: one violation, then counting resumes from 4.
    assert messages_of(up([twilio_media(sid, 4, 1, 0)])) == [
        "sequenceNumber '4', expected '2' (one more than the last)"
    ]
    assert messages_of(up([twilio_media(sid, 5, 2, 20)])) == []
    assert messages_of(up([twilio_media("MZother", 6, 3, 40)])) == [
        f"streamSid 'MZother' is not this stream's {sid!r}"
    ]
    assert messages_of(up([twilio_media(sid, 7, 5, 30, track="outbound")])) == [
        "media on track 'outbound', not 'inbound'",
        "media.chunk '5', expected '4'",
        "media.timestamp 30 goes back from 40",
    ]
    # The audio of a message that broke a counter is still audio.
    assert len(pair.of(AudioIn)) == 4
    assert messages_of(up(['{"event":"connected","protocol":"Call","version":"1.0.0"}'])) == [
        "connected comes once, as the first message"
    ]
    (clear,) = errors(up([json.dumps({"event": "clear", "streamSid": sid})]))
    assert clear.code == ErrorCode.UNKNOWN_TRIGGER
    assert "a message a server sends, not one Twilio sends" in clear.message
    (binary,) = errors(up([b"\0\0"]))
    assert "JSON text frames" in binary.message

    # (Neither counted: sequenceNumber 8 comes next.)
    def echo(seq: int, name: str) -> str:
        mark = {"event": "mark", "sequenceNumber": str(seq), "streamSid": sid}
        return json.dumps(mark | {"mark": {"name": name}})

    assert messages_of(up([echo(8, "nope")])) == [
        "mark 'nope' answered, but this server sent no such mark (or it was answered already)"
    ]
    digit = {"event": "dtmf", "streamSid": sid, "sequenceNumber": "9"}
    assert messages_of(up([json.dumps(digit | {"dtmf": {"track": "inbound", "digit": "x"}})])) == [
        "dtmf on track 'inbound', not 'inbound_track'",
        "DTMF digit 'x' is not one of 0-9 * # A-D",
    ]
    server.mark("a")
    server.mark("b")
    assert messages_of(up([echo(10, "b")])) == [
        "mark 'b' answered before 'a', which was sent first"
    ]
    assert server.pending_marks == ("a",)
    stop = {"accountSid": "ACx", "callSid": "CAx"}
    said = up(
        [json.dumps({"event": "stop", "sequenceNumber": "11", "streamSid": sid, "stop": stop})]
    )
    assert messages_of(said) == ["stop names another call than start did"]
    assert said[-1] == Closed(stop)
    assert messages_of(up([twilio_media(sid, 12, 6, 100)])) == [
        "'media' after stop, which ends the stream"
    ]


def test_twilio_opening_rules() -> None:
    client = make("twilio", Options()).session()
    connected, start = client.opening()
    server = server_session("twilio")
    assert messages_of(server.receive(start)) == [
        "the first message is 'start'; Twilio sends connected"
    ]
    server = server_session("twilio")
    server.receive(connected)
    assert messages_of(server.receive(client.encode(DtmfOut("1"))[0])) == [
        "sequenceNumber '2', expected '1' (one more than the last)",
        "'dtmf' before start",
    ]
    wrong = json.loads(start)
    wrong["start"]["mediaFormat"]["sampleRate"] = 16000
    wrong["start"]["tracks"] = ["inbound", "outbound"]
    server = server_session("twilio")
    server.receive(connected)
    said = server.receive(json.dumps(wrong))
    assert messages_of(said) == [
        "tracks ['inbound', 'outbound']; a bidirectional stream has ['inbound']",
        "mediaFormat {'encoding': 'audio/x-mulaw', 'sampleRate': 16000, 'channels': 1}; Twilio "
        "streams audio/x-mulaw at 8000 Hz, 1 channel",
    ]
    assert isinstance(said[-1], Opened) and server.ready


def test_vonage_rules() -> None:
    server = server_session("vonage")
    assert messages_of(server.receive(bytes(640))) == [
        "a binary frame before websocket:connected said its rate"
    ]
    server = server_session("vonage")
    bad = '{"event":"websocket:connected","content-type":"audio/l16;rate=24000"}'
    assert messages_of(server.receive(bad)) == [
        "content-type 'audio/l16;rate=24000'; Vonage streams audio/l16;rate=8000 or "
        "audio/l16;rate=16000"
    ]
    pair = Pair("vonage")
    up = pair.up
    said = up([bytes(320)])
    assert messages_of(said) == [
        "a binary frame of 320 bytes; Vonage's are 20 ms, 640 bytes at 16000 Hz"
    ]
    assert said[-1] == AudioIn(bytes(320), 16000)
    (odd,) = errors(up([bytes(641)]))
    assert odd.code == ErrorCode.ODD_LENGTH
    assert messages_of(up(pair.client.opening())) == [
        "websocket:connected comes once, as the first message"
    ]
    assert messages_of(pair.send(ClearedOut())) == ["websocket:cleared, but no clear was sent"]
    assert messages_of(pair.send(MarkOut("nope", True))) == [
        "mark 'nope' answered, but this server sent no such mark (or it was answered already)"
    ]
    assert messages_of(up(['{"event":"websocket:dtmf","digit":"E"}'])) == [
        "DTMF digit 'E' is not one of 0-9 * # A-D"
    ]
    (command,) = errors(up(['{"action":"clear"}']))
    assert command.code == ErrorCode.MISSING_TRIGGER
    # A notify this server did not make: its payload's JSON text is the name.
    pair.server.mark("x")
    foreign = '{"event":"websocket:notify","payload":{"reply": 1}}'
    assert messages_of(up([foreign])) == [
        "mark '{\"reply\": 1}' answered, but this server sent no such mark (or it was answered "
        "already)"
    ]


def test_attendee_rules() -> None:
    pair = Pair("attendee")
    (bad,) = errors(pair.up(['{"trigger":"realtime_audio.bot_output","data":{}}']))
    assert bad.code == ErrorCode.UNKNOWN_TRIGGER
    assert messages_of(pair.send(MarkOut("nope", False))) == [
        "mark 'nope' answered, but this server sent no such mark (or it was answered already)"
    ]
    with pytest.raises(ValueError, match="256"):
        pair.server.mark("m" * 257)


@pytest.mark.parametrize(("dialect", "longest"), [("twilio", 1024), ("vonage", 8190)])
def test_a_server_says_only_mark_names_its_client_takes(dialect: str, longest: int) -> None:
    pair = Pair(dialect)
    (answer,) = pair.down(pair.server.mark("m" * longest))
    assert isinstance(answer, MarkIn)
    with pytest.raises(ValueError, match="at most"):
        pair.server.mark("m" * (longest + 1))


# -- fuzzing ----------------------------------------------------------------------------------


@FUZZ
@given(
    st.sampled_from(PROTOCOLS), st.integers(0, 3), st.text(max_size=200) | st.binary(max_size=200)
)
def test_receive_never_raises(protocol: str, opening: int, message: Wire) -> None:
    pair = Pair(protocol)
    server = server_session(protocol, ServerOptions(max_message_bytes=150))
    for wire in pair.client.opening()[:opening]:
        server.receive(wire)
    for item in server.receive(message):
        assert isinstance(
            item,
            Opened | AudioIn | DtmfIn | MarkAnswer | ClearAnswer | ErrorReplyIn | Closed | Invalid,
        )


@FUZZ
@given(
    st.sampled_from(PROTOCOLS),
    st.fixed_dictionaries(
        {},
        optional={
            "event": st.sampled_from(
                ["media", "mark", "start", "stop", "dtmf", "connected", "websocket:notify"]
            ),
            "trigger": st.sampled_from(["realtime_audio.mixed", "realtime_audio.mark"]),
            "sequenceNumber": st.sampled_from(["2", "x", ""]) | st.integers(),
            "streamSid": st.text(max_size=4),
            "media": st.fixed_dictionaries(
                {}, optional={"chunk": st.text(max_size=3), "timestamp": st.text(max_size=3)}
            ),
            "mark": st.fixed_dictionaries({}, optional={"name": st.text(max_size=5)}),
            "payload": st.none() | st.text(max_size=5) | st.integers(),
            "data": st.fixed_dictionaries({}, optional={"name": st.text(max_size=5)}),
        },
    ),
)
def test_receive_never_raises_on_near_valid(protocol: str, message: Json) -> None:
    pair = Pair(protocol)
    pair.up([json.dumps(message)])
