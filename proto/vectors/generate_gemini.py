"""Author the golden vectors of the gemini-live dialect (gemini-live.json).

Like generate.py, this imports nothing from `sidecar`: the expected wire text
is written from Google's Live API reference (ai.google.dev/api/live: the
client messages `setup`, `realtimeInput`, `clientContent`, `toolResponse`
and google-genai 3.6.1's `contextUpdate`; the server messages
`setupComplete`, `serverContent`, `toolCall`, `toolCallCancellation`,
`goAway`, `sessionResumptionUpdate`) with the standard library, so the
vectors check the dialect instead of restating it.

    python proto/vectors/generate_gemini.py           # rewrite gemini-live.json
    python proto/vectors/generate_gemini.py --check   # exit 1 if it is stale

The case format is generate_dialects.py's `session` case, with the agent
steps tests/agent_servers.py's `run_vector` reads: `receive` (a server
message and what it means), `replies` (what the session owes the server
now), `audio_ready`, `reconnect_at_once`, and `send` of command items.
Server messages are sent as the service sends them, JSON in binary frames
(`hex`), except where a case says text.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NAME = "gemini-live.json"
Case = dict[str, Any]
Wire = dict[str, str]

SETUP = {
    "model": "gemini-3.8-live",
    "systemInstruction": {"parts": [{"text": "Be brief."}]},
    "generationConfig": {
        "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}}}
    },
}
OPTIONS = {"session": SETUP}


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def text(obj: Any) -> Wire:
    return {"text": compact(obj)}


def server(obj: Any) -> Wire:
    """A server message as the service sends it: JSON in a binary frame."""
    return {"hex": compact(obj).encode().hex()}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pcm(n: int, freq: float = 300.0, rate: int = 24000) -> bytes:
    return b"".join(
        round(8000 * math.sin(2 * math.pi * freq * i / rate)).to_bytes(2, "little", signed=True)
        for i in range(n)
    )


def content(text_: str) -> dict[str, Any]:
    return {"parts": [{"text": text_}]}


def setup(
    instruction: str = "Be brief.", resumption: dict[str, Any] | None = None, **extra: Any
) -> Wire:
    """Our setup for SETUP: model first, then the user's fields in one order, then ours."""
    body: dict[str, Any] = {
        "model": "models/gemini-3.8-live",
        "generationConfig": {
            "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}}},
            "responseModalities": ["AUDIO"],
        },
        "systemInstruction": content(instruction),
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
        "sessionResumption": resumption if resumption is not None else {},
    }
    return text({"setup": body | extra})


SETUP_COMPLETE = server({"setupComplete": {"sessionId": "s1"}})
SPEAKING = {"kind": "user_speaking", "item": None}
"""The meeting began a turn (Gemini names no item for it)."""


def step(do: str, *wire: Wire) -> dict[str, Any]:
    return {"do": do, "wire": list(wire)}


def send(item: dict[str, Any], *wire: Wire) -> dict[str, Any]:
    return {"do": "send", "item": item, "wire": list(wire)}


def receive(wire: Wire, *expect: Any) -> dict[str, Any]:
    return {"do": "receive", "wire": wire, "expect": list(expect)}


def event(name: str, text_: str | None = None) -> dict[str, Any]:
    body = {
        "event": "agent_event", "name": name, "request_id": None, "text": text_,
        "total_latency": None, "tts_latency": None, "ttt_latency": None,
    }  # fmt: skip
    return {"kind": "notice", "event": body}


def transcript(role: str, said: str, segment: str | None = None) -> dict[str, Any]:
    body = {"event": "transcript", "role": role, "text": said, "item_id": None, "segment": segment}
    return {"kind": "notice", "event": body}


def play(data: bytes, segment: str, rate: int = 24000) -> dict[str, Any]:
    return {"kind": "play_audio", "rate": rate, "pcm_hex": data.hex(), "segment": segment}


def parts(*blobs: tuple[bytes, str]) -> Wire:
    inline = [{"inlineData": {"mimeType": mime, "data": b64(data)}} for data, mime in blobs]
    return server({"serverContent": {"modelTurn": {"role": "model", "parts": inline}}})


