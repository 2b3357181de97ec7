"""Attendee's realtime-audio protocol, with our extensions: the first dialect.

Byte for byte what the sidecar always sent (proto/vectors/messages*.json):
JSON text frames, `realtime_audio.mixed` and `.per_participant` up,
`realtime_audio.bot_output` down, and the extensions `clear`, `mark` and
`error`, which a server that does not use them never sees. The Structs and
their codec live in `sidecar.messages`; this module maps them onto the seam,
for the sidecar's role (`AttendeeSession`) and a server's (`AttendeeServerSession`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from sidecar import messages
from sidecar.dialects.base import (
    MIXED,
    AgentCommand,
    AudioOut,
    ClearedOut,
    ClearPlayout,
    Dialect,
    DtmfOut,
    Encodable,
    ErrorOut,
    Incoming,
    Invalid,
    MarkIn,
    MarkOut,
    Outgoing,
    PlayAudio,
    Session,
    Utf8Text,
    Wire,
    WireAudio,
)
from sidecar.dialects.server import (
    AudioIn,
    ErrorReplyIn,
    ServerIncoming,
    ServerSession,
    register,
)

if TYPE_CHECKING:
    from sidecar.memory import MemorySnapshot


class AttendeeSession(Session):
    def __init__(self, bot_id: str, max_message_bytes: int) -> None:
        self._bot_id = bot_id
        self._max_bytes = max_message_bytes

    def opening(self) -> Sequence[Wire]:
        return ()

    def wire_utf8(self, item: Outgoing) -> Sequence[Wire | Utf8Text]:
        # Audio, nearly every message: msgspec's bytes go out as they are.
        if isinstance(item, AudioOut):
            return (Utf8Text(messages.encode(self._audio(item))),)
        return self.wire(item)

    def _audio(self, item: AudioOut) -> messages.SidecarMessage:
        if item.stream == MIXED:
            return messages.MixedAudio(
                bot_id=self._bot_id,
                data=messages.MixedData(
                    chunk=item.pcm,
                    sample_rate=item.rate,  # type: ignore[arg-type]
                    timestamp_ms=item.timestamp_ms,
                ),
            )
        return messages.ParticipantAudio(
            bot_id=self._bot_id,
            data=messages.ParticipantData(
                chunk=item.pcm,
                sample_rate=item.rate,  # type: ignore[arg-type]
                timestamp_ms=item.timestamp_ms,
                participant_uuid=item.stream,
            ),
        )

    def encode(self, item: Encodable) -> Sequence[Wire]:
        message: messages.SidecarMessage
        match item:
            case AudioOut():
                message = self._audio(item)
            case MarkOut(name=name, played=played):
                status: messages.MarkStatus = "played" if played else "cleared"
                data = messages.MarkEchoData(name=name, status=status)
                message = messages.MarkEcho(bot_id=self._bot_id, data=data)
            case ErrorOut(error=error):
                message = messages.Error(
                    bot_id=self._bot_id,
                    data=messages.ErrorData(
                        code=error.code, message=error.message, trigger=error.trigger
                    ),
                )
            case DtmfOut() | ClearedOut():
                # Attendee has no DTMF message, and a clear is answered by its marks.
                return ()
            case AgentCommand():
                return ()  # an audio protocol: no agent to steer (refused before queueing)
        return (messages.encode(message).decode(),)

    def receive(self, message: Wire) -> Sequence[Incoming]:
        decoded = messages.decode_server_message(message, self._max_bytes)
        match decoded:
            case messages.MessageError():
                return (Invalid(decoded),)
            case messages.BotOutput(data=data):
                return (PlayAudio(data.chunk, data.sample_rate),)
            case messages.Clear():
                return (ClearPlayout(),)
            case messages.Mark(data=data):
                return (MarkIn(data.name),)


class Attendee(Dialect):
    name: ClassVar[str] = "attendee"
    per_participant: ClassVar[bool] = True
    error_replies: ClassVar[bool] = True
    summary: ClassVar[str] = "Attendee's realtime audio websocket (the default)"
    sample_rates: ClassVar[tuple[int, ...]] = messages.SAMPLE_RATES
    default_sample_rate: ClassVar[int] = 16000
    participant_sample_rates: ClassVar[tuple[int, ...]] = messages.PARTICIPANT_SAMPLE_RATES
    server_audio: ClassVar[str] = "realtime_audio.bot_output"

    def uplink_audio(self, stream: str = MIXED) -> WireAudio:
        if stream == MIXED:
            return WireAudio(self.options.sample_rate)
        return WireAudio(self.options.participant_sample_rate)

    def session(self, history: MemorySnapshot | None = None) -> AttendeeSession:
        return AttendeeSession(self.options.bot_id, self.options.max_message_bytes)


# -- the server's role -------------------------------------------------------------------


class AttendeeServerSession(ServerSession):
    """A user's server: reads `realtime_audio.mixed`, `.per_participant`, mark
    echoes and error replies; sends `bot_output` at any contract rate, `mark`
    and `clear`. Attendee has no opening: the stream starts with its audio."""

    @property
    def output_rates(self) -> tuple[int, ...]:
        return messages.SAMPLE_RATES

    def receive(self, message: Wire) -> Sequence[ServerIncoming]:
        decoded = messages.decode_sidecar_message(message, self.options.max_message_bytes)
        match decoded:
            case messages.MessageError():
                return (Invalid(decoded),)
            case messages.MixedAudio(data=data):
                return (AudioIn(data.chunk, data.sample_rate, data.timestamp_ms),)
            case messages.ParticipantAudio(data=pdata):
                stream = pdata.participant_uuid
                return (AudioIn(pdata.chunk, pdata.sample_rate, pdata.timestamp_ms, stream),)
            case messages.MarkEcho(data=echo):
                return self._answered(echo.name, echo.status == "played", messages.MARK)
            case messages.Error(data=error):
                return (ErrorReplyIn(error.code, error.message, error.trigger),)

    def _encode_audio(self, data: bytes, rate: int) -> Wire:
        output = messages.BotOutputData(chunk=data, sample_rate=rate)  # type: ignore[arg-type]
        return messages.encode(messages.BotOutput(data=output)).decode()

    def _encode_mark(self, name: str) -> Wire:
        if not 1 <= len(name) <= 256:
            raise ValueError(f"a mark's name is 1 to 256 characters, got {len(name)}")
        return messages.encode(messages.Mark(data=messages.MarkData(name=name))).decode()

    def _encode_clear(self) -> Wire:
        return messages.encode(messages.Clear()).decode()


register(Attendee.name, AttendeeServerSession)
