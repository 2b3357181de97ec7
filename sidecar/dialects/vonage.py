"""Vonage Voice API websockets (NCCO `connect` to a `websocket` endpoint): the sidecar plays Vonage.

As "WebSockets in the Vonage Voice API" describes it: one text message first,
`{"event":"websocket:connected","content-type":"audio/l16;rate=16000"}` with
the call's headers as further top-level fields (here: the stream
parameters), then binary frames of 16-bit little-endian mono PCM, exactly
20 ms each (640 bytes at 16 kHz, 320 at 8 kHz), in both directions.

From the server: binary audio to play, `{"action":"clear"}` to drop the queued
audio (answered `{"event":"websocket:cleared"}`), and
`{"action":"notify","payload":...}`, answered
`{"event":"websocket:notify","payload":...}` with the same payload once the
audio before it has played. Vonage has no error reply: an invalid message
(a text one that is no command, an odd-sized binary frame) is reported on
stdout only. Ignored without a word: unknown fields and empty binary frames.

The server's role (`VonageServerSession`, for the debugging tools) reads the
same Structs the other way round and holds a client to the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

import msgspec

from sidecar.dialects.base import (
    MIXED,
    AgentCommand,
    AudioOut,
    ClearedOut,
    ClearPlayout,
    Dialect,
    DialectFlag,
    DtmfOut,
    Encodable,
    ErrorOut,
    Incoming,
    Invalid,
    MarkIn,
    MarkOut,
    PlayAudio,
    Session,
    Wire,
    WireAudio,
)
from sidecar.dialects.g711 import Packetizer
from sidecar.dialects.jsonwire import JsonWire, tag_of
from sidecar.dialects.server import (
    AudioIn,
    ClearAnswer,
    Opened,
    ServerIncoming,
    ServerOptions,
    ServerSession,
    dtmf,
    invalid,
    register,
)
from sidecar.messages import ErrorCode, MessageError, too_large
from sidecar.pcm import SAMPLE_BYTES

if TYPE_CHECKING:
    from sidecar.memory import MemorySnapshot

RATES: Final = (8000, 16000)
FRAME_MS: Final = 20
"""Vonage's frame duration, both ways, whatever --chunk-ms the capture uses."""
PCM_SILENCE: Final = bytes(SAMPLE_BYTES)
MAX_NOTIFY_PAYLOAD: Final = 8192
"""Bytes of a notify's payload: Vonage documents no limit, and every pending one
is held until the audio before it has played."""


def frame_bytes(rate: int) -> int:
    """The size of one 20 ms frame of 16-bit PCM at `rate`."""
    return rate * FRAME_MS // 1000 * SAMPLE_BYTES


# -- sidecar -> server (what Vonage sends) ----------------------------------------------


class _Up(msgspec.Struct, frozen=True, tag_field="event"):
    pass


class ConnectedEvent(_Up, frozen=True, tag="websocket:connected"):
    content_type: str = msgspec.field(name="content-type")


class NotifyEvent(_Up, frozen=True, tag="websocket:notify"):
    payload: msgspec.Raw


class ClearedEvent(_Up, frozen=True, tag="websocket:cleared"):
    pass


class DtmfEvent(_Up, frozen=True, tag="websocket:dtmf"):
    # Vonage also sends a `duration` in ms; an AudioSocket DTMF frame carries
    # none, and a made-up one would be worse than none.
    digit: str


# -- server -> sidecar: commands (text); audio is binary ----------------------------------


class _Command(msgspec.Struct, frozen=True, tag_field="action"):
    pass


class Clear(_Command, frozen=True, tag="clear"):
    pass


class Notify(_Command, frozen=True, tag="notify"):
    payload: msgspec.Raw
    """Kept as the raw JSON text, so the answer reproduces it byte for byte."""


Command = Clear | Notify

_encoder: Final = msgspec.json.Encoder()
_raw: Final = msgspec.json.Decoder(msgspec.Raw)
_wire: JsonWire[Command] = JsonWire(Command, "action")
RESERVED: Final = ("event", "content-type")
"""Top-level fields of `websocket:connected` a stream parameter must not replace."""


