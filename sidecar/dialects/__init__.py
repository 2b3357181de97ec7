"""The wire protocols the sidecar speaks, one module each, on one seam (base.py)."""

from __future__ import annotations

from typing import Final

from sidecar.dialects.attendee import Attendee
from sidecar.dialects.base import Dialect, Options
from sidecar.dialects.deepgram_agent import DeepgramAgent
from sidecar.dialects.elevenlabs_agent import ElevenLabsAgent
from sidecar.dialects.gemini_live import GeminiLive
from sidecar.dialects.openai_realtime import OpenAIRealtime
from sidecar.dialects.twilio import Twilio
from sidecar.dialects.vonage import Vonage

DIALECTS: Final[dict[str, type[Dialect]]] = {
    Attendee.name: Attendee,
    Twilio.name: Twilio,
    Vonage.name: Vonage,
    OpenAIRealtime.name: OpenAIRealtime,
    DeepgramAgent.name: DeepgramAgent,
    GeminiLive.name: GeminiLive,
    ElevenLabsAgent.name: ElevenLabsAgent,
}
"""Every dialect by its `--protocol` name; the CLI's choices come from here."""

DEFAULT: Final = Attendee.name


def make(name: str, options: Options) -> Dialect:
    return DIALECTS[name](options)


__all__ = ["DEFAULT", "DIALECTS", "Dialect", "Options", "make"]
