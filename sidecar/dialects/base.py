"""The dialect seam: one wire protocol, as pure code (sans-I/O).

A *dialect* knows one websocket protocol and nothing else; the link, the
uplink and the downlink only ever speak the neutral vocabulary below:

- what travels up, queued in the outbox until the link can send it
  (`AudioOut`, `DtmfOut`, and the replies `MarkOut`, `ErrorOut`,
  `ClearedOut`);
- what comes down, decoded from one server message (`PlayAudio`,
  `ClearPlayout`, `MarkIn`, `CutAudio`, `Invalid`, `Notice`).

Encoding happens when a message is *sent*, not when it is queued, because
what the bytes say can depend on the connection: a Twilio stream gets a new
`streamSid` and restarts its `sequenceNumber` on every reconnect, and the
audio replayed after a reconnect must carry the new ones. So a `Dialect` is
the per-run factory (formats, URL and auth defaults) and a `Session` is one
connection's state machine: opening messages, encode, decode, closing.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Final, Literal

from sidecar import events
from sidecar.messages import MAX_MESSAGE_BYTES, MessageError
from sidecar.pcm import SAMPLE_BYTES

if TYPE_CHECKING:
    from sidecar.memory import MemorySnapshot

Wire = str | bytes
"""One websocket message: text (str) or binary (bytes)."""


@dataclass(frozen=True, slots=True)
class Utf8Text:
    """A text message whose UTF-8 bytes are already made (msgspec's output).

    What `Session.wire_utf8` may hand the link instead of a str: the link
    frames it as it is, where a str would be decoded from msgspec's bytes by
    the dialect only to be encoded again by wsproto, per message.
    """

    data: bytes

    def __len__(self) -> int:
        return len(self.data)


MIXED = "mixed"
"""The stream key of the meeting's mixed audio; participants use their UUID."""

Encoding = Literal["pcm16", "mulaw"]


# -- up: what the paths hand to the link -----------------------------------------


@dataclass(frozen=True, slots=True)
class AudioOut:
    """One chunk of captured audio: s16le mono at the dialect's rate for its stream."""

    pcm: bytes
    rate: int
    timestamp_ms: int
    """Unix ms capture time of the first sample."""
    stream: str = MIXED

    @property
    def samples(self) -> int:
        return len(self.pcm) // SAMPLE_BYTES

    @property
    def ms(self) -> float:
        return len(self.pcm) * (1000.0 / SAMPLE_BYTES) / self.rate


@dataclass(frozen=True, slots=True)
class DtmfOut:
    digit: str


@dataclass(frozen=True, slots=True)
class MarkOut:
    """A server's mark, answered: its audio was played, or a clear dropped it."""

    name: str
    played: bool


@dataclass(frozen=True, slots=True)
class ErrorOut:
    """The reply to an invalid server message, where the dialect has one."""

    error: MessageError


@dataclass(frozen=True, slots=True)
class Heard:
    """How much of one segment (a reply, an item) the meeting actually heard."""

    segment: str
    ms: int


@dataclass(frozen=True, slots=True)
class ClearedOut:
    """The playout was cleared; `heard` is the segment cut short."""

    heard: Heard | None = None
    by_bot: bool = False
    """The bot's `clear` command, not the server's barge-in: the agent is
    interrupted too, where the dialect has a way to say so."""


# -- up: the bot's commands (the control channel), one neutral item each ----------


class AgentCommand:
    """A command each dialect encodes its own way, or not at all (`COMMANDS`)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ToolResult(AgentCommand):
    """The answer to the agent's tool call `call_id`; `output` is text (JSON text
    for anything but a string)."""

    call_id: str
    output: str


@dataclass(frozen=True, slots=True)
class Say(AgentCommand):
    """Make the agent say `text` (verbatim where the vendor can)."""

    text: str


@dataclass(frozen=True, slots=True)
class UserText(AgentCommand):
    """A user turn as text: the agent answers it as if it had been spoken."""

    text: str


@dataclass(frozen=True, slots=True)
class AddContext(AgentCommand):
    """Something the agent should know, with no reply; kept for later sessions."""

    text: str


@dataclass(frozen=True, slots=True)
class SetInstructions(AgentCommand):
    """New instructions (the system prompt); kept for later sessions."""

    text: str


@dataclass(frozen=True, slots=True)
class RawSend:
    """One JSON object's text, sent as one text message as is (`send`)."""

    message: str


