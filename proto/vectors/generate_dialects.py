"""Author the golden vectors of the Twilio and Vonage dialects (twilio.json, vonage.json),
and the command cases of the agent dialects (openai-realtime.json, deepgram-agent.json),
and every case of elevenlabs-agent.json.

Like generate.py, this imports nothing from `sidecar`: the expected wire text
is written from Twilio's "Media Streams - WebSocket Messages" page and
Vonage's "WebSockets in the Vonage Voice API" page with the standard library
(`json`, `base64`, and G.711 mu-law computed here from the ITU-T algorithm),
so the vectors check the dialects instead of restating them.

    python proto/vectors/generate_dialects.py           # rewrite the JSON files
    python proto/vectors/generate_dialects.py --check   # exit 1 if they are stale

A case is one of:

- `{"kind": "session", "options": {...}, "sids": {...}, "steps": [...]}`: a
  fresh dialect and session; each step is `{"do": "opening"|"closing"|
  "reconnect", "wire": [...]}` or `{"do": "send", "item": {...}, "wire": [...]}`
  and `wire` is exactly what the step puts on the websocket, in order:
  `{"text": "..."}` for a text frame, `{"hex": "..."}` for a binary one.
  `reconnect` opens a new session of the same dialect and sends its opening.
  `sids` (Twilio) lists what the id generator returns per prefix, in order.
  Items: `{"kind": "audio", "rate": R, "pcm_hex": H, "stream": S?}` (s16le,
  `stream` defaults to "mixed"), `{"kind": "dtmf", "digit": D}`,
  `{"kind": "mark", "name": N, "played": B}`, `{"kind": "error", "code": C,
  "message": M}`, `{"kind": "cleared"}`.
- `{"kind": "receive", "options": {...}, "wire": {"text"|"hex": ...},
  "expect": ...}`: one server message into a fresh session. `expect` is a list
  of what it means (`{"kind": "play_audio", "rate": R, "pcm_hex": H}`,
  `{"kind": "clear"}`, `{"kind": "mark", "name": N}`; an empty list: ignored)
  or `{"error": CODE, "trigger": T, "field": F?}`: invalid, with that error
  code; `trigger` is the event (or action) named, `field` text the
  human-readable message must contain.

`options` holds the run's settings: `sample_rate`, `chunk_ms`,
`max_message_bytes`, `stream_params` (a list of pairs), `call_sid`,
`account_sid`; what is absent has the sidecar's default.
"""

from __future__ import annotations

import argparse
import base64
import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

Case = dict[str, Any]
Wire = dict[str, str]

# -- G.711 mu-law (ITU-T G.711 on 14-bit magnitudes, the classic reference code) ----------

_BIAS = 0x84
_CLIP = 8159
_SEGMENT_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def ulaw_byte(sample: int) -> int:
    """One s16 sample -> its mu-law byte."""
    value = sample >> 2
    mask = 0xFF
    if value < 0:
        value, mask = -value, 0x7F
    value = min(value, _CLIP) + (_BIAS >> 2)
    for segment, end in enumerate(_SEGMENT_ENDS):
        if value <= end:
            return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask
    return 0x7F ^ mask


def ulaw_sample(byte: int) -> int:
    """One mu-law byte -> its s16 sample."""
    byte = ~byte & 0xFF
    t = (((byte & 0x0F) << 3) + _BIAS) << ((byte & 0x70) >> 4)
    return _BIAS - t if byte & 0x80 else t - _BIAS


def ulaw(pcm: bytes) -> bytes:
    return bytes(ulaw_byte(s) for (s,) in struct.iter_unpack("<h", pcm))


def pcm_of_ulaw(data: bytes) -> bytes:
    return b"".join(struct.pack("<h", ulaw_sample(b)) for b in data)