def served(**fields: Any) -> Wire:
    return server({"serverContent": fields})


def case(name: str, description: str, steps: list[Any], options: Any = None) -> Case:
    return {
        "name": name,
        "description": description,
        "kind": "session",
        "options": OPTIONS if options is None else options,
        "steps": steps,
    }


def cases() -> list[Case]:
    a, b, c = pcm(160), pcm(80, 500), pcm(160, 300, 16000)
    up = pcm(320, 440, 16000)
    call = {"id": "fc_1", "name": "lookup_order", "args": {"id": "42"}}
    return [
        case(
            "setup_first_audio_after_setup_complete",
            "the setup (model as models/NAME, AUDIO replies, both transcriptions, handles "
            "asked for); no audio until setupComplete; then realtimeInput at 16 kHz",
            [
                step("opening", setup()),
                {"do": "audio_ready", "expect": False},
                receive(SETUP_COMPLETE, event("setupComplete")),
                {"do": "audio_ready", "expect": True},
                send(
                    {"kind": "audio", "rate": 16000, "pcm_hex": up.hex()},
                    text(
                        {
                            "realtimeInput": {
                                "audio": {"data": b64(up), "mimeType": "audio/pcm;rate=16000"}
                            }
                        }
                    ),
                ),
                step("replies"),
            ],
        ),
        case(
            "commands_before_setup_complete_wait_for_it",
            "the API wants nothing before setupComplete: a user_text waits, then goes as a "
            "reply, and audio only once that reply is taken (nothing overtakes it)",
            [
                step("opening", setup()),
                send({"kind": "user_text", "text": "Hello"}),
                step("replies"),
                receive(SETUP_COMPLETE, event("setupComplete")),
                {"do": "audio_ready", "expect": False},
                step(
                    "replies",
                    text(
                        {
                            "clientContent": {
                                "turns": [{"parts": [{"text": "Hello"}], "role": "user"}],
                                "turnComplete": True,
                            }
                        }
                    ),
                ),
                {"do": "audio_ready", "expect": True},
            ],
        ),
        case(
            "every_part_is_played_at_its_rate",
            "several parts per message, each played; the mimeType's rate is the rate; "
            "a turn is one segment until turnComplete",
            [
                step("opening", setup()),
                receive(SETUP_COMPLETE, event("setupComplete")),
                receive(
                    parts((a, "audio/pcm;rate=24000"), (b, "audio/pcm;rate=24000")),
                    play(a, "gemini-1"),
                    play(b, "gemini-1"),
                ),
                receive(parts((c, "audio/pcm;rate=16000")), play(c, "gemini-1", 16000)),
                receive(served(turnComplete=True)),
                receive(parts((a, "audio/pcm")), play(a, "gemini-2")),
            ],
        ),
        case(
            "transcription_pieces_are_one_transcript_per_turn",
            "the user's pieces end when the agent's turn starts; the agent's at generationComplete",
            [
                step("opening", setup()),
                receive(SETUP_COMPLETE, event("setupComplete")),
                receive(served(inputTranscription={"text": "book "}), SPEAKING),
                receive(served(inputTranscription={"text": "a room"})),
                receive(
                    served(outputTranscription={"text": "Done, "}),
                    transcript("user", "book a room"),
                ),
                receive(served(outputTranscription={"text": "it is booked."})),
                receive(
                    served(generationComplete=True),
                    transcript("assistant", "Done, it is booked.", "gemini-1"),
                ),
                receive(served(turnComplete=True)),
            ],
        ),
        case(
            "interrupted_clears_and_cuts_the_rest_of_the_turn",
            "interrupted: what was said so far, a clear, and the turn's late audio counted, "
            "not played, until its turnComplete",
            [
                step("opening", setup()),
                receive(SETUP_COMPLETE, event("setupComplete")),
                receive(parts((a, "audio/pcm;rate=24000")), play(a, "gemini-1")),
                receive(served(outputTranscription={"text": "Sure, "})),
                receive(
                    served(interrupted=True),
                    transcript("assistant", "Sure,", "gemini-1"),
                    {"kind": "clear"},
                    SPEAKING,
                ),
                receive(
                    parts((a, "audio/pcm;rate=24000")),
                    {"kind": "cut_audio", "samples": 160, "rate": 24000},
                ),
                receive(served(turnComplete=True)),
                receive(parts((b, "audio/pcm;rate=24000")), play(b, "gemini-2")),
            ],
        ),
        case(
            "the_bots_clear_sends_nothing_and_cuts_the_turn",
            "no message stops a Gemini turn: the bot's clear drops the rest of its audio",
            [
                step("opening", setup()),
                receive(SETUP_COMPLETE, event("setupComplete")),
                receive(parts((a, "audio/pcm;rate=24000")), play(a, "gemini-1")),
                send({"kind": "cleared", "by_bot": True}),
                receive(
                    parts((a, "audio/pcm;rate=24000")),
                    {"kind": "cut_audio", "samples": 160, "rate": 24000},
                ),
                receive(served(turnComplete=True)),
                receive(parts((b, "audio/pcm;rate=24000")), play(b, "gemini-2")),
            ],
        ),
        case(
            "a_tool_call_its_result_and_a_cancellation",
            "toolCall.functionCalls are tool calls; a JSON object output is the response, "
            "other text {result}; toolCallCancellation withdraws an open call",
            [
                step("opening", setup()),
                receive(SETUP_COMPLETE, event("setupComplete")),
                receive(
                    server({"toolCall": {"functionCalls": [call, call | {"id": "fc_2"}]}}),
                    {
                        "kind": "tool_call",
                        "call_id": "fc_1",
                        "name": "lookup_order",
                        "arguments": '{"id":"42"}',
                    },
                    {
                        "kind": "tool_call",
                        "call_id": "fc_2",
                        "name": "lookup_order",
                        "arguments": '{"id":"42"}',
                    },
                ),
                send(
                    {"kind": "tool_result", "call_id": "fc_1", "output": '{"status":"shipped"}'},
                    text(
                        {
                            "toolResponse": {
                                "functionResponses": [
                                    {
                                        "id": "fc_1",
                                        "name": "lookup_order",
                                        "response": {"status": "shipped"},
                                    }
                                ]
                            }
                        }
                    ),
                ),
                send({"kind": "tool_result", "call_id": "fc_1", "output": "again"}),
                receive(
                    server({"toolCallCancellation": {"ids": ["fc_2", "fc_9"]}}),
                    {"kind": "tool_call_cancelled", "call_id": "fc_2", "reason": "interrupted"},
                ),
                send({"kind": "tool_result", "call_id": "fc_2", "output": "late"}),
                receive(
                    server({"toolCall": {"functionCalls": [call | {"id": "fc_3"}]}}),
                    {
                        "kind": "tool_call",
                        "call_id": "fc_3",
                        "name": "lookup_order",
                        "arguments": '{"id":"42"}',
                    },
                ),
                send(
                    {"kind": "tool_result", "call_id": "fc_3", "output": "shipped"},
                    text(
                        {
                            "toolResponse": {
                                "functionResponses": [
                                    {
                                        "id": "fc_3",
                                        "name": "lookup_order",
                                        "response": {"result": "shipped"},
                                    }
                                ]
                            }
                        }
                    ),
                ),
            ],
        ),
        case(
            "user_text_context_instructions_and_the_next_setup",
            "user_text is a complete user turn; context and instructions are contextUpdate "
            "with the whole system instruction, which the next connection's setup carries",
            [
                step("opening", setup()),
                receive(SETUP_COMPLETE, event("setupComplete")),
                send(
                    {"kind": "user_text", "text": "What time is it?"},
                    text(
                        {
                            "clientContent": {
                                "turns": [
                                    {"parts": [{"text": "What time is it?"}], "role": "user"}
                                ],
                                "turnComplete": True,
                            }
                        }
                    ),
                ),
                send(
                    {"kind": "context", "text": "Bob is the host."},
                    text(
                        {
                            "contextUpdate": {
                                "systemInstruction": content("Be brief.\n\nBob is the host.")
                            }
                        }
                    ),
                ),
                send(
                    {"kind": "instructions", "text": "Be terse."},
                    text(
                        {
                            "contextUpdate": {
                                "systemInstruction": content("Be terse.\n\nBob is the host.")
                            }
                        }
                    ),
                ),
                step("reconnect", setup("Be terse.\n\nBob is the host.")),
            ],
        ),
        case(
            "a_resumption_handle_is_used_by_the_next_connection",
            "the newest resumable handle goes in the next setup; a non-resumable update "
            "(mid-reply, no handle) leaves it",
            [
                step("opening", setup()),
                receive(SETUP_COMPLETE, event("setupComplete")),
                receive(
                    server({"sessionResumptionUpdate": {"newHandle": "h1", "resumable": True}})
                ),
                receive(server({"sessionResumptionUpdate": {"resumable": False}})),
                step("reconnect", setup(resumption={"handle": "h1"})),
                receive(SETUP_COMPLETE, event("setupComplete")),
                step("replies"),
            ],
        ),
        case(
            "go_away_then_the_close_is_a_routine_end",
            "goAway is an agent_event with timeLeft, and the session expiring within it (the "
            "link rotates); the close after it is a routine end",
            [
                step("opening", setup()),
                receive(SETUP_COMPLETE, event("setupComplete")),
                {
                    "do": "reconnect_at_once",
                    "code": 1011,
                    "reason": "Deadline expired",
                    "expect": False,
                },
                receive(
                    server({"goAway": {"timeLeft": "50s"}}),
                    event("goAway", "50s"),
                    {"kind": "session_expiring", "within_s": 50.0},
                ),
                {
                    "do": "reconnect_at_once",
                    "code": 1011,
                    "reason": "Deadline expired before operation could complete.",
                    "expect": True,
                },
            ],
        ),
        case(
            "url_safe_base64_is_read_too",
            "protobuf's JSON takes standard and URL-safe base64, padded or not",
            [
                step("opening", setup()),
                receive(SETUP_COMPLETE, event("setupComplete")),
                receive(
                    server(
                        {
                            "serverContent": {
                                "modelTurn": {
                                    "parts": [
                                        {
                                            "inlineData": {
                                                "mimeType": "audio/pcm;rate=24000",
                                                "data": base64.urlsafe_b64encode(
                                                    b"\xff\xfe\xfb\xff"
                                                )
                                                .decode()
                                                .rstrip("="),
                                            }
                                        }
                                    ]
                                }
                            }
                        }
                    ),
                    play(b"\xff\xfe\xfb\xff", "gemini-1"),
                ),
            ],
        ),
        case(
            "invalid_server_messages",
            "odd audio, bad base64, a wrong type: invalid, named; a message with nothing "
            "acted on: ignored",
            [
                step("opening", setup()),
                receive(SETUP_COMPLETE, event("setupComplete")),
                {
                    "do": "receive",
                    "wire": parts((b"\0\0\0", "audio/pcm;rate=24000")),
                    "expect": {
                        "error": "odd_length",
                        "trigger": "serverContent",
                        "field": "parts[0]",
                    },
                },
                {
                    "do": "receive",
                    "wire": server(
                        {
                            "serverContent": {
                                "modelTurn": {
                                    "parts": [
                                        {"inlineData": {"mimeType": "audio/pcm", "data": "@@"}}
                                    ]
                                }
                            }
                        }
                    ),
                    "expect": {
                        "error": "invalid_base64",
                        "trigger": "serverContent",
                        "field": "inlineData.data",
                    },
                },
                {
                    "do": "receive",
                    "wire": text({"serverContent": {"interrupted": "yes"}}),
                    "expect": {
                        "error": "invalid_field",
                        "trigger": "serverContent",
                        "field": "interrupted",
                    },
                },
                receive(server({"usageMetadata": {"totalTokenCount": 3}})),
            ],
        ),
    ]


def render(all_cases: list[Case]) -> str:
    names = [c["name"] for c in all_cases]
    if len(set(names)) != len(names):
        raise SystemExit("duplicate case names")
    return json.dumps(all_cases, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    path = HERE / NAME
    rendered = render(cases())
    if args.check:
        if not path.exists() or path.read_text(encoding="utf-8") != rendered:
            print(f"stale: {NAME}; run python proto/vectors/generate_gemini.py")
            return 1
        return 0
    path.write_text(rendered, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