@dataclass(frozen=True, slots=True)
class SessionReply:
    """Messages a session answers the server with on its own (a pong, a
    deferred `response.create`): already encoded, so only `owner` may send
    them; a later connection's session drops them."""

    owner: Session
    wires: tuple[Wire, ...]


Command = AgentCommand | RawSend
Encodable = AudioOut | DtmfOut | MarkOut | ErrorOut | ClearedOut | AgentCommand
"""What a dialect's `Session.encode` is given; `Session.wire` does the rest."""
Outgoing = Encodable | RawSend | SessionReply
Control = DtmfOut | MarkOut | ErrorOut | ClearedOut | Command | SessionReply

COMMANDS: Final[dict[type[AgentCommand], str]] = {
    ToolResult: "tool_result",
    Say: "say",
    UserText: "user_text",
    AddContext: "context",
    SetInstructions: "instructions",
}
"""The commands a dialect may or may not be able to encode, by item type; the
rest (mute, unmute, clear, send) every dialect does."""


# -- down: what one server message means --------------------------------------------


@dataclass(frozen=True, slots=True)
class PlayAudio:
    """Audio for the bot to play: s16le mono at `rate`."""

    pcm: bytes
    rate: int
    segment: str | None = None
    """What this audio belongs to (an agent's reply item), so a barge-in can
    say how much of it was heard; None where the dialect has no such notion."""


@dataclass(frozen=True, slots=True)
class ClearPlayout:
    """Drop everything queued for the bot (barge-in); pending marks are answered."""


@dataclass(frozen=True, slots=True)
class MarkIn:
    """Answer `name` once everything received before it has been played."""

    name: str


@dataclass(frozen=True, slots=True)
class CutAudio:
    """Audio the server sent for what a barge-in already cut (a reply still in
    flight when it came): never played, but counted, so the server's audio
    adds up in `stats` (a `downlink_cleared` drop)."""

    samples: int
    rate: int


@dataclass(frozen=True, slots=True)
class Invalid:
    """The message was not understood; it is ignored and the stream goes on."""

    error: MessageError


@dataclass(frozen=True, slots=True)
class Notice:
    """Something for the bot to know (a transcript, an agent's error): a stdout event."""

    event: events.Event


@dataclass(frozen=True, slots=True)
class ToolCallIn:
    """The agent calls a tool the bot must run (client-side function calling)."""

    call_id: str
    name: str
    arguments_json: str
    """The vendor's text of the arguments, as it came."""


@dataclass(frozen=True, slots=True)
class ToolCallCancelledIn:
    """The agent no longer wants call `call_id` answered."""

    call_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The link's connection ended (from the link, not a dialect): what belonged
    to its session (a pending tool call) died with it."""


@dataclass(frozen=True, slots=True)
class SessionExpiring:
    """The server says this session ends within `within_s` seconds (Gemini's
    goAway): the link rotates to a new one at the next quiet moment before then."""

    within_s: float


@dataclass(frozen=True, slots=True)
class UserSpeaking:
    """The server heard the meeting start a turn (its VAD): the link waits for a
    quiet moment before rotating the session."""

    item: str | None = None
    """The vendor's id of the turn whose transcript comes later, if it has one."""


Incoming = (
    PlayAudio
    | ClearPlayout
    | MarkIn
    | CutAudio
    | Invalid
    | Notice
    | ToolCallIn
    | ToolCallCancelledIn
    | SessionEnded
    | SessionExpiring
    | UserSpeaking
)


# -- the dialect ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireAudio:
    """The audio format of one direction (or stream kind) on the wire."""

    rate: int
    encoding: Encoding = "pcm16"


