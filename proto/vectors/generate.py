"""Author the wire-contract test vectors in this directory.

The JSON files are the artefact other languages run; this script is how they are
written. It deliberately imports nothing from `sidecar`: every expectation below
is derived from proto/README.md by hand (bytes packed with `struct`, JSON
written with the standard library), so the vectors check the implementation
instead of restating it.

    python proto/vectors/generate.py           # rewrite the JSON files
    python proto/vectors/generate.py --check   # exit 1 if they are stale
"""

from __future__ import annotations

import argparse
import base64
import json
import struct
import sys
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

Case = dict[str, Any]

# -- frames -------------------------------------------------------------------

RATES = {
    0x10: 8000,
    0x11: 12000,
    0x12: 16000,
    0x13: 24000,
    0x14: 32000,
    0x15: 44100,
    0x16: 48000,
    0x17: 96000,
    0x18: 192000,
}
KIND_OF_RATE = {rate: kind for kind, rate in RATES.items()}
CODES = {
    "UNKNOWN_KIND": 0x01,
    "BAD_LENGTH": 0x02,
    "TRUNCATED": 0x03,
    "UNEXPECTED_FRAME": 0x04,
    "PER_PARTICIPANT_DISABLED": 0x05,
    "TOO_MANY_STREAMS": 0x06,
    "BUSY": 0x07,
    "BAD_PAYLOAD": 0x08,
}
STREAM_UUID = uuid.UUID("6f1c2a5e-3b9d-4e7a-8c21-0d4f5a6b7c8d")