class VonageSession(Session):
    def __init__(
        self, *, rate: int, headers: Sequence[tuple[str, str]], max_message_bytes: int
    ) -> None:
        self.rate = rate
        self._headers = dict(headers)
        self._max_bytes = max_message_bytes
        # Vonage wants exactly 20 ms per frame, and the capture's chunks vary by
        # a sample or so (and follow --chunk-ms): cut exact frames here and keep
        # the remainder for the next chunk, so the audio is never re-timed (the
        # lead: see Packetizer).
        self._frames = Packetizer(frame_bytes(rate), lead=PCM_SILENCE)

    def opening(self) -> Sequence[Wire]:
        head = _encoder.encode(ConnectedEvent(content_type=f"audio/l16;rate={self.rate}"))
        if not self._headers:
            return (head.decode(),)
        # The headers are the caller's own field names, so no Struct can declare
        # them: they are appended to the Struct's object, keeping its field order.
        extra = _encoder.encode(self._headers)
        return ((head[:-1] + b"," + extra[1:]).decode(),)

    def encode(self, item: Encodable) -> Sequence[Wire]:
        match item:
            case AudioOut(stream=stream) if stream != MIXED:
                return ()  # one stream per call: Vonage has no participant audio
            case AudioOut():
                if item.rate != self.rate:
                    raise ValueError(
                        f"this stream is {self.rate} Hz; got a chunk at {item.rate} Hz"
                    )
                if len(item.pcm) % SAMPLE_BYTES:
                    raise ValueError(f"16-bit PCM needs an even byte count, got {len(item.pcm)}")
                return self._frames.feed(item.pcm)
            case MarkOut(name=name):
                # Answered whether played or dropped by a clear: a server waiting
                # for its notify must not wait forever (Twilio answers marks the
                # same way); one dropped by a clear arrives before the cleared event.
                return (_text(NotifyEvent(_payload(name))),)
            case ClearedOut():
                return (_text(ClearedEvent()),)
            case DtmfOut(digit=digit):
                return (_text(DtmfEvent(digit)),)
            case ErrorOut():
                return ()  # Vonage has no error reply
            case AgentCommand():
                return ()  # an audio protocol: no agent to steer (refused before queueing)

    def closing(self) -> Sequence[Wire]:
        tail = self._frames.flush(PCM_SILENCE)
        return (tail,) if tail is not None else ()

    def receive(self, message: Wire) -> Sequence[Incoming]:
        if isinstance(message, bytes):
            return self._audio(message)
        decoded = _wire.decode(message, self._max_bytes)
        match decoded:
            case MessageError():
                return (Invalid(decoded),)
            case Clear():
                return (ClearPlayout(),)
            case Notify(payload=payload) if len(payload) > MAX_NOTIFY_PAYLOAD:
                text = f"`payload` is {len(payload)} bytes of JSON; at most {MAX_NOTIFY_PAYLOAD}"
                return (Invalid(MessageError(ErrorCode.INVALID_FIELD, text, "notify")),)
            case Notify(payload=payload):
                # The mark is the payload's JSON text: opaque to the rest of the
                # sidecar, and exactly what the answer must carry.
                return (MarkIn(bytes(payload).decode()),)

    def _audio(self, data: bytes) -> Sequence[Incoming]:
        problem = _unreadable(data, self._max_bytes)
        if problem is not None:
            return (problem,)
        if not data:
            return ()
        return (PlayAudio(data, self.rate),)


def _unreadable(data: bytes, max_bytes: int) -> Invalid | None:
    """A binary frame that is no 16-bit PCM at all (either way)."""
    if len(data) > max_bytes:
        return Invalid(too_large(len(data), max_bytes))
    if len(data) % SAMPLE_BYTES:
        return Invalid(
            MessageError(
                ErrorCode.ODD_LENGTH,
                f"a binary frame of {len(data)} bytes: 16-bit PCM needs an even count",
            )
        )
    return None


def _payload(name: str) -> msgspec.Raw:
    """The mark's payload as raw JSON; a name that is no JSON text (a mark the
    sidecar made itself) is sent as a JSON string instead of as broken JSON."""
    try:
        # Checked as JSON text only, never converted: a number past float or
        # 64-bit range (`1e99999`) is JSON all the same, and comes back as sent.
        _raw.decode(name)
        return msgspec.Raw(name.encode())
    except (msgspec.DecodeError, RecursionError):
        return msgspec.Raw(_encoder.encode(name))
    except UnicodeError:  # a lone surrogate, which no UTF-8 text can carry
        return msgspec.Raw(_encoder.encode(name.encode(errors="replace").decode()))


def _text(message: _Up) -> str:
    return _encoder.encode(message).decode()


class Vonage(Dialect):
    name: ClassVar[str] = "vonage"
    per_participant: ClassVar[bool] = False
    error_replies: ClassVar[bool] = False
    summary: ClassVar[str] = "Vonage's websocket connection"
    flags: ClassVar[tuple[DialectFlag, ...]] = (
        DialectFlag("--stream-param", "a header field of the websocket:connected message"),
    )
    sample_rates: ClassVar[tuple[int, ...]] = RATES
    default_sample_rate: ClassVar[int] = 16000
    server_audio: ClassVar[str] = "binary audio"
    # Vonage closes the websocket when the call ends; a new one would be a new call leg.
    reconnect_on_clean_close: ClassVar[bool] = False

    def uplink_audio(self, stream: str = MIXED) -> WireAudio:
        return WireAudio(self.options.sample_rate)

    def problems(self) -> Sequence[str]:
        found = []
        if self.options.sample_rate not in RATES:
            found.append(
                f"Vonage streams 16-bit PCM at 8000 or 16000 Hz; "
                f"--sample-rate {self.options.sample_rate} is neither"
            )
        for name in sorted({n for n, _ in self.options.stream_params if n in RESERVED}):
            found.append(f"stream parameter {name!r} would replace the message's own field")
        return found

    def session(self, history: MemorySnapshot | None = None) -> VonageSession:
        return VonageSession(
            rate=self.options.sample_rate,
            headers=self.options.stream_params,
            max_message_bytes=self.options.max_message_bytes,
        )


