"""ElevenLabs Agents (Conversational AI), spoken directly: no bridge server.

Up: `conversation_initiation_client_data` once per connection (the user's
`--session` object: overrides, dynamic variables, user id), then each chunk
of audio as `{"user_audio_chunk": <base64>}` (no `type`, by design). Down:
`conversation_initiation_metadata` names the audio formats of *this*
conversation, `audio` events carry the agent's voice, `interruption` is the
barge-in, `ping` wants a `pong` with its `event_id`, and the transcripts
(`agent_response`, `agent_response_correction`, `user_transcript`) become
stdout events.

Formats are per connection, not per run: the agent's settings choose any of
`pcm_8000 ... pcm_48000` or `ulaw_8000` for each direction, and only the
metadata says which. The capture keeps the run's one rate (`--sample-rate`);
the session converts each chunk to the announced input format (resampled,
mu-law encoded where asked) and plays the output at its announced rate (the
voice takes any). So no audio goes before the metadata (`audio_ready`).

Barge-in: an `interruption` clears the playout, and every `audio` still
arriving whose `event_id` is at or below the interruption's belongs to the
cut reply: counted (`CutAudio`), never played. That is what ElevenLabs' own
SDK does; there is no message to tell the server how much was heard (its
`agent_response_correction` reports the text as cut, server-side: it comes
as a second `transcript` with the same `item_id` as the reply's, replacing
its text). The bot's `clear` cuts the reply in flight the same way.

Every `event_id` names a turn; as `item_id` (transcripts) and `segment`
(audio) it is the turn's key.

The bot's commands: `client_tool_call` is a tool call, answered with
`client_tool_result`; `user_text` is `user_message`, `context`
`contextual_update` (remembered: a new connection sends them again after its
opening). ElevenLabs has no message for `say` or `instructions` mid-conversation.
It takes no history either: a new connection is told the conversation so far
in one more `contextual_update` after its opening (`history_text`).

A private agent connects through a signed URL that expires after 15 minutes:
with ELEVENLABS_API_KEY set, `url_request` asks the link to fetch one before
every connection (from ELEVENLABS_API_BASE, for tests and the EU residency),
and `url_from_answer` reads it. The key goes nowhere else.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import msgspec
from msgspec import UNSET, UnsetType

from sidecar.dialects.base import (
    MIXED,
    AddContext,
    AgentCommand,
    AudioOut,
    ClearedOut,
    ClearPlayout,
    CutAudio,
    Dialect,
    DialectFlag,
    DtmfOut,
    Encodable,
    ErrorOut,
    Incoming,
    Invalid,
    MarkOut,
    Options,
    Outgoing,
    PlayAudio,
    Session,
    ToolCallIn,
    ToolResult,
    UrlAnswerError,
    UrlRequest,
    UserSpeaking,
    UserText,
    Utf8Text,
    Wire,
    WireAudio,
)
from sidecar.dialects.briefing import Briefing
from sidecar.dialects.g711 import pcm16_from_ulaw, ulaw_from_pcm16
from sidecar.dialects.notices import AgentEvent, Transcript, Unknown, decode_event, notice, show
from sidecar.events import MemoryRestored
from sidecar.messages import MAX_MESSAGE_BYTES, ErrorCode, MessageError
from sidecar.pcm import SAMPLE_BYTES
from sidecar.resample import Resampler

if TYPE_CHECKING:
    from sidecar.memory import MemorySnapshot

DEFAULT_URL: Final = "wss://api.elevenlabs.io/v1/convai/conversation"
"""Needs `?agent_id=ID`; a private agent's signed URL is fetched instead."""
API_KEY_ENV: Final = "ELEVENLABS_API_KEY"
API_KEY_HEADER: Final = "xi-api-key"
API_BASE_ENV: Final = "ELEVENLABS_API_BASE"
DEFAULT_API_BASE: Final = "https://api.elevenlabs.io"
SIGNED_URL_PATH: Final = "/v1/convai/conversation/get-signed-url"
MAX_CALLS: Final = 256
"""Tool calls remembered per connection (the control plane answers or forgets
each long before: at most 64 wait for the bot)."""

AudioFormat = Literal[
    "pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000", "ulaw_8000"
]
"""The formats ElevenLabs announces (its asyncapi `AudioFormat`), either direction."""


