"""The bench server's Twilio Media Streams side (stdlib only; the server is `websockets`').

A lane with `protocol="twilio"` (bench.harness.Lane) accepts what Twilio sends
(`connected`, `start`, then `media`: base64 G.711 mu-law at 8 kHz, one byte a
sample) and times each `media` message's arrival like an Attendee
`realtime_audio.mixed` one; everything else (`stop`, `mark`, `dtmf`) is
counted by its `event`. Talking back, it sends what Twilio accepts: `media`
messages of mu-law, the same 440 Hz utterance as the Attendee script, one
700 ms message (burst) or 35 of 20 ms at real time (stream).

Nothing here borrows sidecar code: mu-law comes from the standard library's
`audioop` (the tone itself is made at 8 kHz, so nothing is resampled).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import warnings
from typing import TYPE_CHECKING, Any, Final

with warnings.catch_warnings():
    # Deprecated since 3.11 and gone in 3.13; the bench runs on 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

if TYPE_CHECKING:
    from bench.harness import Script

RATE: Final = 8000
PACKET_SAMPLES: Final = RATE * 20 // 1000
"""Twilio's media packets: 20 ms, 160 mu-law bytes."""
STREAM_SID: Final = "MZ" + "0" * 32


def media_samples(message: dict[str, Any]) -> int | None:
    """Samples in a `media` message (mu-law: one byte each), None for any other event."""
    if message.get("event") != "media":
        return None
    payload: str = message["media"]["payload"]
    padding = len(payload) - len(payload.rstrip("="))
    return len(payload) * 3 // 4 - padding


def _media(ulaw: bytes) -> str:
    return json.dumps(
        {
            "event": "media",
            "streamSid": STREAM_SID,
            "media": {"payload": base64.b64encode(ulaw).decode("ascii")},
        }
    )


def _ulaw(script: Script) -> bytes:
    return audioop.lin2ulaw(dataclasses.replace(script, rate=RATE).pcm(), 2)


def heard(script: Script) -> bytes:
    """What the server's utterance decodes to (s16le at RATE): the downlink's reference."""
    return audioop.ulaw2lin(_ulaw(script), 2)


def texts(script: Script) -> tuple[str, list[str]]:
    """The script's utterance as Twilio `media` messages: (burst, stream)."""
    ulaw = _ulaw(script)
    stream = [_media(ulaw[i : i + PACKET_SAMPLES]) for i in range(0, len(ulaw), PACKET_SAMPLES)]
    return _media(ulaw), stream