@dataclass(frozen=True, slots=True)
class Options:
    """What a dialect needs from the run's settings; each dialect reads its part."""

    bot_id: str = "bot"
    sample_rate: int = 16000
    participant_sample_rate: int = 16000
    chunk_ms: int = 20
    max_message_bytes: int = MAX_MESSAGE_BYTES
    stream_params: tuple[tuple[str, str], ...] = ()
    call_sid: str | None = None
    account_sid: str | None = None
    session: dict[str, object] = field(default_factory=dict)
    """The user's session object (--session), for dialects that take one."""
    memory: bool = True
    """--memory: a new agent session may be given the conversation so far,
    by the sidecar's record or by the vendor's own resumption."""
    extra: Mapping[str, str] = field(default_factory=dict)
    """The values of the dialect's own flags (`DialectFlag` not in
    SHARED_FLAGS), by flag name (`--agent-id`); a flag not given is absent."""


@dataclass(frozen=True, slots=True)
class DialectFlag:
    """A `run` flag that means something to some dialects only.

    The flags in SHARED_FLAGS exist once in the CLI, whichever dialects take
    them; any other name is the dialect's own, added to the CLI for it (a
    string value, read from `Options.extra`). Given with a dialect that does
    not list it, a flag is a usage error."""

    name: str
    help: str
    """What the flag means to this dialect (the CLI's help joins them)."""
    metavar: str = "VALUE"
    """For a flag of the dialect's own: how the help names its value."""


SHARED_FLAGS: Final = ("--stream-param", "--call-sid", "--account-sid", "--session")
"""The dialect flags the CLI defines itself (their values have their own
shapes and fields); a dialect's `flags` says which of them it takes."""


@dataclass(frozen=True, slots=True)
class UrlRequest:
    """An HTTP GET the link makes before a connection (a signed URL's fetch);
    the dialect reads the websocket URL from its answer (`url_from_answer`)."""

    url: str
    """http:// or https://"""
    headers: tuple[tuple[str, str], ...] = ()


class UrlAnswerError(Exception):
    """The answer to a `UrlRequest` holds no URL; the message says why, and
    never quotes the answer (it may hold a token)."""


class Session(abc.ABC):
    """One connection's protocol state. Nothing here does I/O or reads a clock
    except through its arguments."""

    @abc.abstractmethod
    def opening(self) -> Sequence[Wire]:
        """Sent, in order, right after the connection opens."""

    def closing(self) -> Sequence[Wire]:
        """Sent before a clean close (the sidecar stopping)."""
        return ()

    @property
    def audio_ready(self) -> bool:
        """May audio be sent yet? (A dialect may wait for the server's go-ahead.)"""
        return True

    def wire(self, item: Outgoing) -> Sequence[Wire]:
        """The messages that carry `item` on this connection (what the link calls):
        the items every dialect sends alike here, the rest by `encode`."""
        match item:
            case RawSend(message=message):
                return (message,)
            case SessionReply(owner=owner, wires=wires):
                # Encoded for one connection: a later one's session drops them.
                return wires if owner is self else ()
        return self.encode(item)

    def wire_utf8(self, item: Outgoing) -> Sequence[Wire | Utf8Text]:
        """What the link sends for `item`: `wire(item)`, where a dialect may
        give a text message as its UTF-8 bytes (Utf8Text), the same text."""
        return self.wire(item)

    @abc.abstractmethod
    def encode(self, item: Encodable) -> Sequence[Wire]:
        """The messages that carry `item`; empty where the dialect cannot say it
        (an error reply in a dialect without one, DTMF in one without DTMF, a
        command it does not support: those are refused before being queued)."""

    @abc.abstractmethod
    def receive(self, message: Wire) -> Sequence[Incoming]:
        """Decode one server message; never raises for bad input."""

    keepalive_s: ClassVar[float | None] = None
    """A dialect whose server wants a message while no audio flows sets the period."""

    def keepalive(self) -> Sequence[Wire]:
        return ()

    @property
    def commands_dropped(self) -> int:
        """The bot's commands this session held and had to let go past its
        bounds (OpenAI: a `say` waiting for its turn); counted in `stats`."""
        return 0

    def replies(self) -> Sequence[Wire]:
        """Messages the last `receive` made the session owe the server (a pong,
        a deferred `response.create`); the link takes them after each
        `receive` and queues them as a `SessionReply`, in order with the rest."""
        return ()

    @property
    def replying(self) -> bool:
        """Is the agent producing a reply whose audio may not have arrived yet
        (a response in progress)? The link does not rotate the session then."""
        return False

    def restored(self) -> events.MemoryRestored | None:
        """What of the conversation this session's opening carried over (the
        link emits it once the opening is sent); None: nothing was given."""
        return None

    def reconnect_at_once(self, code: int | None, reason: str) -> bool:
        """Does this close say it is the server's routine end of a session (not
        a failure), to be followed by a new connection without the retry delay?
        The link believes it only of a session that lived the dialect's
        `renew_after_s`."""
        return False