@dataclass(frozen=True, slots=True)
class Format:
    rate: int
    mulaw: bool = False

    @classmethod
    def parse(cls, name: AudioFormat) -> Format:
        kind, _, rate = name.partition("_")
        return cls(int(rate), kind == "ulaw")

    @property
    def bytes_per_sample(self) -> int:
        return 1 if self.mulaw else SAMPLE_BYTES


# -- client messages (sidecar -> ElevenLabs) --------------------------------------------


class _ClientMessage(msgspec.Struct, frozen=True, tag_field="type", omit_defaults=True):
    pass


class ConversationInitiationClientData(
    _ClientMessage, frozen=True, kw_only=True, tag="conversation_initiation_client_data"
):
    """The SDK's `ConversationInitiationClientDataRequestInput` fields, passed through."""

    conversation_config_override: dict[str, Any] | UnsetType = UNSET
    custom_llm_extra_body: dict[str, Any] | UnsetType = UNSET
    user_id: str | UnsetType = UNSET
    source_info: dict[str, Any] | UnsetType = UNSET
    branch_id: str | UnsetType = UNSET
    environment: str | UnsetType = UNSET
    starting_workflow_node_id: str | UnsetType = UNSET
    procedure_ids: list[str] | UnsetType = UNSET
    start_procedure_ids: list[str] | UnsetType = UNSET
    dynamic_variables: dict[str, Any] | UnsetType = UNSET


class UserAudioChunk(msgspec.Struct, frozen=True):
    """The one message without a `type`: the audio, base64 on the wire."""

    user_audio_chunk: bytes


class Pong(_ClientMessage, frozen=True, tag="pong"):
    event_id: int


class ClientToolResult(_ClientMessage, frozen=True, tag="client_tool_result"):
    tool_call_id: str
    result: str
    is_error: bool


class UserMessage(_ClientMessage, frozen=True, tag="user_message"):
    text: str


class ContextualUpdate(_ClientMessage, frozen=True, tag="contextual_update"):
    text: str


ClientMessage = (
    ConversationInitiationClientData
    | UserAudioChunk
    | Pong
    | ClientToolResult
    | UserMessage
    | ContextualUpdate
)

_encoder: Final = msgspec.json.Encoder()


def encode(message: ClientMessage) -> str:
    return _encoder.encode(message).decode()


# -- server messages (ElevenLabs -> sidecar): only those acted on -------------------------


class _ServerMessage(msgspec.Struct, frozen=True, tag_field="type"):
    pass


class MetadataEvent(msgspec.Struct, frozen=True):
    agent_output_audio_format: AudioFormat
    user_input_audio_format: AudioFormat
    conversation_id: str | None = None


class Metadata(_ServerMessage, frozen=True, tag="conversation_initiation_metadata"):
    conversation_initiation_metadata_event: MetadataEvent


class AudioEvent(msgspec.Struct, frozen=True):
    audio_base_64: bytes
    event_id: int


class Audio(_ServerMessage, frozen=True, tag="audio"):
    audio_event: AudioEvent


class InterruptionEvent(msgspec.Struct, frozen=True):
    event_id: int


class Interruption(_ServerMessage, frozen=True, tag="interruption"):
    interruption_event: InterruptionEvent


class PingEvent(msgspec.Struct, frozen=True):
    event_id: int
    ping_ms: int | None = None


class Ping(_ServerMessage, frozen=True, tag="ping"):
    ping_event: PingEvent


class AgentResponseEvent(msgspec.Struct, frozen=True):
    agent_response: str
    event_id: int | None = None


class AgentResponse(_ServerMessage, frozen=True, tag="agent_response"):
    agent_response_event: AgentResponseEvent


class CorrectionEvent(msgspec.Struct, frozen=True):
    corrected_agent_response: str
    original_agent_response: str = ""
    event_id: int | None = None


class AgentResponseCorrection(_ServerMessage, frozen=True, tag="agent_response_correction"):
    agent_response_correction_event: CorrectionEvent


class UserTranscriptionEvent(msgspec.Struct, frozen=True):
    user_transcript: str
    event_id: int | None = None


class UserTranscript(_ServerMessage, frozen=True, tag="user_transcript"):
    user_transcription_event: UserTranscriptionEvent


class ToolCallEvent(msgspec.Struct, frozen=True):
    tool_name: str
    tool_call_id: str
    parameters: msgspec.Raw = msgspec.Raw(b"{}")
    """Kept as the vendor's text, for the bot's `arguments_json`."""
    event_id: int | None = None


