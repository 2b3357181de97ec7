"""Twilio Media Streams (bidirectional, `<Connect><Stream>`): the sidecar plays Twilio.

A server written for Twilio (Pipecat's `TwilioFrameSerializer`, the Twilio
samples, Fonoster's clients) sees exactly what Twilio sends it, per Twilio's
"Media Streams - WebSocket Messages" page: JSON text frames, `connected`, then
`start`, then `media` (base64 G.711 mu-law, 8 kHz mono, a fixed
`chunk_ms` per message, 20 ms = 160 bytes by default), `dtmf`, `mark` echoes,
and `stop` before a clean close. `sequenceNumber`, `chunk` and `timestamp`
are strings because Twilio's are.

From the server: `media` (any payload size) to play, `mark` to echo once the
audio before it has played, `clear` to drop the queued audio (pending marks
are then echoed at once, as Twilio does). Twilio accepts nothing else, so
anything else is invalid (reported on stdout only: Twilio has no error
reply), including Twilio's own events sent back and custom JSON a framework
lets a bot send. Ignored without a word, because they are legitimate and mean
nothing here: fields not read (`streamSid`, `track`, unknown ones, at any
level) and a `media` with an empty payload.

Every reconnect is a new stream (a new `streamSid`, counters from 1) of the
same call (the `callSid` stays).

The server's role (`TwilioServerSession`, for the debugging tools) reads the
same Structs the other way round and holds a client to the same rules.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, ClassVar, Final

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
    Options,
    Outgoing,
    PlayAudio,
    Session,
    Utf8Text,
    Wire,
    WireAudio,
)
from sidecar.dialects.g711 import ULAW_SILENCE, Packetizer, pcm16_from_ulaw, ulaw_from_pcm16
from sidecar.dialects.jsonwire import JsonWire, tag_of
from sidecar.dialects.server import (
    AudioIn,
    Closed,
    Opened,
    ServerIncoming,
    ServerOptions,
    ServerSession,
    dtmf,
    invalid,
    register,
)
from sidecar.messages import ErrorCode, MessageError, too_large

if TYPE_CHECKING:
    from sidecar.memory import MemorySnapshot

RATE = 8000
TRACK = "inbound"
DTMF_TRACK = "inbound_track"
"""Twilio names the track differently in `dtmf` messages; servers match on it."""

# -- sidecar -> server (what Twilio sends) -------------------------------------------


class _Up(msgspec.Struct, frozen=True, tag_field="event", rename="camel"):
    pass


class Connected(_Up, frozen=True, tag="connected"):
    protocol: str = "Call"
    version: str = "1.0.0"


class MediaFormat(msgspec.Struct, frozen=True, rename="camel"):
    encoding: str = "audio/x-mulaw"
    sample_rate: int = RATE
    channels: int = 1


class StartData(msgspec.Struct, frozen=True, rename="camel"):
    account_sid: str
    stream_sid: str
    call_sid: str
    tracks: list[str]
    custom_parameters: dict[str, str]
    media_format: MediaFormat


class Start(_Up, frozen=True, tag="start"):
    sequence_number: str
    stream_sid: str
    start: StartData


class MediaData(msgspec.Struct, frozen=True):
    track: str
    chunk: str
    timestamp: str
    payload: bytes


class Media(_Up, frozen=True, tag="media"):
    sequence_number: str
    stream_sid: str
    media: MediaData


class DtmfData(msgspec.Struct, frozen=True):
    track: str
    digit: str


class Dtmf(_Up, frozen=True, tag="dtmf"):
    # Twilio's documented order for this one message: streamSid first.
    stream_sid: str
    sequence_number: str
    dtmf: DtmfData


MAX_MARK_NAME: Final = 1024
"""Characters in a mark's name: Twilio documents none, and every pending name is
held until its audio has played (Attendee's limit is 256)."""


class MarkData(msgspec.Struct, frozen=True):
    name: Annotated[str, msgspec.Meta(max_length=MAX_MARK_NAME)]


class MarkEcho(_Up, frozen=True, tag="mark"):
    sequence_number: str
    stream_sid: str
    mark: MarkData


class StopData(msgspec.Struct, frozen=True, rename="camel"):
    account_sid: str
    call_sid: str


class Stop(_Up, frozen=True, tag="stop"):
    sequence_number: str
    stream_sid: str
    stop: StopData


# -- server -> sidecar (what Twilio accepts) -------------------------------------------
# `streamSid` and any other field are not read: a server's message can only
# reach the stream of its own connection, and Twilio's docs add fields freely.


class _Down(msgspec.Struct, frozen=True, tag_field="event"):
    pass


class MediaPayload(msgspec.Struct, frozen=True):
    payload: bytes


class ServerMedia(_Down, frozen=True, tag="media"):
    media: MediaPayload


class ServerMark(_Down, frozen=True, tag="mark"):
    mark: MarkData


class ServerClear(_Down, frozen=True, tag="clear"):
    pass


ServerMessage = ServerMedia | ServerMark | ServerClear

_WRONG_WAY = "a message Twilio sends, not one it accepts"
_HINTS: Mapping[str, str] = {name: _WRONG_WAY for name in ("connected", "start", "dtmf", "stop")}

_encoder = msgspec.json.Encoder()

_wire: JsonWire[ServerMessage] = JsonWire(ServerMessage, "event", _HINTS)

# -- the session ------------------------------------------------------------------------


class TwilioSession(Session):
    """One Media Stream: one connection's counters, ids and held-back audio."""

    def __init__(
        self,
        *,
        stream_sid: str,
        call_sid: str,
        account_sid: str,
        custom_parameters: Mapping[str, str],
        chunk_ms: int,
        max_message_bytes: int,
    ) -> None:
        self.stream_sid = stream_sid
        self._call_sid = call_sid
        self._account_sid = account_sid
        self._custom = dict(custom_parameters)
        self._max_bytes = max_message_bytes
        # The capture's chunks span chunk_ms of *input* time, so their size at
        # 8 kHz varies by a sample or so around the nominal one (resampler
        # look-ahead); Twilio's never do. Cutting exact pieces here, with the
        # remainder kept for the next chunk, gives the server Twilio's sizes
        # without re-timing the audio; the lead keeps the first chunk, short by
        # the resampler's hold-back, from delaying every packet after it.
        self._packets = Packetizer(RATE * chunk_ms // 1000, lead=ULAW_SILENCE)
        self._sequence = 0
        self._chunks = 0
        self._samples = 0

    def _next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    def opening(self) -> Sequence[Wire]:
        start = StartData(
            account_sid=self._account_sid,
            stream_sid=self.stream_sid,
            call_sid=self._call_sid,
            tracks=[TRACK],
            custom_parameters=self._custom,
            media_format=MediaFormat(),
        )
        return (
            _text(Connected()),
            _text(Start(self._next_sequence(), self.stream_sid, start)),
        )

    def wire_utf8(self, item: Outgoing) -> Sequence[Wire | Utf8Text]:
        # Audio, nearly every message: msgspec's bytes go out as they are.
        if isinstance(item, AudioOut):
            return [Utf8Text(self._media(p)) for p in self._audio_packets(item)]
        return self.wire(item)

    def _audio_packets(self, item: AudioOut) -> list[bytes]:
        if item.stream != MIXED:
            return []  # see encode()
        if item.rate != RATE:
            raise ValueError(f"Twilio audio is {RATE} Hz; got a chunk at {item.rate} Hz")
        return self._packets.feed(ulaw_from_pcm16(item.pcm))

    def encode(self, item: Encodable) -> Sequence[Wire]:
        match item:
            case AudioOut(stream=stream) if stream != MIXED:
                return ()  # one stream per call: Twilio has no participant audio
            case AudioOut():
                return [self._media(p).decode() for p in self._audio_packets(item)]
            case DtmfOut(digit=digit):
                data = DtmfData(DTMF_TRACK, digit)
                return (_text(Dtmf(self.stream_sid, self._next_sequence(), data)),)
            case MarkOut(name=name):
                # Twilio echoes a mark whether its audio played or a clear dropped it.
                return (_text(MarkEcho(self._next_sequence(), self.stream_sid, MarkData(name))),)
            case ErrorOut() | ClearedOut():
                return ()  # Twilio answers neither an invalid message nor a clear
            case AgentCommand():
                return ()  # an audio protocol: no agent to steer (refused before queueing)

    def _media(self, payload: bytes) -> bytes:
        self._chunks += 1
        # Media time, not the wall clock: exact, monotonic, and what a server
        # that sums the audio it got would compute too.
        timestamp = self._samples * 1000 // RATE
        self._samples += len(payload)
        data = MediaData(TRACK, str(self._chunks), str(timestamp), payload)
        return _encoder.encode(Media(self._next_sequence(), self.stream_sid, data))

    def closing(self) -> Sequence[Wire]:
        tail = self._packets.flush(ULAW_SILENCE)
        media = [self._media(tail).decode()] if tail is not None else []
        stop = StopData(account_sid=self._account_sid, call_sid=self._call_sid)
        return [*media, _text(Stop(self._next_sequence(), self.stream_sid, stop))]

    def receive(self, message: Wire) -> Sequence[Incoming]:
        if isinstance(message, bytes):
            return (_binary(message, self._max_bytes),)
        decoded = _wire.decode(message, self._max_bytes)
        match decoded:
            case MessageError():
                return (Invalid(decoded),)
            case ServerMedia(media=MediaPayload(payload=payload)):
                if not payload:
                    return ()  # nothing to play; Pipecat skips these too
                return (PlayAudio(pcm16_from_ulaw(payload), RATE),)
            case ServerMark(mark=MarkData(name=name)):
                return (MarkIn(name),)
            case ServerClear():
                return (ClearPlayout(),)


def _binary(message: bytes, max_bytes: int) -> Invalid:
    if len(message) > max_bytes:
        return Invalid(too_large(len(message), max_bytes))
    return Invalid(
        MessageError(
            ErrorCode.INVALID_JSON,
            f"a binary frame ({len(message)} bytes): Twilio Media Streams "
            "messages are JSON text frames",
        )
    )


def _text(message: _Up | _Down) -> str:
    return _encoder.encode(message).decode()


# -- the dialect ------------------------------------------------------------------------

SidFactory = Callable[[str], str]
"""prefix ("MZ", "CA", "AC") -> a new id in Twilio's shape."""


def new_sid(prefix: str) -> str:
    """A Twilio-shaped id: two letters and 32 lower-case hex digits."""
    return prefix + secrets.token_hex(16)


_SID_SHAPE = re.compile(r"[0-9a-f]{32}")


def _looks_like(sid: str, prefix: str) -> bool:
    return sid.startswith(prefix) and _SID_SHAPE.fullmatch(sid[2:]) is not None


def request_signature(auth_token: str, url: str) -> str:
    """Twilio's `X-Twilio-Signature`: base64 of the HMAC-SHA1, keyed with the
    account's Auth Token, of the URL requested, query string included, then
    the POST parameters sorted by name; a websocket upgrade is a GET and has
    none ("Webhooks security", Twilio's docs)."""
    digest = hmac.new(auth_token.encode(), url.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class Twilio(Dialect):
    name: ClassVar[str] = "twilio"
    per_participant: ClassVar[bool] = False
    error_replies: ClassVar[bool] = False
    summary: ClassVar[str] = "Twilio Media Streams, as the client a Twilio server expects"
    flags: ClassVar[tuple[DialectFlag, ...]] = (
        DialectFlag("--stream-param", "a customParameters entry of the start message"),
        DialectFlag("--call-sid", "callSid (default: generated, CA + 32 hex)"),
        DialectFlag("--account-sid", "accountSid (default: generated, AC + 32 hex)"),
    )
    server_audio: ClassVar[str] = "media"
    auth_scheme: ClassVar[str] = ""
    auth_env: ClassVar[str | None] = "TWILIO_AUTH_TOKEN"
    auth_header: ClassVar[str] = "X-Twilio-Signature"
    # A Media Stream ends with the call (or <Stop>): a reconnect would be a new
    # stream of a call that is over, which the server starts over.
    reconnect_on_clean_close: ClassVar[bool] = False

    def __init__(self, options: Options, *, sids: SidFactory = new_sid) -> None:
        super().__init__(options)
        self._sids = sids
        # Once per run, not per connection: a reconnect is a new stream of the
        # same call, and a server keys its call state on callSid.
        self.call_sid = options.call_sid or sids("CA")
        self.account_sid = options.account_sid or sids("AC")

    def uplink_audio(self, stream: str = MIXED) -> WireAudio:
        return WireAudio(RATE, "mulaw")

    def auth_headers(self, environ: dict[str, str], url: str) -> tuple[tuple[str, str], ...]:
        # Twilio's docs tell every Media Streams server to check this header;
        # with the account's token we sign as Twilio does, so such servers
        # take us for Twilio.
        token = environ.get("TWILIO_AUTH_TOKEN", "").strip()
        return ((self.auth_header, request_signature(token, url)),) if token else ()

    def warnings(self) -> Sequence[str]:
        found = []
        for given, prefix, what in (
            (self.options.call_sid, "CA", "call SID"),
            (self.options.account_sid, "AC", "account SID"),
        ):
            if given is not None and not _looks_like(given, prefix):
                found.append(
                    f"the {what} {given!r} is not in Twilio's shape ({prefix} and 32 hex "
                    "digits); a server that checks it may refuse the stream"
                )
        names = [name for name, _ in self.options.stream_params]
        for name in sorted({n for n in names if names.count(n) > 1}):
            found.append(f"stream parameter {name!r} is given twice; the last value is sent")
        return found

    def session(self, history: MemorySnapshot | None = None) -> TwilioSession:
        return TwilioSession(
            stream_sid=self._sids("MZ"),
            call_sid=self.call_sid,
            account_sid=self.account_sid,
            custom_parameters=dict(self.options.stream_params),
            chunk_ms=self.options.chunk_ms,
            max_message_bytes=self.options.max_message_bytes,
        )


# -- the server's role -------------------------------------------------------------------
# What a server sends is what the sidecar reads above, with its stream's id,
# as Twilio's docs ask (the sidecar does not read it).


class SendMedia(ServerMedia, frozen=True, rename="camel"):
    stream_sid: str


class SendMark(ServerMark, frozen=True, rename="camel"):
    stream_sid: str


class SendClear(ServerClear, frozen=True, rename="camel"):
    stream_sid: str


ClientMessage = Connected | Start | Media | Dtmf | MarkEcho | Stop

_client_wire: JsonWire[ClientMessage] = JsonWire(
    ClientMessage, "event", {"clear": "a message a server sends, not one Twilio sends"}
)


class TwilioServerSession(ServerSession):
    """A server for Twilio Media Streams, holding its client to Twilio's ways:
    `connected` first, then `start` (the stream's ids, track `inbound`,
    mu-law at 8 kHz); every later `sequenceNumber` one more than the last and
    the same `streamSid`; `media` chunks counting from 1, timestamps never
    going back; marks echoed only for marks sent, in order; `stop` last,
    naming the start's call. It sends mu-law `media` in `chunk_ms` pieces, as
    Twilio-dialect servers do, `mark` and `clear`."""

    def __init__(self, options: ServerOptions) -> None:
        super().__init__(options)
        self._pieces = Packetizer(RATE * options.chunk_ms // 1000)
        self._silence = ULAW_SILENCE
        self._messages = 0
        self._sequence = 0
        self._start: Start | None = None
        self._chunk = 0
        self._timestamp = 0
        self._stopped = False

    @property
    def ready(self) -> bool:
        return self._start is not None

    @property
    def output_rates(self) -> tuple[int, ...]:
        return (RATE,)

    def receive(self, message: Wire) -> Sequence[ServerIncoming]:
        self._messages += 1
        if isinstance(message, bytes):
            return (_binary(message, self.options.max_message_bytes),)
        decoded = _client_wire.decode(message, self.options.max_message_bytes)
        if isinstance(decoded, MessageError):
            return (Invalid(decoded),)
        kind = tag_of(decoded)
        return [*self._order(decoded, kind), *self._meaning(decoded, kind)]

    def _order(self, message: ClientMessage, kind: str) -> list[ServerIncoming]:
        found: list[ServerIncoming] = []
        if self._stopped:
            found.append(invalid(f"{kind!r} after stop, which ends the stream", kind))
        if isinstance(message, Connected):
            if self._messages != 1:
                found.append(invalid("connected comes once, as the first message", kind))
            return found
        if self._messages == 1:
            found.append(invalid(f"the first message is {kind!r}; Twilio sends connected", kind))
        expected = str(self._sequence + 1)
        got = message.sequence_number
        if got != expected:
            text = f"sequenceNumber {got!r}, expected {expected!r} (one more than the last)"
            found.append(invalid(text, kind))
        self._sequence = int(got) if got.isdigit() else self._sequence + 1
        if isinstance(message, Start):
            if self._start is not None:
                found.append(invalid("a second start: a stream starts once", kind))
        elif self._start is None:
            found.append(invalid(f"{kind!r} before start", kind))
        elif message.stream_sid != self._start.stream_sid:
            text = (
                f"streamSid {message.stream_sid!r} is not this stream's {self._start.stream_sid!r}"
            )
            found.append(invalid(text, kind))
        return found

    def _meaning(self, message: ClientMessage, kind: str) -> Sequence[ServerIncoming]:
        match message:
            case Connected():
                return ()
            case Start(start=info):
                return self._started(message, info, kind)
            case Media(media=media):
                return self._media(media, kind)
            case Dtmf(dtmf=data):
                wrong = data.track != DTMF_TRACK
                track = invalid(f"dtmf on track {data.track!r}, not {DTMF_TRACK!r}", kind)
                return [*([track] if wrong else []), dtmf(data.digit, kind)]
            case MarkEcho(mark=MarkData(name=name)):
                return self._answered(name, None, kind)
            case Stop(stop=stop):
                self._stopped = True
                found: list[ServerIncoming] = []
                start = self._start.start if self._start is not None else None
                if start is not None and (stop.account_sid, stop.call_sid) != (
                    start.account_sid,
                    start.call_sid,
                ):
                    found.append(invalid("stop names another call than start did", kind))
                return [*found, Closed(msgspec.to_builtins(stop))]

    def _started(self, message: Start, info: StartData, kind: str) -> Sequence[ServerIncoming]:
        if self._start is not None:
            return ()
        self._start = message
        found: list[ServerIncoming] = []
        if info.stream_sid != message.stream_sid:
            found.append(invalid("start.streamSid differs from the message's streamSid", kind))
        if info.tracks != [TRACK]:
            found.append(
                invalid(f"tracks {info.tracks}; a bidirectional stream has [{TRACK!r}]", kind)
            )
        if info.media_format != MediaFormat():
            found.append(
                invalid(
                    f"mediaFormat {msgspec.to_builtins(info.media_format)}; Twilio streams "
                    "audio/x-mulaw at 8000 Hz, 1 channel",
                    kind,
                )
            )
        return [*found, Opened(msgspec.to_builtins(info), RATE)]

    def _media(self, media: MediaData, kind: str) -> Sequence[ServerIncoming]:
        found: list[ServerIncoming] = []
        if media.track != TRACK:
            found.append(invalid(f"media on track {media.track!r}, not {TRACK!r}", kind))
        expected = str(self._chunk + 1)
        if media.chunk != expected:
            found.append(invalid(f"media.chunk {media.chunk!r}, expected {expected!r}", kind))
        self._chunk = int(media.chunk) if media.chunk.isdigit() else self._chunk + 1
        timestamp: int | None = None
        if not media.timestamp.isdigit():
            found.append(invalid(f"media.timestamp {media.timestamp!r} is no count of ms", kind))
        else:
            timestamp = int(media.timestamp)
            if timestamp < self._timestamp:
                text = f"media.timestamp {timestamp} goes back from {self._timestamp}"
                found.append(invalid(text, kind))
            self._timestamp = max(timestamp, self._timestamp)
        return [*found, AudioIn(pcm16_from_ulaw(media.payload), RATE, timestamp)]

    def _to_wire(self, pcm: bytes) -> bytes:
        return ulaw_from_pcm16(pcm)

    @property
    def _stream_sid(self) -> str:
        assert self._start is not None
        return self._start.stream_sid

    def _encode_audio(self, data: bytes, rate: int) -> Wire:
        return _text(SendMedia(MediaPayload(data), self._stream_sid))

    def _encode_mark(self, name: str) -> Wire:
        if len(name) > MAX_MARK_NAME:
            raise ValueError(
                f"a mark's name is at most {MAX_MARK_NAME} characters, got {len(name)}"
            )
        return _text(SendMark(MarkData(name), self._stream_sid))

    def _encode_clear(self) -> Wire:
        return _text(SendClear(self._stream_sid))


register(Twilio.name, TwilioServerSession)