# -- the server's role -------------------------------------------------------------------

ClientEvent = ConnectedEvent | NotifyEvent | ClearedEvent | DtmfEvent

_client_wire: JsonWire[ClientEvent] = JsonWire(ClientEvent, "event")
_fields: Final = msgspec.json.Decoder(dict[str, Any])
_any: Final = msgspec.json.Decoder()
_CONTENT_TYPE: Final = re.compile(r"audio/l16;rate=(\d+)")


class VonageServerSession(ServerSession):
    """A server for Vonage's websockets, holding its client to Vonage's ways:
    `websocket:connected` first, once, with `audio/l16;rate=8000|16000`; then
    binary frames of exactly 20 ms at that rate; `websocket:notify` only for
    a notify sent, in order; `websocket:cleared` only after a clear. It sends
    20 ms binary frames, `notify` (the mark's name as its JSON string
    payload) and `clear`."""

    def __init__(self, options: ServerOptions) -> None:
        super().__init__(options)
        self._silence = PCM_SILENCE
        self.rate: int | None = None
        self._messages = 0
        self._clears = 0

    @property
    def ready(self) -> bool:
        return self.rate is not None

    @property
    def output_rates(self) -> tuple[int, ...]:
        return () if self.rate is None else (self.rate,)

    def receive(self, message: Wire) -> Sequence[ServerIncoming]:
        self._messages += 1
        if isinstance(message, bytes):
            return self._frame(message)
        decoded = _client_wire.decode(message, self.options.max_message_bytes)
        if isinstance(decoded, MessageError):
            return (Invalid(decoded),)
        kind = tag_of(decoded)
        if isinstance(decoded, ConnectedEvent):
            return self._connected(decoded, message, kind)
        found: list[ServerIncoming] = []
        if not self.ready:
            found.append(invalid(f"{kind!r} before websocket:connected", kind))
        match decoded:
            case NotifyEvent(payload=payload):
                return [*found, *self._answered(_mark_name(payload), None, kind)]
            case ClearedEvent():
                if not self._clears:
                    return [*found, invalid("websocket:cleared, but no clear was sent", kind)]
                self._clears -= 1
                return [*found, ClearAnswer()]
            case DtmfEvent(digit=digit):
                return [*found, dtmf(digit, kind)]

    def _connected(self, event: ConnectedEvent, text: str, kind: str) -> Sequence[ServerIncoming]:
        if self._messages != 1:
            return (invalid("websocket:connected comes once, as the first message", kind),)
        match = _CONTENT_TYPE.fullmatch(event.content_type)
        if match is None or int(match.group(1)) not in RATES:
            return (
                invalid(
                    f"content-type {event.content_type!r}; Vonage streams audio/l16;rate=8000 "
                    "or audio/l16;rate=16000",
                    kind,
                ),
            )
        self.rate = int(match.group(1))
        self._pieces = Packetizer(frame_bytes(self.rate))
        info = {k: v for k, v in _fields.decode(text).items() if k != "event"}
        return (Opened(info, self.rate),)

    def _frame(self, data: bytes) -> Sequence[ServerIncoming]:
        problem = _unreadable(data, self.options.max_message_bytes)
        if problem is not None:
            return (problem,)
        if self.rate is None:
            return (invalid("a binary frame before websocket:connected said its rate", None),)
        size = frame_bytes(self.rate)
        if len(data) == size:
            return (AudioIn(data, self.rate),)
        wrong = invalid(
            f"a binary frame of {len(data)} bytes; Vonage's are 20 ms, {size} bytes at "
            f"{self.rate} Hz",
            None,
        )
        return (wrong, AudioIn(data, self.rate)) if data else (wrong,)

    def clear(self) -> Sequence[Wire]:
        wires = super().clear()
        self._clears += 1
        return wires

    def _encode_audio(self, data: bytes, rate: int) -> Wire:
        return data

    def _encode_mark(self, name: str) -> Wire:
        payload = _encoder.encode(name)
        if len(payload) > MAX_NOTIFY_PAYLOAD:
            raise ValueError(
                f"a notify's payload is at most {MAX_NOTIFY_PAYLOAD} bytes of JSON, "
                f"got {len(payload)}"
            )
        return _encoder.encode(Notify(msgspec.Raw(payload))).decode()

    def _encode_clear(self) -> Wire:
        return _encoder.encode(Clear()).decode()


def _mark_name(payload: msgspec.Raw) -> str:
    """A notify's payload as a mark's name: the JSON string this server sent, or
    (a payload it did not make) the JSON text itself."""
    try:
        value = _any.decode(payload)
    except msgspec.ValidationError:  # `1e99999`: JSON, but past what Python holds
        return bytes(payload).decode()
    return value if isinstance(value, str) else bytes(payload).decode()


register(Vonage.name, VonageServerSession)