class ClientToolCall(_ServerMessage, frozen=True, tag="client_tool_call"):
    client_tool_call: ToolCallEvent


ServerMessage = (
    Metadata
    | Audio
    | Interruption
    | Ping
    | AgentResponse
    | AgentResponseCorrection
    | UserTranscript
    | ClientToolCall
)
SERVER_TYPES: Final = frozenset(
    {
        "conversation_initiation_metadata",
        "audio",
        "interruption",
        "ping",
        "agent_response",
        "agent_response_correction",
        "user_transcript",
        "client_tool_call",
    }
)
"""The message types acted on; every other type (vad_score, tentative
transcripts, ...) is ignored and counted."""

_server_decoder: Final = msgspec.json.Decoder(ServerMessage)


def _key(event_id: int | None) -> str | None:
    return None if event_id is None else str(event_id)


# -- the session ------------------------------------------------------------------------------


@dataclass(slots=True)
class Statistics:
    audio_events: int = 0
    audio_bytes: int = 0
    cut_events: int = 0
    """`audio` of a reply an interruption (or the bot's `clear`) cut: not played."""
    pongs: int = 0
    tool_calls: int = 0
    ignored: int = 0
    """Messages of a type this dialect does not act on (vad_score, ...)."""
    invalid: int = 0


class ElevenLabsAgentSession(Session):
    def __init__(
        self,
        initiation: ConversationInitiationClientData,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        briefing: Briefing | None = None,
        history: MemorySnapshot | None = None,
    ) -> None:
        self._initiation = initiation
        self._history = history
        self._briefing = briefing if briefing is not None else Briefing()
        self._max_bytes = max_message_bytes
        self._input: Format | None = None
        self._output: Format | None = None
        self._resampler: Resampler | None = None
        self._cut_through = 0
        """Audio whose event_id is at or below this is of a cut reply."""
        self._last_audio_id = 0
        self._owed: list[Wire] = []
        self._calls: OrderedDict[str, str] = OrderedDict()
        """Open client tool calls: id -> name."""
        self._stats = Statistics()
        self.conversation_id: str | None = None

    def opening(self) -> Sequence[Wire]:
        # The bot's context so far: a new conversation knows nothing of it otherwise.
        contexts = [encode(ContextualUpdate(text)) for text in self._briefing.contexts]
        told = history_text(self._history) if self._history is not None else ""
        if told:
            contexts.append(encode(ContextualUpdate(told)))
        return (encode(self._initiation), *contexts)

    def restored(self) -> MemoryRestored | None:
        history = self._history
        if history is None or not history_text(history):
            return None
        return MemoryRestored(
            turns=history.turn_count, chars=history.chars, dropped_turns=history.dropped_turns
        )

    @property
    def audio_ready(self) -> bool:
        return self._input is not None

    @property
    def formats(self) -> tuple[Format, Format] | None:
        """(input, output) as the server announced them; None before the metadata."""
        if self._input is None or self._output is None:
            return None
        return self._input, self._output

    def statistics(self) -> Statistics:
        return replace(self._stats)

    def replies(self) -> Sequence[Wire]:
        owed, self._owed = self._owed, []
        return tuple(owed)

    # -- up ----------------------------------------------------------------------------

    def encode(self, item: Encodable) -> Sequence[Wire]:
        match item:
            case AudioOut(stream=stream) if stream == MIXED:
                return tuple(wire.data.decode() for wire in self._audio_up(item))
            case ClearedOut(by_bot=True):
                # No message stops a reply here: what is left of it is not played.
                self._cut_through = max(self._cut_through, self._last_audio_id)
                return ()
            case AudioOut() | ClearedOut() | MarkOut() | DtmfOut() | ErrorOut():
                # One mixed stream; no marks, DTMF, error replies or truncation here.
                return ()
            case ToolResult(call_id=call_id, output=output):
                if self._calls.pop(call_id, None) is None:
                    return ()  # a call of an earlier connection, or answered already
                return (encode(ClientToolResult(call_id, output, False)),)
            case UserText(text=text):
                return (encode(UserMessage(text)),)
            case AddContext(text=text):
                self._briefing.add_context(text)
                return (encode(ContextualUpdate(text)),)
            case AgentCommand():
                return ()  # refused before it was queued (`ElevenLabsAgent.commands`)

    def wire_utf8(self, item: Outgoing) -> Sequence[Wire | Utf8Text]:
        # Audio, nearly every message: msgspec's bytes go out as they are.
        if isinstance(item, AudioOut) and item.stream == MIXED:
            return self._audio_up(item)
        return self.wire(item)

    def _audio_up(self, item: AudioOut) -> Sequence[Utf8Text]:
        target = self._input
        if target is None:
            return ()  # held by the outbox until the metadata: never asked for
        resampler = self._resampler
        if resampler is None or resampler.in_rate != item.rate:
            resampler = self._resampler = Resampler(item.rate, target.rate)
        pcm = resampler.process(item.pcm)
        if not pcm:
            return ()  # the converter's hold-back: it comes out with the next chunk
        data = ulaw_from_pcm16(pcm) if target.mulaw else pcm
        return (Utf8Text(_encoder.encode(UserAudioChunk(data))),)

    # -- down --------------------------------------------------------------------------

    def receive(self, message: Wire) -> Sequence[Incoming]:
        decoded = decode_event(_server_decoder, SERVER_TYPES, message, self._max_bytes)
        match decoded:
            case MessageError():
                self._stats.invalid += 1
                return (Invalid(decoded),)
            case Unknown():
                self._stats.ignored += 1
                return ()
            case Metadata(conversation_initiation_metadata_event=event):
                self._input = Format.parse(event.user_input_audio_format)
                self._output = Format.parse(event.agent_output_audio_format)
                self._resampler = None
                self.conversation_id = event.conversation_id
                return (
                    notice(
                        AgentEvent(
                            name="conversation_initiation_metadata",
                            request_id=event.conversation_id,
                            text=f"input {event.user_input_audio_format}, "
                            f"output {event.agent_output_audio_format}",
                        )
                    ),
                )
            case Audio(audio_event=event):
                return self._audio_down(event)
            case Interruption(interruption_event=event):
                self._cut_through = max(self._cut_through, event.event_id)
                # The meeting spoke over the agent: no quiet moment to rotate in.
                return (ClearPlayout(), UserSpeaking(), notice(AgentEvent(name="interruption")))
            case Ping(ping_event=event):
                self._stats.pongs += 1
                self._owed.append(encode(Pong(event.event_id)))
                return ()
            case AgentResponse(agent_response_event=event):
                text, key = event.agent_response.strip(), _key(event.event_id)
                said = Transcript(role="assistant", text=text, item_id=key, segment=key)
                return (notice(said),)
            case AgentResponseCorrection(agent_response_correction_event=event):
                # What was heard of the cut reply: the same item, its text replaced.
                text, key = event.corrected_agent_response.strip(), _key(event.event_id)
                said = Transcript(role="assistant", text=text, item_id=key, segment=key)
                return (notice(said),)
            case UserTranscript(user_transcription_event=event):
                text, key = event.user_transcript.strip(), _key(event.event_id)
                return (notice(Transcript(role="user", text=text, item_id=key)),)
            case ClientToolCall(client_tool_call=call):
                self._calls[call.tool_call_id] = call.tool_name
                while len(self._calls) > MAX_CALLS:
                    self._calls.popitem(last=False)
                self._stats.tool_calls += 1
                arguments = bytes(call.parameters).decode()
                return (ToolCallIn(call.tool_call_id, call.tool_name, arguments),)

    def _audio_down(self, event: AudioEvent) -> Sequence[Incoming]:
        output = self._output
        if output is None:
            self._stats.invalid += 1
            text = "`audio` before `conversation_initiation_metadata`: its format is unknown"
            return (Invalid(MessageError(ErrorCode.INVALID_FIELD, text, "audio")),)
        data = event.audio_base_64
        if not output.mulaw and len(data) % SAMPLE_BYTES:
            self._stats.invalid += 1
            text = (
                f"`audio_event.audio_base_64` decodes to {len(data)} bytes; "
                "16-bit PCM needs an even count"
            )
            return (Invalid(MessageError(ErrorCode.ODD_LENGTH, text, "audio")),)
        self._stats.audio_events += 1
        self._stats.audio_bytes += len(data)
        self._last_audio_id = max(self._last_audio_id, event.event_id)
        samples = len(data) // output.bytes_per_sample
        if event.event_id <= self._cut_through:
            self._stats.cut_events += 1
            return (CutAudio(samples, output.rate),) if samples else ()
        if not samples:
            return ()
        pcm = pcm16_from_ulaw(data) if output.mulaw else data
        return (PlayAudio(pcm, output.rate, str(event.event_id)),)


