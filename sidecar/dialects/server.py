"""The other end of the seam: a dialect's server role, as pure code (sans-I/O).

base.py is the seam of the client, the role the sidecar plays. The debugging
tools also need the server's: `serve` stands in for a user's server, so it
must read what a client of the dialect sends and answer the way such a
server does. Like h11, a protocol module knows both roles: each dialect module
implements its `ServerSession` next to its `Session`, with the same Structs,
and registers it here (`SERVER_SESSIONS`).

The neutral vocabulary of what a server hears (`ServerIncoming`): the
client's opening (`Opened`) and closing (`Closed`), its audio (`AudioIn`),
`DtmfIn`, the answers to the server's marks (`MarkAnswer`) and clears
(`ClearAnswer`), an error reply (`ErrorReplyIn`), and `Invalid` (base.py's)
for a message that breaks the dialect's rules, order and counters included.
What it says goes through `audio`, `mark` and `clear`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from sidecar.dialects.base import MIXED, Invalid, Wire
from sidecar.dialects.g711 import Packetizer
from sidecar.frames import DTMF_DIGITS
from sidecar.messages import MAX_MESSAGE_BYTES, ErrorCode, MessageError
from sidecar.pcm import SAMPLE_BYTES

# -- what a server hears -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opened:
    """The client's opening, read: what it says about the stream (ids, format,
    parameters); the server may speak from now on."""

    info: Mapping[str, object]
    rate: int | None = None
    """The rate of the audio the client will send, where the opening names it."""


@dataclass(frozen=True, slots=True)
class AudioIn:
    """Audio from the client, as s16le mono at `rate` (decoded from mu-law where sent so)."""

    pcm: bytes
    rate: int
    timestamp_ms: int | None = None
    """The first sample's time as the client stamped it (Attendee: Unix ms;
    Twilio: ms since the stream started); None where the wire has none."""
    stream: str = MIXED


@dataclass(frozen=True, slots=True)
class DtmfIn:
    digit: str


@dataclass(frozen=True, slots=True)
class MarkAnswer:
    """The client answered one of this server's marks."""

    name: str
    played: bool | None
    """False: a clear dropped its audio; None where the dialect does not say."""


@dataclass(frozen=True, slots=True)
class ClearAnswer:
    """The client confirmed a clear (Vonage's `websocket:cleared`)."""


@dataclass(frozen=True, slots=True)
class ErrorReplyIn:
    """The client refused a message this server sent (Attendee's `realtime_audio.error`)."""

    code: str
    message: str
    trigger: str | None = None


@dataclass(frozen=True, slots=True)
class Closed:
    """The client's closing message (Twilio's `stop`): no more audio on this stream."""

    info: Mapping[str, object]


ServerIncoming = (
    Opened | AudioIn | DtmfIn | MarkAnswer | ClearAnswer | ErrorReplyIn | Closed | Invalid
)


# -- the server session ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerOptions:
    max_message_bytes: int = MAX_MESSAGE_BYTES
    """A larger message from the client is Invalid."""
    chunk_ms: int = 20
    """The length of each audio message a dialect with fixed pieces sends
    (Twilio's media); Vonage's frames are 20 ms whatever this says."""