class Dialect(abc.ABC):
    name: ClassVar[str]
    per_participant: ClassVar[bool] = False
    """Has a message for one participant's stream."""
    error_replies: ClassVar[bool] = False
    """Answers an invalid server message on the wire (else only on stdout)."""
    summary: ClassVar[str] = ""
    """One line for the CLI's help and the docs: who speaks this protocol."""
    default_url: ClassVar[str | None] = None
    auth_env: ClassVar[str | None] = None
    """The environment variable holding the vendor's key, for `auth_headers`
    (shorthand for a one-name `auth_envs`)."""
    auth_envs: ClassVar[tuple[str, ...]] = ()
    """Where there are several (GEMINI_API_KEY, GOOGLE_API_KEY): the first set wins."""
    auth_header: ClassVar[str] = "Authorization"
    """The handshake header `auth_headers` makes; one the user gives wins."""
    auth_required: ClassVar[bool] = True
    """Must a key be set (or a header given) to reach `default_url`? False
    where the vendor has public endpoints too (ElevenLabs' public agents)."""
    auth_alternatives: ClassVar[tuple[str, ...]] = ()
    """Other headers that carry a key to a compatible endpoint (Azure's
    `api-key`): with one of them given, no `auth_header` is made from the
    environment (it would hand the vendor's key to another's server)."""
    auth_scheme: ClassVar[str] = "Bearer"
    """The word before the key in `auth_header` (Bearer, Token); "" for the key alone
    (`xi-api-key: KEY`, `api-key: KEY`)."""
    flags: ClassVar[tuple[DialectFlag, ...]] = ()
    """The dialect flags (SHARED_FLAGS, and flags of its own) this dialect takes."""
    sample_rates: ClassVar[tuple[int, ...]] = ()
    """The uplink rates --sample-rate may choose; empty: the rate is the
    dialect's own (`uplink_audio`), and --sample-rate another is a usage error."""
    default_sample_rate: ClassVar[int] = 16000
    """With `sample_rates`: the rate when --sample-rate is not given."""
    participant_sample_rates: ClassVar[tuple[int, ...]] = ()
    """With `per_participant`: the rates --per-participant-sample-rate may choose."""
    server_audio: ClassVar[str] = "audio"
    """What `check` waits for from the server, as the protocol names it
    (`response.output_audio.delta`, `media`), for its report."""
    uses_stream_params: ClassVar[bool] = False
    uses_call_sid: ClassVar[bool] = False
    uses_session: ClassVar[bool] = False
    """Older spelling of `flags` (True adds the shared flag with a generic help)."""
    reconnect_on_clean_close: ClassVar[bool] = True
    """Is a clean close (1000) from the server a drop to reconnect after (True),
    or the end of the call (False: the sidecar stops, exit 0)? The default of
    --reconnect-on-close."""
    renew_after_s: ClassVar[float | None] = None
    """How long a session must have lived for its `reconnect_at_once` close to
    be believed (a plausible share of the vendor's session cap); None: never."""
    session_cap_s: ClassVar[float | None] = None
    """The vendor's longest session; None: no cap known."""
    rotate_margin_s: ClassVar[float] = 0.0
    """How long before `session_cap_s` the link starts looking for a quiet
    moment to move to a new session."""
    commands: ClassVar[frozenset[str]] = frozenset()
    """The dialect-specific commands (`COMMANDS`' names) this dialect encodes;
    any other is answered `unsupported` before it is queued."""

    def __init__(self, options: Options) -> None:
        self.options = options

    @property
    def commands_dropped(self) -> int:
        """What the run's kept instructions and context let go past their
        bounds (dialects/briefing.py); counted in `stats`."""
        return 0

    def refuses(self, command: str) -> str | None:
        """Why this dialect cannot do `command` (a name in `COMMANDS`), for the
        bot's `unsupported` answer; None: it can."""
        if command in self.commands:
            return None
        return f"--protocol {self.name} has no message for `{command}`"

    @abc.abstractmethod
    def uplink_audio(self, stream: str = MIXED) -> WireAudio:
        """The format the capture must produce for `stream`."""

    @classmethod
    def credential_envs(cls) -> tuple[str, ...]:
        """Every environment variable that may hold the key, in order of preference."""
        return cls.auth_envs or ((cls.auth_env,) if cls.auth_env is not None else ())

    @classmethod
    def credential(cls, environ: Mapping[str, str]) -> tuple[str, str] | None:
        """(variable, key) of the first variable set, or None."""
        for name in cls.credential_envs():
            key = environ.get(name, "").strip()
            if key:
                return name, key
        return None

    @classmethod
    def accepted_flags(cls) -> tuple[DialectFlag, ...]:
        """`flags`, with those the older `uses_*` spelling names."""
        found = list(cls.flags)
        for used, names in (
            (cls.uses_stream_params, ("--stream-param",)),
            (cls.uses_call_sid, ("--call-sid", "--account-sid")),
            (cls.uses_session, ("--session",)),
        ):
            for name in names:
                if used and all(f.name != name for f in found):
                    found.append(DialectFlag(name, "taken"))
        return tuple(found)

    @classmethod
    def takes(cls, flag: str) -> bool:
        return any(f.name == flag for f in cls.accepted_flags())

    def auth_headers(self, environ: dict[str, str], url: str) -> tuple[tuple[str, str], ...]:
        """Handshake headers made from the environment when the user gave none;
        `url` is the one the connection requests (some schemes sign it). By
        default `auth_header: auth_scheme KEY` from the first of `credential_envs`."""
        found = self.credential(environ)
        if found is None:
            return ()
        key = found[1]
        return ((self.auth_header, f"{self.auth_scheme} {key}" if self.auth_scheme else key),)

    def connect_url(self, url: str) -> str:
        """The URL this dialect connects to for `url` (the link asks once, before
        anything is checked or fetched): a dialect puts its own flags into it."""
        return url

    def url_request(self, url: str, environ: Mapping[str, str]) -> UrlRequest | None:
        """An HTTP request the link must make before each connection to `url`
        (a signed URL that expires); None: connect to `url` as it is."""
        return None

    def url_from_answer(self, url: str, status: int, body: bytes) -> str:
        """The websocket URL in the 2xx answer to `url_request(url)`; raises
        UrlAnswerError where it holds none."""
        raise UrlAnswerError("this dialect makes no URL request")

    def problems(self) -> Sequence[str]:
        """What is wrong with the options for this dialect (usage errors)."""
        return ()

    def warnings(self) -> Sequence[str]:
        return ()

    @property
    def rotate_after_s(self) -> float | None:
        """When a session should move to a new one, at a quiet moment."""
        if self.session_cap_s is None:
            return None
        return max(self.session_cap_s - self.rotate_margin_s, 0.0)

    @abc.abstractmethod
    def session(self, history: MemorySnapshot | None = None) -> Session:
        """A new connection's state; `history` is the conversation so far, for a
        dialect that can seed a new session with it (None: the first
        connection, or --memory off)."""