# -- the user's --session: the initiation data ---------------------------------------------


class _UserInitiation(msgspec.Struct, forbid_unknown_fields=True):
    type: Any = UNSET
    conversation_config_override: dict[str, Any] | UnsetType = UNSET
    custom_llm_extra_body: dict[str, Any] | UnsetType = UNSET
    user_id: str | UnsetType = UNSET
    source_info: dict[str, Any] | UnsetType = UNSET
    branch_id: str | UnsetType = UNSET
    environment: str | UnsetType = UNSET
    starting_workflow_node_id: str | UnsetType = UNSET
    procedure_ids: list[str] | UnsetType = UNSET
    start_procedure_ids: list[str] | UnsetType = UNSET
    dynamic_variables: dict[str, Any] | UnsetType = UNSET


@dataclass(frozen=True, slots=True)
class Prepared:
    initiation: ConversationInitiationClientData
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def prepare_initiation(user: object) -> Prepared:
    """Our `conversation_initiation_client_data`: the user's, checked."""
    empty = ConversationInitiationClientData()
    if not isinstance(user, dict):
        return Prepared(empty, ("--session must be a JSON object (conversation initiation data)",))
    try:
        given = msgspec.convert(user, _UserInitiation)
    except msgspec.ValidationError as exc:
        reason, _, where = str(exc).partition(" - at `")
        field = where.rstrip("`").removeprefix("$").removeprefix(".")
        detail = f"`{field}`: {reason}" if field else reason
        problem = f"--session is not ElevenLabs conversation initiation data: {detail}"
        return Prepared(empty, (problem,))
    warnings: list[str] = []
    if given.type is not UNSET and given.type != "conversation_initiation_client_data":
        warnings.append(
            f"--session: `type` {show(given.type)} replaced by "
            '"conversation_initiation_client_data"'
        )
    override = given.conversation_config_override
    conversation = override.get("conversation") if isinstance(override, dict) else None
    if isinstance(conversation, dict) and conversation.get("text_only") is True:
        warnings.append(
            "--session: `conversation_config_override.conversation.text_only` is true: "
            "the agent replies in text only and the bot plays nothing"
        )
    fields = {f: getattr(given, f) for f in given.__struct_fields__ if f != "type"}
    return Prepared(ConversationInitiationClientData(**fields), (), tuple(warnings))


