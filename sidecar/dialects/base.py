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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final, Literal

from sidecar import events
from sidecar.messages import MAX_MESSAGE_BYTES, MessageError
from sidecar.pcm import SAMPLE_BYTES

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

    def replies(self) -> Sequence[Wire]:
        """Messages the last `receive` made the session owe the server (a pong,
        a deferred `response.create`); the link takes them after each
        `receive` and queues them as a `SessionReply`, in order with the rest."""
        return ()

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
    default_url: ClassVar[str | None] = None
    auth_env: ClassVar[str | None] = None
    """The environment variable holding the vendor's key, for `auth_headers`."""
    auth_header: ClassVar[str] = "Authorization"
    """The handshake header `auth_headers` makes; one the user gives wins."""
    uses_stream_params: ClassVar[bool] = False
    uses_call_sid: ClassVar[bool] = False
    uses_session: ClassVar[bool] = False
    """Which of the dialect flags mean something here: the rest are usage errors."""
    reconnect_on_clean_close: ClassVar[bool] = True
    """Is a clean close (1000) from the server a drop to reconnect after (True),
    or the end of the call (False: the sidecar stops, exit 0)? The default of
    --reconnect-on-close."""
    renew_after_s: ClassVar[float | None] = None
    commands: ClassVar[frozenset[str]] = frozenset()
    """The dialect-specific commands (`COMMANDS`' names) this dialect encodes;
    any other is answered `unsupported` before it is queued."""
    """How long a session must have lived for its `reconnect_at_once` close to
    be believed (a plausible share of the vendor's session cap); None: never."""

    def __init__(self, options: Options) -> None:
        self.options = options

    def refuses(self, command: str) -> str | None:
        """Why this dialect cannot do `command` (a name in `COMMANDS`), for the
        bot's `unsupported` answer; None: it can."""
        if command in self.commands:
            return None
        return f"--protocol {self.name} has no message for `{command}`"

    @abc.abstractmethod
    def uplink_audio(self, stream: str = MIXED) -> WireAudio:
        """The format the capture must produce for `stream`."""

    def auth_headers(self, environ: dict[str, str], url: str) -> tuple[tuple[str, str], ...]:
        """Handshake headers made from the environment when the user gave none;
        `url` is the one the connection requests (some schemes sign it)."""
        return ()

    def problems(self) -> Sequence[str]:
        """What is wrong with the options for this dialect (usage errors)."""
        return ()

    def warnings(self) -> Sequence[str]:
        return ()

    @abc.abstractmethod
    def session(self) -> Session:
        """A new connection's state."""