class ServerSession(abc.ABC):
    """One connection, from the server's side. Nothing here does I/O or reads a clock.

    `audio`, `mark` and `clear` return the messages that say them, in order;
    they raise ValueError for what no server of the dialect can say (a rate
    it does not take) and RuntimeError before the session is `ready`.
    Dialects whose audio travels in fixed pieces hold back what does not fill
    one until more comes, a mark (which must follow all the audio before
    it) or `flush`.
    """

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self._pending: list[str] = []
        # A dialect of fixed pieces (of one output rate) sets these: the
        # packetizer of its wire bytes, and one sample of silence to pad with.
        self._pieces: Packetizer | None = None
        self._silence = bytes(SAMPLE_BYTES)

    @property
    def ready(self) -> bool:
        """Has the client's opening arrived, so the server may speak?"""
        return True

    @property
    @abc.abstractmethod
    def output_rates(self) -> tuple[int, ...]:
        """The rates `audio` takes now (a Vonage stream's is its client's)."""

    @property
    def pending_marks(self) -> tuple[str, ...]:
        """Marks sent and not answered yet, oldest first."""
        return tuple(self._pending)

    @abc.abstractmethod
    def receive(self, message: Wire) -> Sequence[ServerIncoming]:
        """Decode one client message, checked against the dialect's rules; never
        raises for bad input. A message that breaks a rule but still means
        something (audio with a wrong counter) gives its Invalid and its meaning."""

    def audio(self, pcm: bytes, rate: int) -> Sequence[Wire]:
        """Audio for the client to play: s16le mono at one of `output_rates`."""
        self._speaking()
        if rate not in self.output_rates:
            takes = ", ".join(map(str, self.output_rates))
            raise ValueError(f"this stream takes audio at {takes} Hz; got {rate} Hz")
        if len(pcm) % SAMPLE_BYTES:
            raise ValueError(f"16-bit PCM needs an even byte count, got {len(pcm)}")
        data = self._to_wire(pcm)
        if self._pieces is None:
            return (self._encode_audio(data, rate),)
        return [self._encode_audio(piece, rate) for piece in self._pieces.feed(data)]

    def flush(self) -> Sequence[Wire]:
        """The held-back audio, padded with silence to a whole piece."""
        tail = None if self._pieces is None else self._pieces.flush(self._silence)
        return () if tail is None else (self._encode_audio(tail, self.output_rates[0]),)

    def mark(self, name: str) -> Sequence[Wire]:
        """Ask the client to answer `name` once the audio sent before it has played."""
        self._speaking()
        wires = [*self.flush(), self._encode_mark(name)]
        self._pending.append(name)
        return wires

    def clear(self) -> Sequence[Wire]:
        """Ask the client to drop the audio it has not played yet (a barge-in)."""
        self._speaking()
        if self._pieces is not None:
            self._pieces.flush(self._silence)  # held back, so never sent: dropped too
        return (self._encode_clear(),)

    def _speaking(self) -> None:
        if not self.ready:
            raise RuntimeError("the client's opening has not arrived: nothing may be sent yet")

    def _to_wire(self, pcm: bytes) -> bytes:
        """s16le -> the audio bytes of the wire."""
        return pcm

    @abc.abstractmethod
    def _encode_audio(self, data: bytes, rate: int) -> Wire: ...

    @abc.abstractmethod
    def _encode_mark(self, name: str) -> Wire: ...

    @abc.abstractmethod
    def _encode_clear(self) -> Wire: ...

    def _answered(self, name: str, played: bool | None, kind: str) -> Sequence[ServerIncoming]:
        """A client's answer to a mark, checked: one this server sent, in order."""
        if name not in self._pending:
            return (
                invalid(
                    f"mark {name!r} answered, but this server sent no such mark "
                    "(or it was answered already)",
                    kind,
                ),
            )
        first = self._pending[0]
        self._pending.remove(name)
        answer = MarkAnswer(name, played)
        if name == first:
            return (answer,)
        return (
            invalid(f"mark {name!r} answered before {first!r}, which was sent first", kind),
            answer,
        )


def invalid(text: str, kind: str | None, code: ErrorCode = ErrorCode.INVALID_FIELD) -> Invalid:
    return Invalid(MessageError(code, text, kind))


def dtmf(digit: str, kind: str) -> ServerIncoming:
    if digit not in DTMF_DIGITS:
        return invalid(f"DTMF digit {digit!r} is not one of 0-9 * # A-D", kind)
    return DtmfIn(digit)


ServerFactory = Callable[[ServerOptions], ServerSession]

SERVER_SESSIONS: Final[dict[str, ServerFactory]] = {}
"""Every dialect with a server role, by its `--protocol` name. Each dialect
module registers its own (`register`) when imported, and `sidecar.dialects`
imports them all, so the table is complete by the time this module is."""


def register(name: str, factory: ServerFactory) -> None:
    SERVER_SESSIONS[name] = factory


def server_session(name: str, options: ServerOptions | None = None) -> ServerSession:
    return SERVER_SESSIONS[name](options or ServerOptions())