# -- the conversation so far, for a new connection ---------------------------------------------

HISTORY_HEADING: Final = (
    "The conversation so far (the connection was renewed; go on from here, do not greet again):"
)


def history_text(history: MemorySnapshot) -> str:
    """The turns as one contextual update: ElevenLabs takes no history in the
    initiation, and a contextual update is its one way to tell the agent
    something without a turn. The bot's `context` texts are left out: the
    Briefing sends them again on their own. Empty: nothing to tell."""
    # Here, not at the top: sidecar.memory imports the dialect seam, whose
    # package imports this module.
    from sidecar.memory import AgentTurn, CommandKind, CommandTurn, ToolTurn, UserTurn

    lines: list[str] = []
    for turn in history.turns:
        match turn:
            case UserTurn(text=text):
                lines.append(f"User: {text}")
            case AgentTurn(text=text):
                lines.append(f"Agent: {text}")
            case ToolTurn(name=name, arguments_json=arguments, output=output):
                result = "no result" if output is None else output
                lines.append(f"Tool {name}({arguments}) -> {result}")
            case CommandTurn(kind=CommandKind.USER_TEXT, text=text):
                lines.append(f"User: {text}")
            case CommandTurn(kind=CommandKind.SAY, text=text):
                lines.append(f"Agent: {text}")
    return "\n".join([HISTORY_HEADING, *lines]) if lines else ""


# -- the signed URL of a private agent ----------------------------------------------------------


class _SignedUrl(msgspec.Struct):
    signed_url: str


_signed_url_decoder: Final = msgspec.json.Decoder(_SignedUrl)


def agent_id_of(url: str) -> str | None:
    ids = parse_qs(urlsplit(url).query).get("agent_id")
    return ids[0] if ids else None


def signed_url_request(environ: Mapping[str, str], agent_id: str) -> UrlRequest | None:
    """The get-signed-url request for a private agent; None without a key (a public agent)."""
    key = environ.get(API_KEY_ENV, "").strip()
    if not key:
        return None
    base = environ.get(API_BASE_ENV, "").strip() or DEFAULT_API_BASE
    url = f"{base.rstrip('/')}{SIGNED_URL_PATH}?{urlencode({'agent_id': agent_id})}"
    return UrlRequest(url, ((API_KEY_HEADER, key),))


