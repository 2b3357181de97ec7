"""OpenAI Realtime (GA interface), spoken directly: no bridge server.

Up: `session.update` once per connection (the user's `--session` object with
the audio formats this dialect needs), then `input_audio_buffer.append` per
chunk. Down: `response.output_audio.delta` is played; every delta carries a
segment naming its item and content part, so that when the meeting barges in
(`input_audio_buffer.speech_started`) the link can say how much of that part
was *heard*, and `conversation.item.truncate` tells the model exactly that,
never more than it sent (the API rejects that). Transcripts (of the agent's
audio or text replies, and of the user when the session transcribes input)
and `error` become stdout events; every other event type is ignored and
counted. Binary frames are read as JSON too; the API sends none.

The API ends every session after 60 minutes: a close 1001 whose reason says
"maximum duration". `reconnect_at_once` sees it, so the link reconnects with
the same session object at once, if the session lived a quarter of that
(`renew_after_s`); sooner, the close is retried like any failure. The new
session starts with an empty conversation: the model does not remember what
was said before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, ClassVar, Final

import msgspec

from sidecar.dialects.base import (
    MIXED,
    AgentCommand,
    AudioOut,
    ClearedOut,
    ClearPlayout,
    CutAudio,
    Dialect,
    DtmfOut,
    Encodable,
    ErrorOut,
    Heard,
    Incoming,
    Invalid,
    MarkOut,
    Options,
    PlayAudio,
    Session,
    Wire,
    WireAudio,
)
from sidecar.dialects.notices import (
    AgentError,
    Transcript,
    Unknown,
    decode_event,
    notice,
    show,
)
from sidecar.messages import MAX_MESSAGE_BYTES, ErrorCode, MessageError

RATE: Final = 24000
"""The only PCM rate the Realtime API takes and gives."""
BYTES_PER_MS: Final = RATE * 2 // 1000
AUDIO_FORMAT: Final[Mapping[str, object]] = {"type": "audio/pcm", "rate": RATE}
SESSION_CAP_S: Final = 60 * 60.0
"""The API ends every session after this long (1001 "maximum duration")."""
MAX_SEGMENTS: Final = 64
"""Reply parts remembered per connection: a barge-in only ever cuts a recent one."""


# -- client events (sidecar -> API) ---------------------------------------------------


class _ClientEvent(msgspec.Struct, frozen=True, tag_field="type"):
    pass


class SessionUpdate(_ClientEvent, frozen=True, tag="session.update"):
    session: dict[str, Any]


class InputAudioBufferAppend(_ClientEvent, frozen=True, tag="input_audio_buffer.append"):
    audio: bytes
    """Base64 on the wire, for free."""


class ConversationItemTruncate(_ClientEvent, frozen=True, tag="conversation.item.truncate"):
    item_id: str
    content_index: int
    audio_end_ms: int


ClientEvent = SessionUpdate | InputAudioBufferAppend | ConversationItemTruncate


# -- server events (API -> sidecar): only those acted on; fields beyond these are ignored --


class _ServerEvent(msgspec.Struct, frozen=True, tag_field="type"):
    pass


AUDIO_DELTA: Final = "response.output_audio.delta"
AUDIO_DONE: Final = "response.output_audio.done"
SPEECH_STARTED: Final = "input_audio_buffer.speech_started"
OUTPUT_TRANSCRIPT_DONE: Final = "response.output_audio_transcript.done"
OUTPUT_TEXT_DONE: Final = "response.output_text.done"
INPUT_TRANSCRIPT_COMPLETED: Final = "conversation.item.input_audio_transcription.completed"
ERROR: Final = "error"
SERVER_TYPES: Final = frozenset(
    {
        AUDIO_DELTA,
        AUDIO_DONE,
        SPEECH_STARTED,
        OUTPUT_TRANSCRIPT_DONE,
        OUTPUT_TEXT_DONE,
        INPUT_TRANSCRIPT_COMPLETED,
        ERROR,
    }
)
"""The event types acted on; every other type is ignored (and counted)."""

ContentIndex = Annotated[int, msgspec.Meta(ge=0)]


class OutputAudioDelta(_ServerEvent, frozen=True, tag=AUDIO_DELTA):
    item_id: str
    content_index: ContentIndex
    delta: bytes


class OutputAudioDone(_ServerEvent, frozen=True, tag=AUDIO_DONE):
    item_id: str
    content_index: ContentIndex


class SpeechStarted(_ServerEvent, frozen=True, tag=SPEECH_STARTED):
    """No field is read: nothing in it is needed to stop playback, so nothing may void it."""


class OutputTranscriptDone(_ServerEvent, frozen=True, tag=OUTPUT_TRANSCRIPT_DONE):
    item_id: str
    transcript: str


class OutputTextDone(_ServerEvent, frozen=True, tag=OUTPUT_TEXT_DONE):
    """A text-only reply (`output_modalities: ["text"]`): its text is the transcript."""

    item_id: str
    text: str


class InputTranscriptCompleted(_ServerEvent, frozen=True, tag=INPUT_TRANSCRIPT_COMPLETED):
    item_id: str
    transcript: str


class ErrorDetail(msgspec.Struct, frozen=True):
    message: str = ""
    type: str | None = None
    code: str | None = None
    param: str | None = None
    event_id: str | None = None


class ErrorEvent(_ServerEvent, frozen=True, tag=ERROR):
    error: ErrorDetail


ServerEvent = (
    OutputAudioDelta
    | OutputAudioDone
    | SpeechStarted
    | OutputTranscriptDone
    | OutputTextDone
    | InputTranscriptCompleted
    | ErrorEvent
)

_encoder: Final = msgspec.json.Encoder()
_server_decoder: Final = msgspec.json.Decoder(ServerEvent)


def encode(event: ClientEvent) -> str:
    return _encoder.encode(event).decode()


# -- segments: one content part of one reply item --------------------------------------


def segment_id(item_id: str, content_index: int) -> str:
    """`item_id:content_index`; split at the *last* colon, so any item id round-trips."""
    return f"{item_id}:{content_index}"


@dataclass(slots=True)
class _Segment:
    item_id: str
    content_index: int
    received_bytes: int = 0
    done: bool = False
    """`response.output_audio.done` came: the part's audio is complete."""
    cut: bool = False
    """A barge-in came after it started: what still arrives for it is not played."""
    truncated: bool = False

    @property
    def received_ms(self) -> int:
        # Rounded down: the API measures what it sent, and we may not claim more.
        return self.received_bytes // BYTES_PER_MS