# -- helpers --------------------------------------------------------------------------------


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def ramp(n: int, start: int = 0) -> bytes:
    """n samples of a loud sawtooth, so every sample and mu-law byte differs."""
    return pcm(*((((start + i) * 331) % 65536) - 32768 for i in range(n)))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def compact(obj: Any) -> str:
    """JSON as the sidecar writes it: no spaces, key order as given, UTF-8 kept."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def text(obj: Any) -> Wire:
    return {"text": obj if isinstance(obj, str) else compact(obj)}


def binary(data: bytes) -> Wire:
    return {"hex": data.hex()}


def audio(data: bytes, rate: int, stream: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"kind": "audio", "rate": rate, "pcm_hex": data.hex()}
    if stream is not None:
        item["stream"] = stream
    return item


def send(item: dict[str, Any], *wire: Wire) -> dict[str, Any]:
    return {"do": "send", "item": item, "wire": list(wire)}


def step(do: str, *wire: Wire) -> dict[str, Any]:
    return {"do": do, "wire": list(wire)}


def session_case(
    name: str, description: str, options: dict[str, Any], steps: list[Any], **extra: Any
) -> Case:
    return {
        "name": name,
        "description": description,
        "kind": "session",
        "options": options,
        **extra,
        "steps": steps,
    }


def receive_case(
    name: str, description: str, wire: Wire, expect: Any, options: dict[str, Any] | None = None
) -> Case:
    return {
        "name": name,
        "description": description,
        "kind": "receive",
        "options": options or {},
        "wire": wire,
        "expect": expect,
    }


def error(code: str, trigger: str | None, field: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"error": code, "trigger": trigger}
    if field is not None:
        out["field"] = field
    return out


def play(data: bytes, rate: int) -> dict[str, Any]:
    return {"kind": "play_audio", "rate": rate, "pcm_hex": data.hex()}


# -- Twilio -------------------------------------------------------------------------------

ACCOUNT = "AC" + "0123456789abcdef" * 2
CALL = "CA" + "89abcdef01234567" * 2
STREAM = "MZ" + "fedcba9876543210" * 2
STREAM_2 = "MZ" + "00112233445566778899aabbccddeeff"
TWILIO_SIDS = {"MZ": [STREAM]}
TWILIO_OPTIONS: dict[str, Any] = {"call_sid": CALL, "account_sid": ACCOUNT}


def connected() -> Wire:
    return text({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start(
    params: dict[str, str] | None = None,
    stream: str = STREAM,
    call: str = CALL,
    account: str = ACCOUNT,
) -> Wire:
    return text(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": stream,
            "start": {
                "accountSid": account,
                "streamSid": stream,
                "callSid": call,
                "tracks": ["inbound"],
                "customParameters": params or {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


def media(seq: int, chunk: int, timestamp: int, mulaw: bytes, stream: str = STREAM) -> Wire:
    return text(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": stream,
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(timestamp),
                "payload": b64(mulaw),
            },
        }
    )


def stop(seq: int, stream: str = STREAM, call: str = CALL, account: str = ACCOUNT) -> Wire:
    return text(
        {
            "event": "stop",
            "sequenceNumber": str(seq),
            "streamSid": stream,
            "stop": {"accountSid": account, "callSid": call},
        }
    )


def mark_echo(seq: int, name: str) -> Wire:
    return text(
        {"event": "mark", "sequenceNumber": str(seq), "streamSid": STREAM, "mark": {"name": name}}
    )


def twilio_session_cases() -> list[Case]:
    opts = TWILIO_OPTIONS
    sids = {"sids": TWILIO_SIDS}
    whole = ramp(640)
    recut = ramp(755)
    led = b"\xff" * 45 + ulaw(recut)
    return [
        session_case(
            "opening",
            "connected, then start (sequenceNumber 1) with the call's ids; no parameters",
            opts,
            [step("opening", connected(), start())],
            **sids,
        ),
        session_case(
            "opening_custom_parameters",
            "stream parameters become start.customParameters, in order, UTF-8 kept",
            {**opts, "stream_params": [["botId", "bot_1"], ["caller", "Zoë"]]},
            [step("opening", connected(), start({"botId": "bot_1", "caller": "Zoë"}))],
            **sids,
        ),
        session_case(
            "opening_generated_ids",
            "without --call-sid/--account-sid the dialect makes them in Twilio's shapes",
            {},
            [
                step(
                    "opening",
                    connected(),
                    start(call="CA" + "1" * 32, account="AC" + "2" * 32),
                )
            ],
            sids={"CA": ["CA" + "1" * 32], "AC": ["AC" + "2" * 32], "MZ": [STREAM]},
        ),
        session_case(
            "media_20ms",
            "160 samples at 8 kHz: one media message, 160 mu-law bytes, chunk 1, timestamp 0",
            opts,
            [
                step("opening", connected(), start()),
                send(audio(whole[:320], 8000), media(2, 1, 0, ulaw(whole[:320]))),
            ],
            **sids,
        ),
        session_case(
            "media_recut",
            "the first chunk, 115 samples (short by the resampler's hold-back), is led by 45 "
            "samples of mu-law silence (0xff) and leaves at once; later chunks of 159, 162, 161 "
            "and 158 samples are re-cut into exact 160-byte messages, the remainder waiting for "
            "the next chunk; timestamps are media time, the lead included",
            opts,
            [
                step("opening", connected(), start()),
                send(audio(recut[: 115 * 2], 8000), media(2, 1, 0, led[:160])),
                send(audio(recut[115 * 2 : 274 * 2], 8000)),
                send(
                    audio(recut[274 * 2 : 436 * 2], 8000),
                    media(3, 2, 20, led[160:320]),
                    media(4, 3, 40, led[320:480]),
                ),
                send(audio(recut[436 * 2 : 597 * 2], 8000), media(5, 4, 60, led[480:640])),
                send(audio(recut[597 * 2 :], 8000), media(6, 5, 80, led[640:800])),
            ],
            **sids,
        ),
        session_case(
            "media_long_chunk",
            "a 50 ms chunk after a whole one gives two 20 ms messages now and keeps 10 ms for "
            "the next (only a stream's first chunk is led)",
            opts,
            [
                step("opening", connected(), start()),
                send(audio(whole[:320], 8000), media(2, 1, 0, ulaw(whole[:320]))),
                send(
                    audio(whole[320:1120], 8000),
                    media(3, 2, 20, ulaw(whole[320:640])),
                    media(4, 3, 40, ulaw(whole[640:960])),
                ),
            ],
            **sids,
        ),
        session_case(
            "media_chunk_ms_40",
            "--chunk-ms 40: 320 mu-law bytes per message",
            {**opts, "chunk_ms": 40},
            [
                step("opening", connected(), start()),
                send(audio(whole[:640], 8000), media(2, 1, 0, ulaw(whole[:640]))),
            ],
            **sids,
        ),
        session_case(
            "dtmf",
            "a DTMF digit: streamSid before sequenceNumber, track inbound_track",
            opts,
            [
                step("opening", connected(), start()),
                send(
                    {"kind": "dtmf", "digit": "#"},
                    text(
                        {
                            "event": "dtmf",
                            "streamSid": STREAM,
                            "sequenceNumber": "2",
                            "dtmf": {"track": "inbound_track", "digit": "#"},
                        }
                    ),
                ),
            ],
            **sids,
        ),
        session_case(
            "mark_played_and_cleared",
            "a mark is echoed by name, the same way whether played or dropped by a clear",
            opts,
            [
                step("opening", connected(), start()),
                send({"kind": "mark", "name": "reply-1", "played": True}, mark_echo(2, "reply-1")),
                send(
                    {"kind": "mark", "name": "réponse 2", "played": False},
                    mark_echo(3, "réponse 2"),
                ),
            ],
            **sids,
        ),
        session_case(
            "silent_items",
            "Twilio has no error reply, no clear answer and no participant audio: nothing is "
            "sent, and the sequence numbers do not move",
            opts,
            [
                step("opening", connected(), start()),
                send({"kind": "error", "code": "invalid_json", "message": "not JSON"}),
                send({"kind": "cleared"}),
                send(audio(whole[:320], 8000, stream="6f1c2a5e-3b9d-4e7a-8c21-0d4f5a6b7c8d")),
                send({"kind": "mark", "name": "m", "played": True}, mark_echo(2, "m")),
            ],
            **sids,
        ),
        session_case(
            "closing",
            "closing sends stop with the call's ids and the next sequence number",
            opts,
            [
                step("opening", connected(), start()),
                send(audio(whole[:320], 8000), media(2, 1, 0, ulaw(whole[:320]))),
                step("closing", stop(3)),
            ],
            **sids,
        ),
        session_case(
            "closing_flushes_tail",
            "audio held back for re-cutting is sent at closing, padded with mu-law silence (0xff)",
            opts,
            [
                step("opening", connected(), start()),
                send(audio(whole[:320], 8000), media(2, 1, 0, ulaw(whole[:320]))),
                send(audio(whole[320:400], 8000)),
                step("closing", media(3, 2, 20, ulaw(whole[320:400]) + b"\xff" * 120), stop(4)),
            ],
            **sids,
        ),
        session_case(
            "reconnect_new_stream",
            "a reconnect is a new stream of the same call: new streamSid, counters from 1, "
            "same callSid (generated once per run); the 5 ms the old stream held back is gone, "
            "and the new stream's whole first chunk needs no lead",
            {},
            [
                step(
                    "opening",
                    connected(),
                    start(call="CA" + "1" * 32, account="AC" + "2" * 32),
                ),
                send(audio(whole[:320], 8000), media(2, 1, 0, ulaw(whole[:320]))),
                send(audio(whole[320:400], 8000)),
                step(
                    "reconnect",
                    connected(),
                    start(call="CA" + "1" * 32, account="AC" + "2" * 32, stream=STREAM_2),
                ),
                send(audio(whole[:320], 8000), media(2, 1, 0, ulaw(whole[:320]), stream=STREAM_2)),
            ],
            sids={"CA": ["CA" + "1" * 32], "AC": ["AC" + "2" * 32], "MZ": [STREAM, STREAM_2]},
        ),
    ]


def twilio_receive_cases() -> list[Case]:
    ten = ulaw(ramp(10))
    pipecat = ulaw(ramp(320))
    return [
        receive_case(
            "media",
            "the server's media as Twilio's docs show it; the payload plays as 8 kHz PCM",
            text({"event": "media", "streamSid": STREAM, "media": {"payload": b64(ten)}}),
            [play(pcm_of_ulaw(ten), 8000)],
        ),
        receive_case(
            "media_320_bytes",
            "Pipecat sends 40 ms (320-byte) pieces: any size plays",
            text({"event": "media", "streamSid": STREAM, "media": {"payload": b64(pipecat)}}),
            [play(pcm_of_ulaw(pipecat), 8000)],
        ),
        receive_case(
            "media_odd_size",
            "mu-law has one byte per sample, so an odd size is fine",
            text({"event": "media", "media": {"payload": b64(ulaw(ramp(77)))}}),
            [play(pcm_of_ulaw(ulaw(ramp(77))), 8000)],
        ),
        receive_case(
            "media_mulaw_extremes",
            "0x00 and 0x80 are the loudest codes, 0xff and 0x7f silence",
            text({"event": "media", "media": {"payload": b64(bytes([0x00, 0x80, 0xFF, 0x7F]))}}),
            [play(pcm(-32124, 32124, 0, 0), 8000)],
        ),
        receive_case(
            "media_extra_fields",
            "fields not read (streamSid, track, chunk, timestamp, unknown ones) are ignored",
            text(
                {
                    "streamSid": "MZ-not-ours",
                    "media": {
                        "track": "outbound",
                        "chunk": "9",
                        "timestamp": "1",
                        "payload": b64(ten),
                    },
                    "extra": [1, 2],
                    "event": "media",
                }
            ),
            [play(pcm_of_ulaw(ten), 8000)],
        ),
        receive_case(
            "media_empty_payload",
            "an empty payload has nothing to play: ignored",
            text({"event": "media", "streamSid": STREAM, "media": {"payload": ""}}),
            [],
        ),
        receive_case(
            "mark",
            "a mark: echo it once the audio before it has played",
            text({"event": "mark", "streamSid": STREAM, "mark": {"name": "reply-1"}}),
            [{"kind": "mark", "name": "reply-1"}],
        ),
        receive_case(
            "mark_unicode_name",
            "mark names are opaque strings",
            text({"event": "mark", "streamSid": STREAM, "mark": {"name": "fin de réponse ✓"}}),
            [{"kind": "mark", "name": "fin de réponse ✓"}],
        ),
        receive_case(
            "clear",
            "clear: drop the queued audio (its marks are then echoed)",
            text({"event": "clear", "streamSid": STREAM}),
            [{"kind": "clear"}],
        ),
        receive_case(
            "clear_pretty",
            "whitespace and key order do not matter",
            text('{\n  "streamSid": "MZ1",\n  "event": "clear"\n}'),
            [{"kind": "clear"}],
        ),
        receive_case(
            "not_json",
            "text that is not JSON",
            text("hello"),
            error("invalid_json", None, "not valid JSON"),
        ),
        receive_case("empty_text", "an empty text frame", text(""), error("invalid_json", None)),
        receive_case(
            "binary_frame",
            "Twilio's messages are text frames; a binary frame is refused, even of JSON",
            binary(b'{"event":"clear"}'),
            error("invalid_json", None, "binary frame"),
        ),
        receive_case(
            "not_an_object",
            "a JSON array",
            text("[1,2]"),
            error("invalid_json", None, "JSON object"),
        ),
        receive_case(
            "no_event",
            "a message without `event`",
            text({"streamSid": STREAM, "media": {"payload": b64(ten)}}),
            error("missing_trigger", None, "`event`"),
        ),
        receive_case(
            "null_event",
            "`event` null counts as missing",
            text({"event": None}),
            error("missing_trigger", None, "`event`"),
        ),
        receive_case(
            "event_not_a_string",
            "`event` must be a string",
            text({"event": 7}),
            error("invalid_field", None, "`event`"),
        ),
        receive_case(
            "unknown_event",
            "an event Twilio does not accept",
            text({"event": "transfer", "streamSid": STREAM}),
            error("unknown_trigger", "transfer", "transfer"),
        ),
        receive_case(
            "wrong_direction_event",
            "`start` is what Twilio sends, not what it accepts",
            text({"event": "start", "start": {}}),
            error("unknown_trigger", "start", "Twilio sends"),
        ),
        receive_case(
            "media_without_media",
            "media without its `media` object",
            text({"event": "media", "streamSid": STREAM}),
            error("invalid_field", "media", "`media`"),
        ),
        receive_case(
            "media_without_payload",
            "media without a payload",
            text({"event": "media", "streamSid": STREAM, "media": {"track": "outbound"}}),
            error("invalid_field", "media", "media.payload"),
        ),
        receive_case(
            "media_payload_not_a_string",
            "the payload must be a base64 string",
            text({"event": "media", "media": {"payload": 12}}),
            error("invalid_field", "media", "media.payload"),
        ),
        receive_case(
            "media_bad_base64",
            "a payload that is not base64",
            text({"event": "media", "media": {"payload": "not base64!"}}),
            error("invalid_base64", "media", "media.payload"),
        ),
        receive_case(
            "media_unpadded_base64",
            "base64 must be padded, as Twilio's is",
            text({"event": "media", "media": {"payload": "/38"}}),
            error("invalid_base64", "media", "media.payload"),
        ),
        receive_case(
            "mark_without_name",
            "a mark needs mark.name",
            text({"event": "mark", "mark": {}}),
            error("invalid_field", "mark", "mark.name"),
        ),
        receive_case(
            "mark_name_not_a_string",
            "a mark's name is a string",
            text({"event": "mark", "mark": {"name": 3}}),
            error("invalid_field", "mark", "mark.name"),
        ),
        receive_case(
            "mark_name_longest",
            "a mark's name is at most 1024 characters (each is held until its audio played)",
            text({"event": "mark", "mark": {"name": "m" * 1024}}),
            [{"kind": "mark", "name": "m" * 1024}],
        ),
        receive_case(
            "mark_name_too_long",
            "a mark's name of 1025 characters is refused",
            text({"event": "mark", "mark": {"name": "m" * 1025}}),
            error("invalid_field", "mark", "mark.name"),
        ),
        receive_case(
            "too_large",
            "a message over the size limit is refused before it is parsed",
            text({"event": "media", "media": {"payload": b64(bytes(100))}}),
            error("message_too_large", None, "64"),
            options={"max_message_bytes": 64},
        ),
        receive_case(
            "binary_too_large",
            "a binary frame over the size limit",
            binary(bytes(100)),
            error("message_too_large", None, "64"),
            options={"max_message_bytes": 64},
        ),
    ]


# -- Vonage -------------------------------------------------------------------------------


def connected_event(rate: int, headers: dict[str, str] | None = None) -> Wire:
    return text(
        {
            "event": "websocket:connected",
            "content-type": f"audio/l16;rate={rate}",
            **(headers or {}),
        }
    )


def vonage_session_cases() -> list[Case]:
    whole = ramp(1600)
    led = bytes(2 * 46) + whole
    frame16 = 640
    return [
        session_case(
            "opening_16000",
            "the first message: websocket:connected with the audio format",
            {"sample_rate": 16000},
            [step("opening", connected_event(16000))],
        ),
        session_case(
            "opening_8000",
            "at 8 kHz",
            {"sample_rate": 8000},
            [step("opening", connected_event(8000))],
        ),
        session_case(
            "opening_headers",
            "stream parameters are further top-level fields, after Vonage's own, UTF-8 kept",
            {"sample_rate": 16000, "stream_params": [["caller", "+15550100"], ["name", "Zoë"]]},
            [step("opening", connected_event(16000, {"caller": "+15550100", "name": "Zoë"}))],
        ),
        session_case(
            "audio_20ms",
            "320 samples at 16 kHz: one binary frame of 640 bytes, the PCM unchanged",
            {"sample_rate": 16000},
            [
                step("opening", connected_event(16000)),
                send(audio(whole[:frame16], 16000), binary(whole[:frame16])),
            ],
        ),
        session_case(
            "audio_recut",
            "the first chunk, 274 samples (short by the resampler's hold-back), is led by 46 "
            "samples of silence and leaves at once; chunks of 319, 322 and 319 samples after it "
            "become exact 20 ms frames, the remainder waiting for the next chunk",
            {"sample_rate": 16000},
            [
                step("opening", connected_event(16000)),
                send(audio(whole[: 274 * 2], 16000), binary(led[:640])),
                send(audio(whole[274 * 2 : 593 * 2], 16000)),
                send(
                    audio(whole[593 * 2 : 915 * 2], 16000),
                    binary(led[640:1280]),
                    binary(led[1280:1920]),
                ),
                send(audio(whole[915 * 2 : 1234 * 2], 16000), binary(led[1920:2560])),
            ],
        ),
        session_case(
            "audio_8000",
            "at 8 kHz a frame is 160 samples, 320 bytes, whatever --chunk-ms is",
            {"sample_rate": 8000, "chunk_ms": 40},
            [
                step("opening", connected_event(8000)),
                send(audio(whole[:640], 8000), binary(whole[:320]), binary(whole[320:640])),
            ],
        ),
        session_case(
            "closing_flushes_tail",
            "audio held back is sent at closing, padded with silence to 20 ms; nothing else",
            {"sample_rate": 16000},
            [
                step("opening", connected_event(16000)),
                send(audio(whole[:frame16], 16000), binary(whole[:frame16])),
                send(audio(whole[frame16 : frame16 + 200], 16000)),
                step("closing", binary(whole[frame16 : frame16 + 200] + bytes(440))),
            ],
        ),
        session_case(
            "closing_nothing_held",
            "with nothing held back, closing sends nothing (Vonage has no stop message)",
            {"sample_rate": 16000},
            [
                step("opening", connected_event(16000)),
                send(audio(whole[:frame16], 16000), binary(whole[:frame16])),
                step("closing"),
            ],
        ),
        session_case(
            "notify_answer",
            "a notify is answered with its payload exactly as the server wrote it",
            {"sample_rate": 16000},
            [
                step("opening", connected_event(16000)),
                send(
                    {"kind": "mark", "name": '{ "reply" : 1, "tag": "é" }', "played": True},
                    text('{"event":"websocket:notify","payload":{ "reply" : 1, "tag": "é" }}'),
                ),
                send(
                    {"kind": "mark", "name": '{"reply":2}', "played": False},
                    text('{"event":"websocket:notify","payload":{"reply":2}}'),
                ),
            ],
        ),
        session_case(
            "notify_answer_numbers_beyond_any_decoder",
            "a payload is answered as written, numbers past float or 64-bit range included",
            {"sample_rate": 16000},
            [
                step("opening", connected_event(16000)),
                send(
                    {"kind": "mark", "name": "1e99999", "played": True},
                    text('{"event":"websocket:notify","payload":1e99999}'),
                ),
                send(
                    {"kind": "mark", "name": "9" * 5000, "played": True},
                    text('{"event":"websocket:notify","payload":' + "9" * 5000 + "}"),
                ),
            ],
        ),
        session_case(
            "notify_answer_not_json",
            "a mark name that is no JSON text is sent as a JSON string",
            {"sample_rate": 16000},
            [
                step("opening", connected_event(16000)),
                send(
                    {"kind": "mark", "name": "end", "played": True},
                    text({"event": "websocket:notify", "payload": "end"}),
                ),
            ],
        ),
        session_case(
            "cleared",
            "a clear is answered websocket:cleared",
            {"sample_rate": 16000},
            [
                step("opening", connected_event(16000)),
                send({"kind": "cleared"}, text({"event": "websocket:cleared"})),
            ],
        ),
        session_case(
            "dtmf",
            "a DTMF digit as Vonage reports one",
            {"sample_rate": 16000},
            [
                step("opening", connected_event(16000)),
                send(
                    {"kind": "dtmf", "digit": "5"}, text({"event": "websocket:dtmf", "digit": "5"})
                ),
            ],
        ),
        session_case(
            "silent_items",
            "no error reply and no participant audio in Vonage's protocol",
            {"sample_rate": 16000},
            [
                step("opening", connected_event(16000)),
                send({"kind": "error", "code": "invalid_json", "message": "not JSON"}),
                send(audio(whole[:frame16], 16000, stream="6f1c2a5e-3b9d-4e7a-8c21-0d4f5a6b7c8d")),
            ],
        ),
    ]


def vonage_receive_cases() -> list[Case]:
    frame = ramp(320)
    return [
        receive_case(
            "audio_16000",
            "a binary frame is s16le audio at the session's rate",
            binary(frame),
            [play(frame, 16000)],
        ),
        receive_case(
            "audio_8000_session",
            "at 8 kHz",
            binary(frame[:320]),
            [play(frame[:320], 8000)],
            options={"sample_rate": 8000},
        ),
        receive_case(
            "audio_any_even_size",
            "any even size plays (Vonage asks for 20 ms; servers do not always comply)",
            binary(frame[:98]),
            [play(frame[:98], 16000)],
        ),
        receive_case("audio_empty", "an empty binary frame: nothing to play", binary(b""), []),
        receive_case(
            "audio_odd_length",
            "16-bit PCM needs an even byte count",
            binary(frame[:3]),
            error("odd_length", None, "3 bytes"),
        ),
        receive_case(
            "audio_too_large",
            "a binary frame over the size limit",
            binary(frame),
            error("message_too_large", None, "100"),
            options={"max_message_bytes": 100},
        ),
        receive_case(
            "clear", "clear the queued audio", text({"action": "clear"}), [{"kind": "clear"}]
        ),
        receive_case(
            "clear_extra_fields",
            "unknown fields are ignored",
            text({"action": "clear", "uuid": "abc"}),
            [{"kind": "clear"}],
        ),
        receive_case(
            "notify",
            "a notify's mark is its payload's JSON text, byte for byte",
            text('{"action":"notify","payload":{"reply_id":"r-1"}}'),
            [{"kind": "mark", "name": '{"reply_id":"r-1"}'}],
        ),
        receive_case(
            "notify_spacing_kept",
            "spacing inside the payload is kept, so the answer reproduces it",
            text('{"action": "notify", "payload": { "a" : [1, 2] } }'),
            [{"kind": "mark", "name": '{ "a" : [1, 2] }'}],
        ),
        receive_case(
            "notify_string_payload",
            "any JSON value is a payload",
            text({"action": "notify", "payload": "end"}),
            [{"kind": "mark", "name": '"end"'}],
        ),
        receive_case(
            "notify_numbers_beyond_any_decoder",
            "numbers past float or 64-bit range are JSON too: the mark is their text",
            text('{"action":"notify","payload":[1e99999,' + "9" * 40 + "]}"),
            [{"kind": "mark", "name": "[1e99999," + "9" * 40 + "]"}],
        ),
        receive_case(
            "notify_payload_too_long",
            "a payload is at most 8192 bytes of JSON (each is held until its audio played)",
            text('{"action":"notify","payload":"' + "x" * 8191 + '"}'),
            error("invalid_field", "notify", "8193 bytes"),
        ),
        receive_case(
            "notify_without_payload",
            "a notify needs a payload",
            text({"action": "notify"}),
            error("invalid_field", "notify", "payload"),
        ),
        receive_case(
            "no_action",
            "a text message without `action` (one of Vonage's own events, say)",
            text({"event": "websocket:cleared"}),
            error("missing_trigger", None, "`action`"),
        ),
        receive_case(
            "unknown_action",
            "an action Vonage does not know",
            text({"action": "transfer"}),
            error("unknown_trigger", "transfer", "transfer"),
        ),
        receive_case(
            "not_json",
            "text that is not JSON",
            text("clear"),
            error("invalid_json", None, "not valid JSON"),
        ),
        receive_case(
            "not_an_object",
            "a JSON string",
            text('"clear"'),
            error("invalid_json", None, "JSON object"),
        ),
        receive_case(
            "text_too_large",
            "a text message over the size limit",
            text({"action": "notify", "payload": "x" * 200}),
            error("message_too_large", None, "100"),
            options={"max_message_bytes": 100},
        ),
    ]


# -- the agents' commands (openai-realtime.json, deepgram-agent.json) -----------------------------
#
# Those two files were written by hand before the control channel; their other
# cases are kept as they are, and the `command_*` cases below are (re)generated
# after them, from the vendors' documented messages.

PCM24 = {"type": "audio/pcm", "rate": 24000}
SAY = "Say the following to the user, word for word, and nothing else:\n\n{text}"
"""How openai-realtime asks the model to speak a text (the API has no verbatim speech)."""


def oa_update(session: dict[str, Any]) -> Wire:
    return text({"type": "session.update", "session": session})


def oa_session(instructions: str) -> dict[str, Any]:
    return {
        "type": "realtime",
        "instructions": instructions,
        "audio": {"input": {"format": PCM24}, "output": {"format": PCM24}},
    }


def oa_created(response_id: str) -> Wire:
    response = {"id": response_id, "object": "realtime.response", "status": "in_progress"}
    return text({"type": "response.created", "event_id": "event_C1", "response": response})


def oa_done(response_id: str, status: str = "completed", reason: str | None = None) -> Wire:
    response: dict[str, Any] = {"id": response_id, "object": "realtime.response", "status": status}
    if reason is not None:
        response["status_details"] = {"type": status, "reason": reason}
    return text({"type": "response.done", "event_id": "event_C2", "response": response})


def oa_call(response_id: str, call_id: str, status: str = "completed") -> Wire:
    item = {
        "id": "item_" + call_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": "lookup_order",
        "arguments": '{"id":"42"}',
    }
    event = {
        "type": "response.output_item.done",
        "event_id": "event_C3",
        "response_id": response_id,
        "output_index": 0,
        "item": item,
    }
    return text(event)


def oa_output(call_id: str, output: str) -> Wire:
    item = {"type": "function_call_output", "call_id": call_id, "output": output}
    return text({"type": "conversation.item.create", "item": item})


def oa_message(role: str, said: str) -> Wire:
    item = {"type": "message", "role": role, "content": [{"type": "input_text", "text": said}]}
    return text({"type": "conversation.item.create", "item": item})


def oa_create(instructions: str | None = None) -> Wire:
    if instructions is None:
        return text({"type": "response.create"})
    return text({"type": "response.create", "response": {"instructions": instructions}})


def oa_delta(response_id: str, item_id: str, data: bytes) -> Wire:
    return text(
        {
            "type": "response.output_audio.delta",
            "event_id": "event_D1",
            "response_id": response_id,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "delta": b64(data),
        }
    )


def receive(wire: Wire, *expect: Any) -> dict[str, Any]:
    return {"do": "receive", "wire": wire, "expect": list(expect)}


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"kind": "tool_call", "call_id": call_id, "name": name, "arguments": arguments}


def cancelled(call_id: str, reason: str) -> dict[str, Any]:
    return {"kind": "tool_call_cancelled", "call_id": call_id, "reason": reason}


def command(kind: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, **fields}


def openai_command_cases() -> list[Case]:
    call = tool_call("call_1", "lookup_order", '{"id":"42"}')
    brief = {"session": {"instructions": "Be brief."}}
    pcm = ramp(480)
    return [
        session_case(
            "command_tool_result_after_the_response",
            "a completed function_call item is a tool call; its result, once the response "
            "is done, is a function_call_output item and one response.create; a second "
            "result for the same call sends nothing",
            {},
            [
                receive(oa_created("resp_1")),
                receive(oa_call("resp_1", "call_1"), call),
                receive(oa_done("resp_1")),
                step("replies"),
                send(
                    command("tool_result", call_id="call_1", output='{"status":"shipped"}'),
                    oa_output("call_1", '{"status":"shipped"}'),
                    oa_create(),
                ),
                send(command("tool_result", call_id="call_1", output="again")),
            ],
        ),
        session_case(
            "command_tool_result_before_the_response_is_done",
            "a result while its response still runs: the output goes at once, the "
            "response.create once response.done came (a session reply)",
            {},
            [
                receive(oa_created("resp_1")),
                receive(oa_call("resp_1", "call_1"), call),
                send(
                    command("tool_result", call_id="call_1", output="42"),
                    oa_output("call_1", "42"),
                ),
                receive(oa_done("resp_1")),
                step("replies", oa_create()),
            ],
        ),
        session_case(
            "command_tool_result_every_call_answered_first",
            "two calls in one response: one response.create, after the last result",
            {},
            [
                receive(oa_created("resp_1")),
                receive(oa_call("resp_1", "call_1"), call),
                receive(
                    oa_call("resp_1", "call_2"), tool_call("call_2", "lookup_order", '{"id":"42"}')
                ),
                receive(oa_done("resp_1")),
                send(
                    command("tool_result", call_id="call_2", output="b"), oa_output("call_2", "b")
                ),
                send(
                    command("tool_result", call_id="call_1", output="a"),
                    oa_output("call_1", "a"),
                    oa_create(),
                ),
            ],
        ),
        session_case(
            "command_tool_result_for_an_unknown_call",
            "a result for a call this connection never made (an earlier one's) sends nothing",
            {},
            [send(command("tool_result", call_id="call_old", output="x"))],
        ),
        session_case(
            "command_calls_of_an_interrupted_response",
            "a response cancelled by the user's speech (turn_detected): its unanswered "
            "calls are cancelled as interrupted, and a late result sends nothing",
            {},
            [
                receive(oa_created("resp_1")),
                receive(oa_call("resp_1", "call_1"), call),
                receive(oa_call("resp_1", "call_2", status="incomplete")),
                receive(
                    oa_done("resp_1", "cancelled", "turn_detected"),
                    cancelled("call_1", "interrupted"),
                ),
                step("replies"),
                send(command("tool_result", call_id="call_1", output="late")),
            ],
        ),
        session_case(
            "command_calls_of_an_incomplete_response",
            "a response that ended incomplete: its unanswered calls are cancelled",
            {},
            [
                receive(oa_created("resp_1")),
                receive(oa_call("resp_1", "call_1"), call),
                receive(
                    oa_done("resp_1", "incomplete", "max_output_tokens"),
                    cancelled("call_1", "cancelled"),
                ),
            ],
        ),
        session_case(
            "command_say",
            "say: a response.create whose instructions ask the model to say the text "
            "(generated speech: not guaranteed verbatim)",
            {},
            [
                send(
                    command("say", text="We are out of time."),
                    oa_create(SAY.format(text="We are out of time.")),
                )
            ],
        ),
        session_case(
            "command_user_text",
            "user_text: a user message item (input_text), then response.create",
            {},
            [
                send(
                    command("user_text", text="Alice just joined."),
                    oa_message("user", "Alice just joined."),
                    oa_create(),
                )
            ],
        ),
        session_case(
            "command_context",
            "context: a system message item (input_text), no response",
            {},
            [
                send(
                    command("context", text="Bob is the host."),
                    oa_message("system", "Bob is the host."),
                )
            ],
        ),
        session_case(
            "command_instructions",
            "instructions: a session.update of the instructions alone",
            brief,
            [
                send(
                    command("instructions", text="Be terse."),
                    oa_update({"type": "realtime", "instructions": "Be terse."}),
                )
            ],
        ),
        session_case(
            "command_response_create_waits_for_the_active_response",
            "one response at a time: say and user_text while a response runs send no "
            "response.create; each goes as a session reply once the one before is done",
            {},
            [
                receive(oa_created("resp_vad")),
                send(command("say", text="Hello.")),
                send(command("user_text", text="Hi."), oa_message("user", "Hi.")),
                step("replies"),
                receive(oa_done("resp_vad")),
                step("replies", oa_create(SAY.format(text="Hello."))),
                receive(oa_created("resp_say")),
                receive(oa_done("resp_say")),
                step("replies", oa_create()),
            ],
        ),
        session_case(
            "command_kept_for_the_next_session",
            "what instructions and context changed is where the next connection's "
            "session.update starts: the bot's instructions, then each context text",
            brief,
            [
                step("opening", oa_update(oa_session("Be brief."))),
                send(
                    command("context", text="Bob is the host."),
                    oa_message("system", "Bob is the host."),
                ),
                send(
                    command("instructions", text="Be terse."),
                    oa_update({"type": "realtime", "instructions": "Be terse."}),
                ),
                step("reconnect", oa_update(oa_session("Be terse.\n\nBob is the host."))),
            ],
        ),
        session_case(
            "command_clear_by_the_bot",
            "the bot's clear: the truncate of what was heard, then response.cancel of the "
            "active response; its audio still in flight is cut, not played",
            {},
            [
                receive(oa_created("resp_1")),
                receive(
                    oa_delta("resp_1", "item_A1", pcm),
                    {
                        "kind": "play_audio",
                        "rate": 24000,
                        "pcm_hex": pcm.hex(),
                        "segment": "item_A1:0",
                    },
                ),
                send(
                    command("cleared", heard={"segment": "item_A1:0", "ms": 5}, by_bot=True),
                    text(
                        {
                            "type": "conversation.item.truncate",
                            "item_id": "item_A1",
                            "content_index": 0,
                            "audio_end_ms": 5,
                        }
                    ),
                    text({"type": "response.cancel", "response_id": "resp_1"}),
                ),
                receive(
                    oa_delta("resp_1", "item_A2", pcm),
                    {"kind": "cut_audio", "samples": 480, "rate": 24000},
                ),
            ],
        ),
    ]


DG_AGENT: dict[str, Any] = {
    "listen": {"provider": {"type": "deepgram", "model": "nova-3"}},
    "think": {"provider": {"type": "open_ai", "model": "gpt-4o-mini"}, "prompt": "Be brief."},
    "speak": {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
}


def dg_settings(agent: dict[str, Any], rate: int = 16000) -> Wire:
    audio_ = {
        "input": {"encoding": "linear16", "sample_rate": rate},
        "output": {"encoding": "linear16", "sample_rate": rate, "container": "none"},
    }
    return text({"type": "Settings", "audio": audio_, "agent": agent})


def dg_request(*functions: tuple[str, str, bool]) -> Wire:
    entries = [
        {"id": id_, "name": name, "arguments": '{"id":"42"}', "client_side": client}
        for id_, name, client in functions
    ]
    return text({"type": "FunctionCallRequest", "functions": entries})


def dg_event(name: str, **fields: Any) -> dict[str, Any]:
    event = {
        "event": "agent_event", "name": name, "request_id": None, "text": None,
        "total_latency": None, "tts_latency": None, "ttt_latency": None,
    }  # fmt: skip
    return {"kind": "notice", "event": event | fields}


def deepgram_command_cases() -> list[Case]:
    options = {"session": {"agent": DG_AGENT}}
    think = DG_AGENT["think"]
    pcm = ramp(160)
    return [
        session_case(
            "command_tool_result",
            "each client-side FunctionCallRequest entry is a tool call (a server-side one "
            "is not); its result is a FunctionCallResponse with the call's name; a "
            "second result for it sends nothing",
            options,
            [
                receive(
                    dg_request(("fc_1", "lookup_order", True), ("fc_2", "served", False)),
                    tool_call("fc_1", "lookup_order", '{"id":"42"}'),
                ),
                send(
                    command("tool_result", call_id="fc_1", output='{"ok":true}'),
                    text(
                        {
                            "type": "FunctionCallResponse",
                            "id": "fc_1",
                            "name": "lookup_order",
                            "content": '{"ok":true}',
                        }
                    ),
                ),
                send(command("tool_result", call_id="fc_1", output="again")),
                send(command("tool_result", call_id="fc_2", output="not ours")),
            ],
        ),
        session_case(
            "command_function_call_cancelled",
            "FunctionCallCancelled cancels the call; a late result sends nothing",
            options,
            [
                receive(
                    dg_request(("fc_1", "lookup_order", True)),
                    tool_call("fc_1", "lookup_order", '{"id":"42"}'),
                ),
                receive(
                    text(
                        {
                            "type": "FunctionCallCancelled",
                            "functions": [{"id": "fc_1", "name": "lookup_order"}],
                        }
                    ),
                    cancelled("fc_1", "cancelled"),
                ),
                send(command("tool_result", call_id="fc_1", output="late")),
            ],
        ),
        session_case(
            "command_say_user_text_context",
            "say is InjectAgentMessage (spoken verbatim), user_text InjectUserMessage, "
            "context UpdatePrompt (appended to the prompt)",
            options,
            [
                send(
                    command("say", text="We are out of time."),
                    text({"type": "InjectAgentMessage", "message": "We are out of time."}),
                ),
                send(
                    command("user_text", text="Alice just joined."),
                    text({"type": "InjectUserMessage", "content": "Alice just joined."}),
                ),
                send(
                    command("context", text="Bob is the host."),
                    text({"type": "UpdatePrompt", "prompt": "Bob is the host."}),
                ),
            ],
        ),
        session_case(
            "command_instructions",
            "instructions: UpdateThink with the session's think settings, the prompt "
            "replaced (and the context added so far kept after it)",
            options,
            [
                send(
                    command("instructions", text="Be terse."),
                    text({"type": "UpdateThink", "think": think | {"prompt": "Be terse."}}),
                ),
            ],
        ),
        session_case(
            "command_kept_for_the_next_session",
            "the next connection's Settings carry what instructions and context changed",
            options,
            [
                step("opening", dg_settings(DG_AGENT)),
                send(
                    command("instructions", text="Be terse."),
                    text({"type": "UpdateThink", "think": think | {"prompt": "Be terse."}}),
                ),
                send(
                    command("context", text="Bob is the host."),
                    text({"type": "UpdatePrompt", "prompt": "Bob is the host."}),
                ),
                step(
                    "reconnect",
                    dg_settings(
                        DG_AGENT | {"think": think | {"prompt": "Be terse.\n\nBob is the host."}}
                    ),
                ),
            ],
        ),
        session_case(
            "command_injection_refused",
            "InjectionRefused is an agent_warning whose code is the message type",
            options,
            [
                receive(
                    text({"type": "InjectionRefused", "message": "The agent is speaking."}),
                    {
                        "kind": "notice",
                        "event": {
                            "event": "agent_warning",
                            "message": "The agent is speaking.",
                            "code": "InjectionRefused",
                        },
                    },
                )
            ],
        ),
        session_case(
            "command_clear_by_the_bot",
            "the bot's clear sends nothing; the rest of the reply's audio is cut (counted, "
            "not played) until AgentAudioDone",
            options,
            [
                receive(text({"type": "AgentStartedSpeaking"}), dg_event("AgentStartedSpeaking")),
                receive(binary(pcm), {"kind": "play_audio", "rate": 16000, "pcm_hex": pcm.hex()}),
                send(command("cleared", by_bot=True)),
                receive(binary(pcm), {"kind": "cut_audio", "samples": 160, "rate": 16000}),
                receive(text({"type": "AgentAudioDone"}), dg_event("AgentAudioDone")),
                receive(binary(pcm), {"kind": "play_audio", "rate": 16000, "pcm_hex": pcm.hex()}),
            ],
        ),
    ]


# -- ElevenLabs Agents (elevenlabs-agent.json) ------------------------------------------------
# From the ElevenLabs Agents asyncapi contract (elevenlabs/packages agent.asyncapi.yaml)
# and the SDK's conversation.py: the client's messages and what each server message means.

EL_SESSION: dict[str, Any] = {
    "conversation_config_override": {
        "agent": {"prompt": {"prompt": "Be brief."}, "first_message": "Hello!"},
        "tts": {"voice_id": "voice_1"},
    },
    "dynamic_variables": {"user_name": "Ada"},
}


def el_initiation(session: dict[str, Any]) -> Wire:
    return text({"type": "conversation_initiation_client_data", **session})


def el_metadata(input_format: str, output_format: str) -> Wire:
    event = {
        "conversation_id": "conv_1",
        "agent_output_audio_format": output_format,
        "user_input_audio_format": input_format,
    }
    return text(
        {
            "type": "conversation_initiation_metadata",
            "conversation_initiation_metadata_event": event,
        }
    )


def el_metadata_event(input_format: str, output_format: str) -> dict[str, Any]:
    said = f"input {input_format}, output {output_format}"
    return dg_event("conversation_initiation_metadata", request_id="conv_1", text=said)


def el_audio(data: bytes, event_id: int) -> Wire:
    return text(
        {"type": "audio", "audio_event": {"audio_base_64": b64(data), "event_id": event_id}}
    )


def el_play(data: bytes, rate: int, event_id: int) -> dict[str, Any]:
    return play(data, rate) | {"segment": str(event_id)}


def el_transcript(role: str, said: str, item_id: str) -> dict[str, Any]:
    # The agent's text names the segment of its audio: the same event_id.
    segment = item_id if role == "assistant" else None
    event = {"event": "transcript", "role": role, "text": said, "item_id": item_id}
    return {"kind": "notice", "event": event | {"segment": segment}}


def elevenlabs_cases() -> list[Case]:
    options = {"session": EL_SESSION}
    up = ramp(320)
    down = ramp(160, 7)
    return [
        session_case(
            "opening_and_formats",
            "conversation_initiation_client_data first, from --session; no audio until "
            "conversation_initiation_metadata names the formats; then user_audio_chunk "
            "(no `type`), base64 of the audio at the announced input rate",
            options,
            [
                step("opening", el_initiation(EL_SESSION)),
                {"do": "audio_ready", "expect": False},
                receive(
                    el_metadata("pcm_16000", "pcm_22050"),
                    el_metadata_event("pcm_16000", "pcm_22050"),
                ),
                {"do": "audio_ready", "expect": True},
                send(audio(up, 16000), text({"user_audio_chunk": b64(up)})),
                receive(el_audio(down, 3), el_play(down, 22050, 3)),
            ],
        ),
        session_case(
            "ulaw_both_ways",
            "ulaw_8000 announced: the 8 kHz capture goes as mu-law, the agent's mu-law is "
            "played as 16-bit PCM at 8 kHz",
            {"session": {}, "sample_rate": 8000},
            [
                step("opening", el_initiation({})),
                receive(
                    el_metadata("ulaw_8000", "ulaw_8000"),
                    el_metadata_event("ulaw_8000", "ulaw_8000"),
                ),
                send(audio(up, 8000), text({"user_audio_chunk": b64(ulaw(up))})),
                receive(el_audio(ulaw(down), 4), el_play(pcm_of_ulaw(ulaw(down)), 8000, 4)),
            ],
        ),
        session_case(
            "ping_pong",
            "a ping is answered with a pong carrying its event_id, owed after the message",
            options,
            [
                receive(text({"type": "ping", "ping_event": {"event_id": 3, "ping_ms": 120}})),
                step("replies", text({"type": "pong", "event_id": 3})),
                step("replies"),
            ],
        ),
        session_case(
            "interruption_cuts_stale_audio",
            "interruption clears the playout and says the user speaks; audio whose event_id "
            "is at or below the interruption's is cut (counted, not played); a later reply plays",
            options,
            [
                receive(
                    el_metadata("pcm_16000", "pcm_16000"),
                    el_metadata_event("pcm_16000", "pcm_16000"),
                ),
                receive(el_audio(down, 5), el_play(down, 16000, 5)),
                receive(
                    text({"type": "interruption", "interruption_event": {"event_id": 5}}),
                    {"kind": "clear"},
                    {"kind": "user_speaking", "item": None},
                    dg_event("interruption"),
                ),
                receive(el_audio(down, 5), {"kind": "cut_audio", "samples": 160, "rate": 16000}),
                receive(el_audio(down, 6), el_play(down, 16000, 6)),
            ],
        ),
        session_case(
            "transcripts",
            "agent_response, agent_response_correction (the cut reply's text, same item_id) "
            "and user_transcript are transcripts keyed by their event_id",
            options,
            [
                receive(
                    text(
                        {
                            "type": "user_transcript",
                            "user_transcription_event": {"user_transcript": "Hi.", "event_id": 1},
                        }
                    ),
                    el_transcript("user", "Hi.", "1"),
                ),
                receive(
                    text(
                        {
                            "type": "agent_response",
                            "agent_response_event": {
                                "agent_response": "Hello there, Ada.",
                                "event_id": 2,
                            },
                        }
                    ),
                    el_transcript("assistant", "Hello there, Ada.", "2"),
                ),
                receive(
                    text(
                        {
                            "type": "agent_response_correction",
                            "agent_response_correction_event": {
                                "original_agent_response": "Hello there, Ada.",
                                "corrected_agent_response": "Hello there",
                                "event_id": 2,
                            },
                        }
                    ),
                    el_transcript("assistant", "Hello there", "2"),
                ),
                receive(text({"type": "vad_score", "vad_score_event": {"vad_score": 0.5}})),
            ],
        ),
        session_case(
            "command_tool_result",
            "client_tool_call is a tool call (its parameters as given); the result is "
            "client_tool_result; a second result, or one for no call, sends nothing",
            options,
            [
                receive(
                    text(
                        {
                            "type": "client_tool_call",
                            "client_tool_call": {
                                "tool_name": "lookup_order",
                                "tool_call_id": "t_1",
                                "parameters": {"id": "42"},
                                "event_id": 9,
                            },
                        }
                    ),
                    tool_call("t_1", "lookup_order", '{"id":"42"}'),
                ),
                send(
                    command("tool_result", call_id="t_1", output='{"ok":true}'),
                    text(
                        {
                            "type": "client_tool_result",
                            "tool_call_id": "t_1",
                            "result": '{"ok":true}',
                            "is_error": False,
                        }
                    ),
                ),
                send(command("tool_result", call_id="t_1", output="again")),
                send(command("tool_result", call_id="t_2", output="no such call")),
            ],
        ),
        session_case(
            "command_user_text_and_context",
            "user_text is user_message; context is contextual_update, sent again after the "
            "next connection's opening",
            options,
            [
                send(
                    command("user_text", text="Alice just joined."),
                    text({"type": "user_message", "text": "Alice just joined."}),
                ),
                send(
                    command("context", text="Bob is the host."),
                    text({"type": "contextual_update", "text": "Bob is the host."}),
                ),
                step(
                    "reconnect",
                    el_initiation(EL_SESSION),
                    text({"type": "contextual_update", "text": "Bob is the host."}),
                ),
            ],
        ),
        session_case(
            "command_clear_by_the_bot",
            "the bot's clear sends nothing; the rest of the reply in flight is cut, the "
            "next reply plays",
            options,
            [
                receive(
                    el_metadata("pcm_16000", "pcm_16000"),
                    el_metadata_event("pcm_16000", "pcm_16000"),
                ),
                receive(el_audio(down, 7), el_play(down, 16000, 7)),
                send(command("cleared", by_bot=True)),
                receive(el_audio(down, 7), {"kind": "cut_audio", "samples": 160, "rate": 16000}),
                receive(el_audio(down, 8), el_play(down, 16000, 8)),
            ],
        ),
    ]


def kept(name: str) -> list[Case]:
    """The hand-written cases of an agent file: all but the generated ones."""
    path = HERE / name
    if not path.exists():
        return []
    cases: list[Case] = json.loads(path.read_text(encoding="utf-8"))
    return [case for case in cases if not case["name"].startswith("command_")]


# -- files ----------------------------------------------------------------------------------

FILES: dict[str, Callable[[], list[Case]]] = {
    "twilio.json": lambda: twilio_session_cases() + twilio_receive_cases(),
    "vonage.json": lambda: vonage_session_cases() + vonage_receive_cases(),
    "openai-realtime.json": lambda: kept("openai-realtime.json") + openai_command_cases(),
    "deepgram-agent.json": lambda: kept("deepgram-agent.json") + deepgram_command_cases(),
    "elevenlabs-agent.json": elevenlabs_cases,
}


def render(cases: list[Case]) -> str:
    names = [case["name"] for case in cases]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise SystemExit(f"duplicate case names: {sorted(duplicates)}")
    return json.dumps(cases, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the files are stale")
    args = parser.parse_args(argv)
    stale = []
    for name, build in FILES.items():
        path = HERE / name
        content = render(build())
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != content:
                stale.append(name)
        else:
            path.write_text(content, encoding="utf-8")
    if stale:
        print(f"stale: {', '.join(stale)}; run python proto/vectors/generate_dialects.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