def signed_url_from(body: bytes) -> str:
    """The websocket URL in get-signed-url's answer; UrlAnswerError naming what is
    wrong, never quoting the answer (a signed URL is a credential)."""
    try:
        url = _signed_url_decoder.decode(body).signed_url
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UrlAnswerError("get-signed-url answered without a `signed_url` string") from None
    if urlsplit(url).scheme not in ("ws", "wss"):
        raise UrlAnswerError(
            "get-signed-url answered a `signed_url` that is not a ws:// or wss:// URL"
        )
    return url


def with_agent_id(url: str, agent_id: str) -> str:
    """`url` asking for `agent_id` (replacing any agent_id it names)."""
    parts = urlsplit(url)
    query = [(k, v) for k, vs in parse_qs(parts.query).items() for v in vs if k != "agent_id"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("agent_id", agent_id)])))


# -- the dialect ----------------------------------------------------------------------------------


class ElevenLabsAgent(Dialect):
    name: ClassVar[str] = "elevenlabs-agent"
    summary: ClassVar[str] = "ElevenLabs Agents (Conversational AI)"
    default_url: ClassVar[str | None] = DEFAULT_URL
    auth_envs: ClassVar[tuple[str, ...]] = (API_KEY_ENV,)
    auth_header: ClassVar[str] = API_KEY_HEADER
    auth_scheme: ClassVar[str] = ""
    auth_required: ClassVar[bool] = False
    """Public agents take no key; a private one's key fetches its signed URL."""
    flags: ClassVar[tuple[DialectFlag, ...]] = (
        DialectFlag("--session", "the conversation_initiation_client_data (overrides, variables)"),
        DialectFlag("--agent-id", "the agent to talk to (else agent_id in --url)", metavar="ID"),
    )
    sample_rates: ClassVar[tuple[int, ...]] = (8000, 16000, 24000)
    """What the capture makes; each session converts to the format its server announces."""
    default_sample_rate: ClassVar[int] = 16000
    server_audio: ClassVar[str] = "audio"
    commands: ClassVar[frozenset[str]] = frozenset({"tool_result", "user_text", "context"})

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self._prepared = prepare_initiation(options.session)
        self.briefing = Briefing()
        """The bot's `context` texts, sent again to every later conversation."""

    def refuses(self, command: str) -> str | None:
        if command == "say":
            return f"--protocol {self.name} has no message that makes the agent speak a text"
        if command == "instructions":
            return (
                f"--protocol {self.name} takes instructions only when a conversation starts "
                "(`conversation_config_override.agent.prompt` in --session)"
            )
        return super().refuses(command)

    def uplink_audio(self, stream: str = MIXED) -> WireAudio:
        # The capture's rate; each session converts to the format its server announces.
        return WireAudio(self.options.sample_rate)

    @property
    def agent_id(self) -> str | None:
        return self.options.extra.get("--agent-id") or None

    def auth_headers(self, environ: dict[str, str], url: str) -> tuple[tuple[str, str], ...]:
        # The key goes to get-signed-url only: the websocket takes the signed URL.
        return ()

    def connect_url(self, url: str) -> str:
        # --agent-id names the agent in the URL a public agent is reached at, and
        # in the one a private agent's signed URL is asked for.
        agent = self.agent_id
        return url if agent is None else with_agent_id(url, agent)

    def url_request(self, url: str, environ: Mapping[str, str]) -> UrlRequest | None:
        # A key means a private agent (or one that wants it): a signed URL, fresh
        # for every connection, as it expires after 15 minutes.
        agent = self.agent_id or agent_id_of(url)
        return None if agent is None else signed_url_request(environ, agent)

    def url_from_answer(self, url: str, status: int, body: bytes) -> str:
        return signed_url_from(body)

    def problems(self) -> Sequence[str]:
        agent = self.options.extra.get("--agent-id")
        if agent is not None and not agent.strip():
            return (*self._prepared.problems, "--agent-id must not be empty")
        return self._prepared.problems

    def warnings(self) -> Sequence[str]:
        return self._prepared.warnings

    def session(self, history: MemorySnapshot | None = None) -> ElevenLabsAgentSession:
        return ElevenLabsAgentSession(
            self._prepared.initiation,
            max_message_bytes=self.options.max_message_bytes,
            briefing=self.briefing,
            history=history,
        )