@dataclass(slots=True)
class Statistics:
    audio_deltas: int = 0
    audio_bytes: int = 0
    dropped_deltas: int = 0
    """Deltas of a reply part already cut by a barge-in (in flight when it came)."""
    truncates: int = 0
    ignored: int = 0
    """Events of a type this dialect does not act on."""
    invalid: int = 0


class OpenAIRealtimeSession(Session):
    def __init__(
        self,
        session_object: dict[str, Any],
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_segments: int = MAX_SEGMENTS,
    ) -> None:
        self._opening = encode(SessionUpdate(session=session_object))
        self._max_bytes = max_message_bytes
        self._max_segments = max_segments
        self._segments: OrderedDict[str, _Segment] = OrderedDict()
        self._expired = False
        self._stats = Statistics()

    def opening(self) -> Sequence[Wire]:
        return (self._opening,)

    def statistics(self) -> Statistics:
        return replace(self._stats)

    # -- up ----------------------------------------------------------------------

    def encode(self, item: Encodable) -> Sequence[Wire]:
        match item:
            case AudioOut(stream=stream) if stream == MIXED:
                return (encode(InputAudioBufferAppend(audio=item.pcm)),)
            case ClearedOut(heard=Heard() as heard):
                return self._truncate(heard)
            case AudioOut() | ClearedOut() | MarkOut() | DtmfOut() | ErrorOut():
                # One mixed stream only; no marks, DTMF or error replies in this API.
                return ()
            case AgentCommand():
                return ()  # not yet spoken here

    def _truncate(self, heard: Heard) -> Sequence[Wire]:
        segment = self._segments.get(heard.segment)
        if segment is None or segment.truncated:
            # Not from this connection (an item of an earlier session, or long
            # forgotten), or already cut: the model has nothing to correct.
            return ()
        received = segment.received_ms
        if segment.done and heard.ms >= received:
            return ()  # heard in full: there is nothing to take back
        segment.truncated = True
        self._stats.truncates += 1
        end = min(max(heard.ms, 0), received)
        message = ConversationItemTruncate(
            item_id=segment.item_id, content_index=segment.content_index, audio_end_ms=end
        )
        return (encode(message),)

    # -- down --------------------------------------------------------------------

    def receive(self, message: Wire) -> Sequence[Incoming]:
        decoded = decode_event(_server_decoder, SERVER_TYPES, message, self._max_bytes)
        match decoded:
            case MessageError():
                self._stats.invalid += 1
                return (Invalid(decoded),)
            case Unknown():
                self._stats.ignored += 1
                return ()
            case OutputAudioDelta():
                return self._delta(decoded)
            case OutputAudioDone(item_id=item_id, content_index=index):
                segment = self._segments.get(segment_id(item_id, index))
                if segment is not None:
                    segment.done = True
                return ()
            case SpeechStarted():
                for segment in self._segments.values():
                    segment.cut = True
                return (ClearPlayout(),)
            case OutputTranscriptDone(item_id=item_id, transcript=text):
                return (notice(Transcript(role="assistant", text=text, item_id=item_id)),)
            case OutputTextDone(item_id=item_id, text=text):
                return (notice(Transcript(role="assistant", text=text, item_id=item_id)),)
            case InputTranscriptCompleted(item_id=item_id, transcript=text):
                return (notice(Transcript(role="user", text=text, item_id=item_id)),)
            case ErrorEvent(error=error):
                if error.code == "session_expired":
                    self._expired = True
                event = AgentError(
                    message=error.message,
                    code=error.code,
                    type=error.type,
                    param=error.param,
                    event_id=error.event_id,
                )
                return (notice(event),)

    def _delta(self, event: OutputAudioDelta) -> Sequence[Incoming]:
        pcm = event.delta
        if len(pcm) % 2:
            self._stats.invalid += 1
            error = MessageError(
                ErrorCode.ODD_LENGTH,
                f"`delta` decodes to {len(pcm)} bytes; 16-bit PCM needs an even count",
                AUDIO_DELTA,
            )
            return (Invalid(error),)
        key = segment_id(event.item_id, event.content_index)
        segment = self._segment(key, event.item_id, event.content_index)
        # Counted even when not played: the API measures truncation against what it sent.
        segment.received_bytes += len(pcm)
        self._stats.audio_deltas += 1
        self._stats.audio_bytes += len(pcm)
        if segment.cut:
            self._stats.dropped_deltas += 1
            return (CutAudio(len(pcm) // 2, RATE),) if pcm else ()
        if not pcm:
            return ()
        return (PlayAudio(pcm, RATE, key),)

    def _segment(self, key: str, item_id: str, content_index: int) -> _Segment:
        segment = self._segments.get(key)
        if segment is None:
            segment = self._segments[key] = _Segment(item_id, content_index)
            while len(self._segments) > self._max_segments:
                self._segments.popitem(last=False)
        return segment

    def reconnect_at_once(self, code: int | None, reason: str) -> bool:
        # OpenAI documents the 60-minute limit, with no warning before it; users
        # see close 1001 "Your session hit the maximum duration of 60 minutes."
        # and some see an `error` with code session_expired first. Only a close
        # frame ends a session: a connection lost after that error is a failure.
        if self._expired and code in (1000, 1001):
            return True
        return code == 1001 and "maximum duration" in reason.lower()


# -- the user's session object ------------------------------------------------------------


BETA_NAMES: Final[Mapping[str, str]] = {
    "modalities": "output_modalities",
    "voice": "audio.output.voice",
    "speed": "audio.output.speed",
    "input_audio_format": "audio.input.format",
    "output_audio_format": "audio.output.format",
    "turn_detection": "audio.input.turn_detection",
    "input_audio_transcription": "audio.input.transcription",
    "input_audio_noise_reduction": "audio.input.noise_reduction",
    "max_response_output_tokens": "max_output_tokens",
}
"""Beta-interface session fields and where the GA interface moved them."""


@dataclass(frozen=True, slots=True)
class Prepared:
    session: dict[str, Any]
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(slots=True)
class _Report:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def prepare_session(user: object) -> Prepared:
    """The `session` of our `session.update`: the user's object with our audio formats."""
    report = _Report()
    if not isinstance(user, dict):
        report.problems.append(
            f"--session must be a JSON object (a Realtime session), not {_json_type(user)}"
        )
        user = {}
    typ = user.get("type")
    if typ is not None and typ != "realtime":
        report.warnings.append(
            f'--session: `type` {show(typ)} replaced by "realtime": '
            "the sidecar needs a speech-to-speech session"
        )
    for name, ga_name in BETA_NAMES.items():
        if name in user:
            report.problems.append(
                f"--session: `{name}` is a beta-interface field; the GA interface "
                f"takes `{ga_name}` (the API would reject the whole session.update)"
            )
    session: dict[str, Any] = {"type": "realtime"}
    for key, value in user.items():
        if key != "type":
            session[key] = value
    session["audio"] = _audio(user.get("audio", {}), report)
    _behaviour(session, report)
    return Prepared(session, tuple(report.problems), tuple(report.warnings))


def _audio(audio: object, report: _Report) -> dict[str, Any]:
    if not isinstance(audio, dict):
        report.problems.append(f"--session: `audio` must be an object, not {_json_type(audio)}")
        audio = {}
    merged: dict[str, Any] = dict(audio)
    for direction, verb in (("input", "sends"), ("output", "plays")):
        part = audio.get(direction, {})
        if not isinstance(part, dict):
            report.problems.append(
                f"--session: `audio.{direction}` must be an object, not {_json_type(part)}"
            )
            part = {}
        given = part.get("format")
        if given is not None and not _is_our_format(given):
            report.warnings.append(
                f"--session: `audio.{direction}.format` {show(given)} replaced by "
                f"{show(AUDIO_FORMAT)}: the sidecar {verb} 24 kHz 16-bit PCM"
            )
        merged[direction] = {"format": dict(AUDIO_FORMAT)} | {
            k: v for k, v in part.items() if k != "format"
        }
    return merged


def _is_our_format(given: object) -> bool:
    # The API's own default rate for audio/pcm is 24000, so leaving it out agrees.
    return (
        isinstance(given, dict)
        and given.get("type") == "audio/pcm"
        and given.get("rate", RATE) == RATE
        and set(given) <= {"type", "rate"}
    )


def _behaviour(session: dict[str, Any], report: _Report) -> None:
    """Settings that are valid but leave the sidecar's user without an agent that talks."""
    audio_input = session["audio"]["input"]
    if "turn_detection" in audio_input:
        detection = audio_input["turn_detection"]
        if detection is None:
            report.warnings.append(
                "--session: turn detection is off (`audio.input.turn_detection` null): the "
                "model answers only a `response.create`, which the sidecar never sends"
            )
        elif isinstance(detection, dict) and detection.get("create_response") is False:
            report.warnings.append(
                "--session: `audio.input.turn_detection.create_response` is false: the model "
                "answers only a `response.create`, which the sidecar never sends"
            )
    modalities = session.get("output_modalities")
    if isinstance(modalities, list) and "audio" not in modalities:
        report.warnings.append(
            '--session: `output_modalities` has no "audio": the agent replies in text '
            "only and the bot plays nothing (transcripts still arrive)"
        )
    tools = session.get("tools")
    if isinstance(tools, list) and any(
        isinstance(t, dict) and t.get("type", "function") == "function" for t in tools
    ):
        report.warnings.append(
            "--session: function tools are declared, but the sidecar cannot return a "
            "function's result, so a turn that calls one ends without a spoken answer"
        )


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    if value is None:
        return "null"
    return "a number" if isinstance(value, int | float) else type(value).__name__


# -- the dialect ------------------------------------------------------------------------


class OpenAIRealtime(Dialect):
    name: ClassVar[str] = "openai-realtime"
    default_url: ClassVar[str | None] = "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    auth_env: ClassVar[str | None] = "OPENAI_API_KEY"
    uses_session: ClassVar[bool] = True
    # A quarter of the cap: a session-length close sooner than that is no
    # session's end but a server closing early, retried like any failure.
    renew_after_s: ClassVar[float | None] = SESSION_CAP_S / 4

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self._prepared = prepare_session(options.session)

    def uplink_audio(self, stream: str = MIXED) -> WireAudio:
        return WireAudio(RATE)

    def auth_headers(self, environ: dict[str, str], url: str) -> tuple[tuple[str, str], ...]:
        key = environ.get("OPENAI_API_KEY", "").strip()
        return (("Authorization", f"Bearer {key}"),) if key else ()

    def problems(self) -> Sequence[str]:
        return self._prepared.problems

    def warnings(self) -> Sequence[str]:
        return self._prepared.warnings

    def session(self) -> OpenAIRealtimeSession:
        return OpenAIRealtimeSession(
            self._prepared.session, max_message_bytes=self.options.max_message_bytes
        )