def frame(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BH", kind, len(payload)) + payload


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def ramp(n: int) -> bytes:
    """n samples of a sawtooth, so every byte position differs."""
    return pcm(*(((i * 331) % 65536) - 32768 for i in range(n)))


def audio(rate: int, data: bytes) -> dict[str, Any]:
    return {"kind": "audio", "rate": rate, "pcm_hex": data.hex()}


def invalid(code: str, at_eof: bool = False) -> dict[str, Any]:
    return {"kind": "invalid", "code": code, "code_byte": CODES[code], "at_eof": at_eof}


def frame_case(name: str, description: str, stream: bytes, *expect: dict[str, Any]) -> Case:
    return {"name": name, "description": description, "hex": stream.hex(), "expect": list(expect)}


def frame_decode_cases() -> list[Case]:
    cases: list[Case] = []
    for kind, rate in RATES.items():
        data = pcm(0, 1, -1, 32767, -32768, kind)
        cases.append(
            frame_case(
                f"audio_0x{kind:02x}_{rate}",
                f"one s16le mono audio frame at {rate} Hz (kind 0x{kind:02x}), 6 samples",
                frame(kind, data),
                audio(rate, data),
            )
        )
    data = ramp(960)
    cases += [
        frame_case(
            "audio_48k_20ms",
            "the normal case: 20 ms at 48 kHz = 960 samples = 1920 payload bytes (header 16 07 80)",
            frame(0x16, data),
            audio(48000, data),
        ),
        frame_case(
            "audio_32k_zoom_20ms",
            "a 32 kHz bot (Zoom) sends kind 0x14: 640 samples = 1280 bytes per 20 ms",
            frame(0x14, ramp(640)),
            audio(32000, ramp(640)),
        ),
        frame_case(
            "audio_zero_length",
            "an audio frame with an empty payload is valid and carries no samples",
            frame(0x16),
            audio(48000, b""),
        ),
        frame_case("empty_stream", "no bytes at all: no frames and no error", b""),
        frame_case(
            "back_to_back_rate_change",
            "several audio frames in one read; the rate changes mid-stream (48 kHz -> 16 kHz "
            "-> 48 kHz), which is allowed",
            frame(0x16, pcm(1, 2)) + frame(0x12, pcm(3)) + frame(0x16, pcm(4, 5, 6)),
            audio(48000, pcm(1, 2)),
            audio(16000, pcm(3)),
            audio(48000, pcm(4, 5, 6)),
        ),
        frame_case(
            "uuid",
            "a 0x01 frame carries the 16 raw bytes of a UUID (RFC 4122 byte order)",
            frame(0x01, STREAM_UUID.bytes),
            {"kind": "uuid", "uuid": str(STREAM_UUID)},
        ),
        frame_case(
            "participant_stream",
            "a per-participant connection: UUID first, then audio, then terminate",
            frame(0x01, STREAM_UUID.bytes) + frame(0x16, pcm(7, 8)) + frame(0x00),
            {"kind": "uuid", "uuid": str(STREAM_UUID)},
            audio(48000, pcm(7, 8)),
            {"kind": "terminate"},
        ),
        frame_case(
            "dtmf_all_digits",
            "0x03 frames with a 1-byte ASCII payload: 0-9 * # A-D (v1 sidecar ignores them)",
            b"".join(frame(0x03, d.encode()) for d in "0123456789*#ABCD"),
            *({"kind": "dtmf", "digit": d} for d in "0123456789*#ABCD"),
        ),
        frame_case("terminate", "0x00 with an empty payload", frame(0x00), {"kind": "terminate"}),
        frame_case(
            "terminate_with_payload",
            "a payload on 0x00 is ignored",
            frame(0x00, b"bye"),
            {"kind": "terminate"},
        ),
        frame_case(
            "error_frame_with_text",
            "0xff: one code byte, then UTF-8 text for humans",
            frame(0xFF, bytes([0x07]) + "busy: one bot at a time — ok".encode()),
            {"kind": "error_frame", "code": 7, "text": "busy: one bot at a time — ok"},
        ),
        frame_case(
            "error_frame_code_only",
            "0xff with just the code byte",
            frame(0xFF, bytes([0x02])),
            {"kind": "error_frame", "code": 2, "text": ""},
        ),
        frame_case(
            "error_frame_empty",
            "0xff with an empty payload decodes as code 0 (unspecified)",
            frame(0xFF),
            {"kind": "error_frame", "code": 0, "text": ""},
        ),
        frame_case(
            "audio_max_payload",
            "the largest audio payload: 65534 bytes (65535 would be odd)",
            frame(0x16, ramp(32767)),
            audio(48000, ramp(32767)),
        ),
        frame_case(
            "error_frame_max_payload",
            "the largest payload of any frame: 65535 bytes (code + 65534 bytes of text)",
            frame(0xFF, bytes([0x01]) + b"x" * 65534),
            {"kind": "error_frame", "code": 1, "text": "x" * 65534},
        ),
        # -- invalid streams --------------------------------------------------------
        frame_case(
            "odd_audio_length",
            "audio payload of 3 bytes: half a sample",
            frame(0x16, b"\x01\x02\x03"),
            invalid("BAD_LENGTH"),
        ),
        frame_case(
            "odd_audio_after_valid",
            "frames before the bad one are delivered; the error ends the stream",
            frame(0x16, pcm(1)) + frame(0x12, b"\x00"),
            audio(48000, pcm(1)),
            invalid("BAD_LENGTH"),
        ),
        frame_case(
            "odd_audio_header_only",
            "an odd audio length is rejected from the header alone, without waiting for the "
            "65535 payload bytes",
            bytes.fromhex("16ffff"),
            invalid("BAD_LENGTH"),
        ),
        frame_case(
            "nothing_after_error",
            "after an error the decoder is spent: the valid frame that follows is not decoded",
            frame(0x16, b"\x01") + frame(0x16, pcm(1)),
            invalid("BAD_LENGTH"),
        ),
        frame_case(
            "unknown_kind",
            "kind 0x02 is not in the table (payload present)",
            frame(0x02, b"\x00\x00"),
            invalid("UNKNOWN_KIND"),
        ),
        frame_case(
            "unknown_kind_header_only",
            "an unknown kind is rejected as soon as its 3-byte header is seen, even though its "
            "declared payload never arrives",
            bytes.fromhex("200005"),
            invalid("UNKNOWN_KIND"),
        ),
        frame_case(
            "unknown_kind_0x19",
            "0x19, just past the audio range",
            frame(0x19, pcm(1)),
            invalid("UNKNOWN_KIND"),
        ),
        frame_case(
            "unknown_kind_0x04_after_valid",
            "valid audio, then kind 0x04",
            frame(0x16, pcm(9)) + frame(0x04),
            audio(48000, pcm(9)),
            invalid("UNKNOWN_KIND"),
        ),
        frame_case(
            "uuid_15_bytes",
            "a UUID payload must be exactly 16 bytes",
            frame(0x01, STREAM_UUID.bytes[:15]),
            invalid("BAD_LENGTH"),
        ),
        frame_case(
            "uuid_17_bytes",
            "a UUID payload must be exactly 16 bytes",
            frame(0x01, STREAM_UUID.bytes + b"\x00"),
            invalid("BAD_LENGTH"),
        ),
        frame_case(
            "uuid_empty",
            "a UUID payload must be exactly 16 bytes",
            frame(0x01),
            invalid("BAD_LENGTH"),
        ),
        frame_case(
            "dtmf_two_bytes",
            "a DTMF payload must be exactly 1 byte",
            frame(0x03, b"12"),
            invalid("BAD_LENGTH"),
        ),
        frame_case(
            "dtmf_empty",
            "a DTMF payload must be exactly 1 byte",
            frame(0x03),
            invalid("BAD_LENGTH"),
        ),
        frame_case(
            "dtmf_bad_digit",
            "1 byte, but 'x' is not a DTMF digit",
            frame(0x03, b"x"),
            invalid("BAD_PAYLOAD"),
        ),
        frame_case(
            "dtmf_lowercase",
            "DTMF letters are upper case only",
            frame(0x03, b"a"),
            invalid("BAD_PAYLOAD"),
        ),
        frame_case(
            "truncated_header_1_byte",
            "the stream ends after 1 byte of a header: only end of stream reveals it",
            bytes.fromhex("16"),
            invalid("TRUNCATED", at_eof=True),
        ),
        frame_case(
            "truncated_header_2_bytes",
            "a valid frame, then 2 bytes of a header, then end of stream",
            frame(0x16, pcm(5)) + bytes.fromhex("1600"),
            audio(48000, pcm(5)),
            invalid("TRUNCATED", at_eof=True),
        ),
        frame_case(
            "truncated_payload",
            "the header announces 4 payload bytes, 2 arrive, then end of stream",
            bytes.fromhex("1600040000"),
            invalid("TRUNCATED", at_eof=True),
        ),
        frame_case(
            "truncated_uuid_payload",
            "a UUID frame cut short by end of stream",
            frame(0x01, STREAM_UUID.bytes)[:10],
            invalid("TRUNCATED", at_eof=True),
        ),
    ]
    return cases


def frame_encode_cases() -> list[Case]:
    def enc(name: str, description: str, frm: dict[str, Any], data: bytes | None) -> Case:
        case: Case = {"name": name, "description": description, "frame": frm}
        if data is None:
            case["reject"] = True
        else:
            case["hex"] = data.hex()
        return case

    cases = [
        enc(
            f"audio_{rate}",
            f"audio at {rate} Hz is kind 0x{kind:02x}",
            audio(rate, pcm(1, -2)),
            frame(kind, pcm(1, -2)),
        )
        for kind, rate in RATES.items()
    ]
    cases += [
        enc(
            "playout_frame_20ms_silence",
            "what the sidecar writes to the bot: one 20 ms frame at 48 kHz (1920 bytes)",
            audio(48000, bytes(1920)),
            frame(0x16, bytes(1920)),
        ),
        enc("audio_empty", "an empty audio frame", audio(16000, b""), frame(0x12)),
        enc(
            "uuid",
            "a stream UUID as its 16 raw bytes",
            {"kind": "uuid", "uuid": str(STREAM_UUID)},
            frame(0x01, STREAM_UUID.bytes),
        ),
        enc("dtmf", "one DTMF digit", {"kind": "dtmf", "digit": "#"}, frame(0x03, b"#")),
        enc("terminate", "terminate has no payload", {"kind": "terminate"}, frame(0x00)),
        enc(
            "error_code_only",
            "an error frame without text",
            {"kind": "error_frame", "code": 7, "text": ""},
            frame(0xFF, b"\x07"),
        ),
        enc(
            "error_with_text",
            "the sidecar's error frame: code byte then UTF-8 text",
            {"kind": "error_frame", "code": 2, "text": "audio frame 0x16 has 3 payload bytes"},
            frame(0xFF, b"\x02audio frame 0x16 has 3 payload bytes"),
        ),
        enc(
            "error_non_ascii_text",
            "text is UTF-8",
            {"kind": "error_frame", "code": 1, "text": "Zoë"},
            frame(0xFF, b"\x01" + "Zoë".encode()),
        ),
        enc(
            "reject_odd_audio",
            "an encoder must refuse half a sample",
            audio(48000, b"\x01\x02\x03"),
            None,
        ),
        enc(
            "reject_unknown_rate",
            "11025 Hz has no kind",
            audio(11025, pcm(1)),
            None,
        ),
        enc(
            "reject_oversize",
            "65536 payload bytes do not fit the 16-bit length",
            audio(48000, bytes(65536)),
            None,
        ),
        enc(
            "reject_bad_dtmf",
            "'x' is not a DTMF digit",
            {"kind": "dtmf", "digit": "x"},
            None,
        ),
    ]
    return cases


# -- messages -------------------------------------------------------------------

MIXED = "realtime_audio.mixed"
PER_PARTICIPANT = "realtime_audio.per_participant"
BOT_OUTPUT = "realtime_audio.bot_output"
CLEAR = "realtime_audio.clear"
MARK = "realtime_audio.mark"
ERROR = "realtime_audio.error"
S2C = "server_to_sidecar"
C2S = "sidecar_to_server"

# The seed's examples, character for character. Their "..." is a documentation
# placeholder and not base64, so the literal examples are invalid messages.
SEED_MIXED = """{
  "bot_id": "bot_12345abcdef",
  "trigger": "realtime_audio.mixed",
  "data": {
    "chunk": "UklGRiQAAABXQVZFZm10IBAAAAABAAEAgD4AAAB9AAABACAAAGRLVEE...",
    "sample_rate": 16000,
    "timestamp_ms": 1703123456789
  }
}"""
SEED_BOT_OUTPUT = """{
  "trigger": "realtime_audio.bot_output",
  "data": {
    "chunk": "UklGRiQAAABXQVZFZm10IBAAAAABAAEAgD4AAAB9AAABACAAAGRLVEE...",
    "sample_rate": 16000
  }
}"""
# The seed's chunk cut to whole base64 quads and whole samples (36 bytes).
SEED_CHUNK = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAgD4AAAB9AAABACAA"

PCM4 = base64.b64encode(pcm(0, 1000, -1000, 32767)).decode()
AT_LIMIT = '{"trigger":"realtime_audio.bot_output","data":{"chunk":"AAA=","sample_rate":16000}}'


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def ok(name: str, description: str, direction: str, text: str, expect: Any) -> Case:
    return {
        "name": name,
        "description": description,
        "direction": direction,
        "json": text,
        "expect": expect,
    }


def err(
    name: str,
    description: str,
    direction: str,
    text: str,
    code: str,
    field: str | None = None,
    trigger: str | None = None,
    **extra: Any,
) -> Case:
    expect: dict[str, Any] = {"error": code, "trigger": trigger}
    if field is not None:
        expect["field"] = field
    case = {
        "name": name,
        "description": description,
        "direction": direction,
        "json": text,
        "expect": expect,
    }
    case.update(extra)
    return case


def bot_output(chunk: Any = PCM4, rate: Any = 16000) -> dict[str, Any]:
    return {"trigger": BOT_OUTPUT, "data": {"chunk": chunk, "sample_rate": rate}}


def mixed(chunk: str = PCM4, rate: int = 16000, ts: int = 1703123456789) -> dict[str, Any]:
    return {
        "trigger": MIXED,
        "bot_id": "bot_12345abcdef",
        "data": {"chunk": chunk, "sample_rate": rate, "timestamp_ms": ts},
    }


def participant(rate: int = 16000) -> dict[str, Any]:
    return {
        "trigger": PER_PARTICIPANT,
        "bot_id": "bot_12345abcdef",
        "data": {
            "chunk": PCM4,
            "sample_rate": rate,
            "timestamp_ms": 1703123456789,
            "participant_uuid": str(STREAM_UUID),
        },
    }


def message_decode_cases() -> list[Case]:
    c: list[Case] = []
    # -- server -> sidecar, valid ---------------------------------------------------
    c.append(
        err(
            "seed_bot_output_literal",
            "the seed's bot_output example verbatim: its chunk ends in the placeholder '...', "
            "which is not base64 (Attendee's own decoder fails on it too)",
            S2C,
            SEED_BOT_OUTPUT,
            "invalid_base64",
            "data.chunk",
            BOT_OUTPUT,
        )
    )
    seed_fixed = SEED_BOT_OUTPUT.replace(
        "UklGRiQAAABXQVZFZm10IBAAAAABAAEAgD4AAAB9AAABACAAAGRLVEE...", SEED_CHUNK
    )
    c.append(
        ok(
            "seed_bot_output_decodable",
            "the seed's example (pretty-printed) with its chunk cut to valid base64; the bytes "
            "(a WAV header in the docs) are taken as raw PCM, never parsed",
            S2C,
            seed_fixed,
            bot_output(SEED_CHUNK),
        )
    )
    for rate in (8000, 16000, 24000):
        c.append(
            ok(
                f"bot_output_{rate}",
                f"bot output at {rate} Hz",
                S2C,
                compact(bot_output(rate=rate)),
                bot_output(rate=rate),
            )
        )
    c += [
        ok(
            "bot_output_empty_chunk",
            "an empty chunk is valid (zero samples)",
            S2C,
            compact(bot_output("")),
            bot_output(""),
        ),
        ok(
            "bot_output_key_order",
            "key order is not significant: data before trigger, sample_rate before chunk",
            S2C,
            '{"data":{"sample_rate":24000,"chunk":"' + PCM4 + '"},"trigger":"' + BOT_OUTPUT + '"}',
            bot_output(rate=24000),
        ),
        ok(
            "bot_output_unknown_fields",
            "unknown fields at any level are ignored (bot_id, seq, nested objects)",
            S2C,
            compact(
                {
                    "trigger": BOT_OUTPUT,
                    "bot_id": "bot_x",
                    "seq": 17,
                    "data": {"chunk": PCM4, "sample_rate": 16000, "extra": {"a": [1, None]}},
                }
            ),
            bot_output(),
        ),
        ok(
            "clear_without_data",
            "extension: clear needs no data",
            S2C,
            '{"trigger":"realtime_audio.clear"}',
            {"trigger": CLEAR, "data": {}},
        ),
        ok(
            "clear_empty_data",
            "extension: clear with an empty data object",
            S2C,
            '{"trigger":"realtime_audio.clear","data":{}}',
            {"trigger": CLEAR, "data": {}},
        ),
        ok(
            "clear_null_data",
            "extension: data null means the same as no data",
            S2C,
            '{"trigger":"realtime_audio.clear","data":null}',
            {"trigger": CLEAR, "data": {}},
        ),
        ok(
            "clear_unknown_fields",
            "extension: unknown fields in clear's data are ignored",
            S2C,
            '{"trigger":"realtime_audio.clear","data":{"reason":"barge-in"},"streamSid":"x"}',
            {"trigger": CLEAR, "data": {}},
        ),
        ok(
            "mark",
            "extension: a mark",
            S2C,
            '{"trigger":"realtime_audio.mark","data":{"name":"utterance-1"}}',
            {"trigger": MARK, "data": {"name": "utterance-1"}},
        ),
        ok(
            "mark_256_chars",
            "extension: the longest mark name, 256 characters",
            S2C,
            compact({"trigger": MARK, "data": {"name": "m" * 256}}),
            {"trigger": MARK, "data": {"name": "m" * 256}},
        ),
        ok(
            "mark_unicode",
            "extension: names are any 1..256 Unicode characters (counted as code points)",
            S2C,
            compact({"trigger": MARK, "data": {"name": "réponse 🎤 #2"}}),
            {"trigger": MARK, "data": {"name": "réponse 🎤 #2"}},
        ),
        ok(
            "mark_escaped_json",
            "JSON escapes are decoded as usual",
            S2C,
            '{"trigger":"realtime_audio.mark","data":{"name":"a\\"b\\u00e9"}}',
            {"trigger": MARK, "data": {"name": 'a"bé'}},
        ),
    ]
    # -- server -> sidecar, every error code ----------------------------------------
    c += [
        err(
            "too_large",
            "over the size limit (run with max_bytes 64): message_too_large, before parsing",
            S2C,
            compact(bot_output(base64.b64encode(bytes(64)).decode())),
            "message_too_large",
            max_bytes=64,
        ),
        err(
            "too_large_even_if_invalid",
            "the size is checked before the JSON is parsed",
            S2C,
            "x" * 65,
            "message_too_large",
            max_bytes=64,
        ),
        dict(
            ok(
                "at_size_limit",
                f"a message of exactly max_bytes ({len(AT_LIMIT)}) is accepted",
                S2C,
                AT_LIMIT,
                bot_output("AAA="),
            ),
            max_bytes=len(AT_LIMIT),
        ),
        err("empty", "an empty message", S2C, "", "invalid_json"),
        err("not_json", "not JSON at all", S2C, "hello", "invalid_json"),
        err(
            "truncated_json",
            "JSON cut short",
            S2C,
            '{"trigger":"realtime_audio.bot_output"',
            "invalid_json",
        ),
        err(
            "trailing_garbage",
            "a complete object followed by more text",
            S2C,
            '{"trigger":"realtime_audio.clear"} {}',
            "invalid_json",
        ),
        err("top_level_array", "the message must be an object", S2C, "[]", "invalid_json"),
        err("top_level_null", "the message must be an object", S2C, "null", "invalid_json"),
        err("top_level_string", "the message must be an object", S2C, '"clear"', "invalid_json"),
        {
            "name": "invalid_utf8",
            "description": "bytes that are not UTF-8 (given as bytes_hex instead of json)",
            "direction": S2C,
            "bytes_hex": b'{"trigger":"\xff"}'.hex(),
            "expect": {"error": "invalid_json", "trigger": None},
        },
        err("missing_trigger", "an object without trigger", S2C, "{}", "missing_trigger"),
        err(
            "missing_trigger_with_data",
            "data but no trigger",
            S2C,
            compact({"data": {"chunk": PCM4, "sample_rate": 16000}}),
            "missing_trigger",
        ),
        err(
            "null_trigger",
            "trigger null counts as missing",
            S2C,
            '{"trigger":null,"data":{}}',
            "missing_trigger",
        ),
        err(
            "trigger_not_string",
            "trigger must be a string",
            S2C,
            '{"trigger":5}',
            "invalid_field",
            "trigger",
        ),
        err(
            "unknown_trigger",
            "a trigger the sidecar does not know",
            S2C,
            '{"trigger":"realtime_audio.pause","data":{}}',
            "unknown_trigger",
            trigger="realtime_audio.pause",
        ),
        err(
            "unknown_trigger_mixed_echoed",
            "a server echoing our own realtime_audio.mixed back",
            S2C,
            compact(mixed()),
            "unknown_trigger",
            trigger=MIXED,
        ),
        err(
            "unknown_trigger_case",
            "triggers are case-sensitive",
            S2C,
            compact({"trigger": "Realtime_Audio.Bot_Output", "data": {}}),
            "unknown_trigger",
            trigger="Realtime_Audio.Bot_Output",
        ),
        err(
            "unknown_trigger_empty",
            "an empty trigger",
            S2C,
            '{"trigger":""}',
            "unknown_trigger",
            trigger="",
        ),
        err(
            "bot_output_missing_data",
            "bot_output needs data",
            S2C,
            compact({"trigger": BOT_OUTPUT}),
            "invalid_field",
            "data",
            BOT_OUTPUT,
        ),
        err(
            "bot_output_data_array",
            "data must be an object",
            S2C,
            compact({"trigger": BOT_OUTPUT, "data": []}),
            "invalid_field",
            "data",
            BOT_OUTPUT,
        ),
        err(
            "bot_output_missing_chunk",
            "data.chunk is required",
            S2C,
            compact({"trigger": BOT_OUTPUT, "data": {"sample_rate": 16000}}),
            "invalid_field",
            "chunk",
            BOT_OUTPUT,
        ),
        err(
            "bot_output_missing_sample_rate",
            "data.sample_rate is required",
            S2C,
            compact({"trigger": BOT_OUTPUT, "data": {"chunk": PCM4}}),
            "invalid_field",
            "sample_rate",
            BOT_OUTPUT,
        ),
        err(
            "bot_output_chunk_null",
            "chunk must be a base64 string",
            S2C,
            compact(bot_output(None)),
            "invalid_field",
            "data.chunk",
            BOT_OUTPUT,
        ),
        err(
            "bot_output_sample_rate_string",
            'sample_rate must be a JSON integer, not "16000"',
            S2C,
            compact(bot_output(rate="16000")),
            "invalid_field",
            "data.sample_rate",
            BOT_OUTPUT,
        ),
        err(
            "bot_output_sample_rate_float",
            "sample_rate must be a JSON integer, not 16000.0",
            S2C,
            compact(bot_output(rate=16000.0)),
            "invalid_field",
            "data.sample_rate",
            BOT_OUTPUT,
        ),
        err(
            "clear_data_array",
            "extension: clear's data, when present and not null, must be an object",
            S2C,
            '{"trigger":"realtime_audio.clear","data":[]}',
            "invalid_field",
            "data",
            CLEAR,
        ),
        err(
            "mark_missing_name",
            "extension: a mark needs data.name",
            S2C,
            '{"trigger":"realtime_audio.mark","data":{}}',
            "invalid_field",
            "name",
            MARK,
        ),
        err(
            "mark_missing_data",
            "extension: a mark needs data",
            S2C,
            '{"trigger":"realtime_audio.mark"}',
            "invalid_field",
            "data",
            MARK,
        ),
        err(
            "mark_empty_name",
            "extension: a mark name has at least 1 character",
            S2C,
            '{"trigger":"realtime_audio.mark","data":{"name":""}}',
            "invalid_field",
            "data.name",
            MARK,
        ),
        err(
            "mark_name_too_long",
            "extension: a mark name has at most 256 characters",
            S2C,
            compact({"trigger": MARK, "data": {"name": "m" * 257}}),
            "invalid_field",
            "data.name",
            MARK,
        ),
        err(
            "mark_name_number",
            "extension: a mark name is a string",
            S2C,
            '{"trigger":"realtime_audio.mark","data":{"name":7}}',
            "invalid_field",
            "data.name",
            MARK,
        ),
        err(
            "base64_unpadded",
            "standard base64 with padding is required: 'AA' lacks '=='",
            S2C,
            compact(bot_output("AA")),
            "invalid_base64",
            "data.chunk",
            BOT_OUTPUT,
        ),
        err(
            "base64_urlsafe",
            "the URL-safe alphabet ('-', '_') is not accepted",
            S2C,
            compact(bot_output("AA-_")),
            "invalid_base64",
            "data.chunk",
            BOT_OUTPUT,
        ),
        err(
            "base64_whitespace",
            "no whitespace or line breaks inside the base64",
            S2C,
            compact(bot_output("AAAA\nAAAA")),
            "invalid_base64",
            "data.chunk",
            BOT_OUTPUT,
        ),
        err(
            "odd_length_1",
            "'AA==' decodes to 1 byte: half a sample",
            S2C,
            compact(bot_output("AA==")),
            "odd_length",
            "data.chunk",
            BOT_OUTPUT,
        ),
        err(
            "odd_length_3",
            "'AAAA' decodes to 3 bytes",
            S2C,
            compact(bot_output("AAAA")),
            "odd_length",
            "data.chunk",
            BOT_OUTPUT,
        ),
    ]
    for rate in (44100, 48000, 11025, 0, -16000):
        c.append(
            err(
                f"unsupported_sample_rate_{rate}",
                f"bot_output accepts 8000, 16000 or 24000, not {rate}",
                S2C,
                compact(bot_output(rate=rate)),
                "unsupported_sample_rate",
                "data.sample_rate",
                BOT_OUTPUT,
            )
        )
    # -- sidecar -> server ---------------------------------------------------------------
    c.append(
        err(
            "seed_mixed_literal",
            "the seed's mixed example verbatim: its chunk placeholder '...' is not base64",
            C2S,
            SEED_MIXED,
            "invalid_base64",
            "data.chunk",
            MIXED,
        )
    )
    c.append(
        ok(
            "seed_mixed_decodable",
            "the seed's mixed example with its chunk cut to valid base64",
            C2S,
            SEED_MIXED.replace(
                "UklGRiQAAABXQVZFZm10IBAAAAABAAEAgD4AAAB9AAABACAAAGRLVEE...", SEED_CHUNK
            ),
            mixed(SEED_CHUNK),
        )
    )
    for rate in (8000, 16000, 24000):
        c.append(
            ok(
                f"mixed_{rate}",
                f"mixed audio at {rate} Hz",
                C2S,
                compact(mixed(rate=rate)),
                mixed(rate=rate),
            )
        )
    for rate in (8000, 16000):
        c.append(
            ok(
                f"per_participant_{rate}",
                f"one participant's audio at {rate} Hz",
                C2S,
                compact(participant(rate)),
                participant(rate),
            )
        )
    c += [
        err(
            "per_participant_24000",
            "per-participant audio is 8000 or 16000 only",
            C2S,
            compact(participant(24000)),
            "unsupported_sample_rate",
            "data.sample_rate",
            PER_PARTICIPANT,
        ),
        err(
            "mixed_missing_bot_id",
            "bot_id is required on audio the sidecar sends",
            C2S,
            compact({k: v for k, v in mixed().items() if k != "bot_id"}),
            "invalid_field",
            "bot_id",
            MIXED,
        ),
        err(
            "mixed_odd_length",
            "the sidecar never sends half a sample",
            C2S,
            compact(mixed("AAAA")),
            "odd_length",
            "data.chunk",
            MIXED,
        ),
        ok(
            "mark_echo_played",
            "extension: a mark echoed after its audio was written to the bot",
            C2S,
            compact(
                {"trigger": MARK, "bot_id": "bot_1", "data": {"name": "m1", "status": "played"}}
            ),
            {"trigger": MARK, "bot_id": "bot_1", "data": {"name": "m1", "status": "played"}},
        ),
        ok(
            "mark_echo_cleared",
            "extension: a mark echoed because a clear dropped its audio",
            C2S,
            compact(
                {"trigger": MARK, "bot_id": "bot_1", "data": {"name": "m1", "status": "cleared"}}
            ),
            {"trigger": MARK, "bot_id": "bot_1", "data": {"name": "m1", "status": "cleared"}},
        ),
        err(
            "mark_echo_bad_status",
            "status is played or cleared",
            C2S,
            compact(
                {"trigger": MARK, "bot_id": "bot_1", "data": {"name": "m1", "status": "queued"}}
            ),
            "invalid_field",
            "data.status",
            MARK,
        ),
        ok(
            "error_with_trigger",
            "extension: the reply to an invalid message whose trigger was readable",
            C2S,
            compact(
                {
                    "trigger": ERROR,
                    "bot_id": "bot_1",
                    "data": {
                        "code": "odd_length",
                        "message": "`data.chunk` decodes to 3 bytes",
                        "trigger": BOT_OUTPUT,
                    },
                }
            ),
            {
                "trigger": ERROR,
                "bot_id": "bot_1",
                "data": {
                    "code": "odd_length",
                    "message": "`data.chunk` decodes to 3 bytes",
                    "trigger": BOT_OUTPUT,
                },
            },
        ),
        ok(
            "error_without_trigger",
            "extension: data.trigger is omitted when the message had none",
            C2S,
            '{"trigger":"realtime_audio.error","bot_id":"bot_1",'
            '"data":{"code":"invalid_json","message":"message is not valid JSON"}}',
            {
                "trigger": ERROR,
                "bot_id": "bot_1",
                "data": {"code": "invalid_json", "message": "message is not valid JSON"},
            },
        ),
        err(
            "bot_output_is_not_sidecar_message",
            "the sidecar never sends bot_output",
            C2S,
            compact(bot_output()),
            "unknown_trigger",
            trigger=BOT_OUTPUT,
        ),
    ]
    return c


def message_encode_cases() -> list[Case]:
    def enc(name: str, description: str, direction: str, message: dict[str, Any]) -> Case:
        return {
            "name": name,
            "description": description,
            "direction": direction,
            "message": message,
            "json": compact(message),
        }

    return [
        enc(
            "mixed_16000",
            "the sidecar's audio message: compact JSON, trigger first, then bot_id, then data",
            C2S,
            mixed(),
        ),
        enc(
            "mixed_24000_empty",
            "an empty chunk (never sent in practice, but well-formed)",
            C2S,
            mixed("", 24000, 0),
        ),
        enc("per_participant_8000", "one participant's audio", C2S, participant(8000)),
        enc(
            "mark_echo_played",
            "a played mark",
            C2S,
            {"trigger": MARK, "bot_id": "bot_1", "data": {"name": "réponse-1", "status": "played"}},
        ),
        enc(
            "mark_echo_cleared",
            "a cleared mark",
            C2S,
            {"trigger": MARK, "bot_id": "bot_1", "data": {"name": "m", "status": "cleared"}},
        ),
        enc(
            "error_with_trigger",
            "an error reply naming the offending trigger",
            C2S,
            {
                "trigger": ERROR,
                "bot_id": "bot_1",
                "data": {
                    "code": "unsupported_sample_rate",
                    "message": "`data.sample_rate` is 44100; supported rates are 8000, 16000 "
                    "and 24000",
                    "trigger": BOT_OUTPUT,
                },
            },
        ),
        enc(
            "error_without_trigger",
            "data.trigger is omitted, not null, when unknown",
            C2S,
            {
                "trigger": ERROR,
                "bot_id": "bot_1",
                "data": {"code": "missing_trigger", "message": "message has no `trigger` field"},
            },
        ),
        enc("bot_output", "what a server sends (for server authors)", S2C, bot_output()),
        enc("clear", "extension: clear as our tools send it", S2C, {"trigger": CLEAR, "data": {}}),
        enc(
            "mark",
            "extension: a mark as our tools send it",
            S2C,
            {"trigger": MARK, "data": {"name": "utterance-1"}},
        ),
    ]


# -- output -------------------------------------------------------------------------

FILES = {
    "frames.json": frame_decode_cases,
    "frames_encode.json": frame_encode_cases,
    "messages.json": message_decode_cases,
    "messages_encode.json": message_encode_cases,
}


def render(name: str) -> str:
    return json.dumps(FILES[name](), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--directory", type=Path, default=HERE)
    args = parser.parse_args(argv)
    stale = []
    for name in FILES:
        path: Path = args.directory / name
        text = render(name)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print("stale vector files: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
