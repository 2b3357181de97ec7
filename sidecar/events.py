"""JSON-lines events on stdout, for the bot that spawned us.

One object per line: `{"event": NAME, "ts_ms": unix ms, ...}`. Every field of
an event is on every line, `null` where it has no value, so a reader in any
language sees one shape (proto/schema/events.schema.json lists them all as
required). The emitter never blocks the event loop on a parent that stops
reading stdout: lines wait in a buffer bounded in lines and in bytes (drop
oldest, counted in `stats.events_dropped`) and a worker thread writes them.
"""

from __future__ import annotations

import collections
import sys
import time
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Literal

import msgspec
import trio

if TYPE_CHECKING:
    from sidecar.redact import Redactor

Socket = Literal["in", "out"]


class _Event(msgspec.Struct, frozen=True, tag_field="event", kw_only=True):
    # Defaults are for the code that builds events; every field is encoded.
    ts_ms: int = 0


class Ready(_Event, frozen=True, kw_only=True, tag="ready"):
    audio_in: str
    audio_out: str
    url: str
    bot_id: str
    sample_rate: int
    pid: int
    version: str
    contract: int
    """The version of the contract with the bot (frames, events): 1."""
    dialect: str = "attendee"
    """The wire protocol spoken (`--protocol`)."""
    control: str | None = None
    """The control socket (`--control` path or `fd:N`); null when there is none."""


class Connected(_Event, frozen=True, kw_only=True, tag="connected"):
    url: str
    attempt: int


class Disconnected(_Event, frozen=True, kw_only=True, tag="disconnected"):
    reason: str
    code: int | None = None
    url: str
    """The connection's URL, credentials and query values redacted."""


class Retrying(_Event, frozen=True, kw_only=True, tag="retrying"):
    attempt: int
    of: int
    delay: float
    reason: str


class GaveUp(_Event, frozen=True, kw_only=True, tag="gave_up"):
    reason: str
    attempts: int
    status: int | None = None


class BotConnected(_Event, frozen=True, kw_only=True, tag="bot_connected"):
    socket: Socket


class BotDisconnected(_Event, frozen=True, kw_only=True, tag="bot_disconnected"):
    socket: Socket
    reason: str


class ParticipantJoined(_Event, frozen=True, kw_only=True, tag="participant_joined"):
    participant_uuid: str


class ParticipantLeft(_Event, frozen=True, kw_only=True, tag="participant_left"):
    """Carries the stream's final counters: it leaves `stats` from now on."""

    participant_uuid: str
    reason: str
    frames: int = 0
    samples: int = 0
    chunks: int = 0
    dropped: int = 0
    """Samples of this stream dropped so far (more may still be, in the outbox)."""


class InvalidMessage(_Event, frozen=True, kw_only=True, tag="invalid_message"):
    code: str
    message: str
    trigger: str | None = None


class InvalidFrame(_Event, frozen=True, kw_only=True, tag="invalid_frame"):
    socket: Socket
    code: int
    message: str


class MarkPlayed(_Event, frozen=True, kw_only=True, tag="mark"):
    name: str
    status: Literal["played", "cleared"]


class PlayoutCleared(_Event, frozen=True, kw_only=True, tag="playout_cleared"):
    """The server cleared the bot's queued output (barge-in): what was cut."""

    dropped_ms: int
    """Audio queued for the bot and dropped, never heard."""
    heard_ms: int | None
    """Of the segment being played (an agent's reply), what the meeting heard;
    null where the dialect has no segments."""


class Transcript(_Event, frozen=True, kw_only=True, tag="transcript"):
    """What one side of the conversation said, as text, once the turn's text is final."""

    role: str
    """`assistant` (the agent) or `user` (the meeting, as the agent heard it)."""
    text: str
    item_id: str | None = None
    """The vendor's id of the conversation item (OpenAI); Deepgram has none."""
    segment: str | None = None
    """The segment of the agent's audio this text belongs to (as in
    `agent_speaking`); null where the dialect has none."""


class AgentError(_Event, frozen=True, kw_only=True, tag="agent_error"):
    """The agent service reported an error (OpenAI `error`, Deepgram `Error`)."""

    message: str
    code: str | None = None
    type: str | None = None
    """OpenAI's error class, e.g. "invalid_request_error"; Deepgram has none."""
    param: str | None = None
    event_id: str | None = None
    """OpenAI: the id of the client event that caused it, when it says."""


class AgentWarning(_Event, frozen=True, kw_only=True, tag="agent_warning"):
    """The agent service reported a non-fatal problem (Deepgram `Warning`); the session goes on."""

    message: str
    code: str | None = None


class AgentEvent(_Event, frozen=True, kw_only=True, tag="agent_event"):
    """A step of the agent's turn the bot may want to show or log (Deepgram).

    `name` is the vendor's message type verbatim (`Welcome`, `SettingsApplied`,
    `UserStartedSpeaking`, `AgentThinking`, `AgentStartedSpeaking`,
    `AgentAudioDone`); the other fields are set where that message carries them.
    """

    name: str
    request_id: str | None = None
    text: str | None = None
    total_latency: float | None = None
    tts_latency: float | None = None
    ttt_latency: float | None = None


class WarningEvent(_Event, frozen=True, kw_only=True, tag="warning"):
    message: str
    code: str
    """Stable, for a bot to act on: `config` (a start-up setting), `encode_failed`,
    `no_bot`, `tool_timeout`, `tool_calls_overflow`, `tool_result_unsent`,
    `control_events_dropped`."""


class CommandError(msgspec.Struct, frozen=True):
    code: str
    """`invalid_json`, `unknown_command`, `invalid_field`, `unsupported`, `stale`,
    `too_large`, `busy`."""
    message: str


class CommandResult(_Event, frozen=True, kw_only=True, tag="command_result"):
    """The one answer to each command of the control channel."""

    id: str | int | None
    """The command's `id`, echoed; null when it had none (or was not readable)."""
    command: str | None
    """The command's name; null when the line named none that could be read."""
    ok: bool
    error: CommandError | None = None


class ToolCall(_Event, frozen=True, kw_only=True, tag="tool_call"):
    """The agent calls a tool the bot runs: answer with `tool_result`."""

    call_id: str
    name: str
    arguments: Any
    """The arguments parsed from `arguments_json`; null when that text is not JSON."""
    arguments_json: str
    """The vendor's text of the arguments, as it came."""


class ToolCallCancelled(_Event, frozen=True, kw_only=True, tag="tool_call_cancelled"):
    """Call `call_id` needs no answer any more (a result for it would be `stale`)."""

    call_id: str
    reason: str
    """`cancelled` (the agent said so), `interrupted` (its reply was cut),
    `session_ended` (the connection it belonged to is gone)."""


class AgentSpeaking(_Event, frozen=True, kw_only=True, tag="agent_speaking"):
    """The agent's voice starts or stops reaching the bot, from the playout."""

    speaking: bool
    segment: str | None
    """The dialect's segment (an OpenAI reply item) the utterance began with;
    null where the dialect has none."""
    cause: Literal["started", "finished", "cleared"]


class MemoryRestored(_Event, frozen=True, kw_only=True, tag="memory_restored"):
    """A new agent session was given the conversation so far (--memory)."""

    turns: int
    """Turns carried over."""
    chars: int
    """Characters of their text."""
    dropped_turns: int
    """Older turns the bounds (--memory-turns, --memory-chars, or the vendor's
    own limit) left out."""


class SessionRotated(_Event, frozen=True, kw_only=True, tag="session_rotated"):
    """The sidecar moved to a new agent session at a quiet moment, before the
    vendor's cap would end it."""

    reason: str
    """`cap` (the dialect's session cap, or --max-session-s), `expiring` (the
    server said the session ends soon)."""
    after_s: float
    """How long the old session lived."""


class Stopped(_Event, frozen=True, kw_only=True, tag="stopped"):
    reason: str
    exit_code: int


class Stats(_Event, frozen=True, kw_only=True, tag="stats"):
    connected: bool
    reconnects: int
    frames_in: int
    bytes_in: int
    samples_in: int
    messages_out: int
    bytes_out: int
    samples_out: int
    # Silence the sidecar sent while the bot wrote nothing (--fill-silence),
    # at the rate sent: included in samples_out.
    samples_filled: int
    unconfirmed_samples: int
    # What the dialect could not encode, dropped: outbox items (audio also as
    # uplink_unencodable), keepalives and the closing message.
    encode_failures: int
    messages_in: int
    # Bot output accepted from the server, at the rate each message declared.
    bot_output_samples: int
    # The same audio at --output-rate, before the playout cap: what the
    # playout's counters (samples_played, downlink_* drops) are measured in.
    bot_output_resampled: int
    invalid_messages: int
    invalid_frames: int
    # DTMF frames (kind 0x03) from the bot, all passed to the dialect, which
    # may have no message for them (Attendee's has none).
    dtmf_in: int
    frames_out: int
    samples_played: int
    underruns: int
    replay_depth_ms: int
    playout_depth_ms: int
    dropped: dict[str, int]
    error_replies_suppressed: int
    events_dropped: int
    # Mark echoes and error replies beyond the control lane's limits (256
    # messages, 1 MiB), in messages.
    control_dropped: int
    # Valid marks refused because too many (or too long) were pending; answered as cleared.
    marks_refused: int
    # The bot's commands accepted (ok: true) and then let go past a bound: an
    # OpenAI `say` waiting behind more than 64 (or 1 MiB of) held responses,
    # context text beyond what is kept for the next session (256 texts, 64 KiB).
    commands_dropped: int = 0
    # Segment names kept for agent_speaking beyond 256 (it reports null then).
    segment_starts_dropped: int = 0
    # Stalls of the playout clock (over 3 frames late): playback resumed late, not lost.
    clock_restarts: int
    # --pause-threshold: times the bot's playback paused for a loud meeting, and for how long.
    pauses: int
    paused_ms: int
    participants: dict[str, dict[str, int]]
    # The control channel: the meeting's audio is not sent (`mute`), and is
    # counted under dropped.uplink_muted.
    muted: bool = False
    # Command lines read (stdin and socket), and those answered ok: false, by code.
    commands: int = 0
    commands_refused: dict[str, int] = msgspec.field(default_factory=dict)
    # Tool calls waiting for the bot's tool_result, and those the sidecar
    # answered itself (--tool-timeout, or more than 64 waiting).
    tool_calls_pending: int = 0
    tool_calls_unanswered: int = 0
    # Event lines the control socket's client was too slow to read (drop oldest).
    control_events_dropped: int = 0


Event = (
    Ready
    | Connected
    | Disconnected
    | Retrying
    | GaveUp
    | BotConnected
    | BotDisconnected
    | ParticipantJoined
    | ParticipantLeft
    | InvalidMessage
    | InvalidFrame
    | MarkPlayed
    | PlayoutCleared
    | Transcript
    | AgentError
    | AgentWarning
    | AgentEvent
    | WarningEvent
    | CommandResult
    | ToolCall
    | ToolCallCancelled
    | AgentSpeaking
    | MemoryRestored
    | SessionRotated
    | Stopped
    | Stats
)

_encoder: Final = msgspec.json.Encoder()


EVENT_LINES: Final = 1000
EVENT_BYTES: Final = 8 * 1024 * 1024
"""What waits for a parent that reads stdout slowly, in lines and in bytes
(the line being written included): beyond either, the oldest are dropped."""


class Subscriber:
    """Another reader of every event line (the control socket's client), bounded
    like stdout: lines and bytes, the oldest dropped and counted."""

    def __init__(self, limit: int = EVENT_LINES, limit_bytes: int = EVENT_BYTES) -> None:
        self._limit = limit
        self._limit_bytes = limit_bytes
        self._lines: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        # The batch being written counts against the bounds until it is.
        self._taken_lines = 0
        self._taken_bytes = 0
        self._wake = trio.Event()
        self._closed = False
        self.dropped = 0
        self.dropping = trio.Event()
        """Set at the first line dropped."""

    def put(self, line: bytes) -> None:
        was_dropped = self.dropped
        lines = self._lines
        lines.append(line)
        self._queued_bytes += len(line)
        room_lines = self._limit - self._taken_lines
        room_bytes = self._limit_bytes - self._taken_bytes
        while lines and (len(lines) > room_lines or self._queued_bytes > room_bytes):
            self._queued_bytes -= len(lines.popleft())
            self.dropped += 1
        if not was_dropped and self.dropped:
            self.dropping.set()
        self._wake.set()

    def close(self) -> None:
        """No more lines are wanted: `take` returns what is left, then nothing."""
        self._closed = True
        self._wake.set()

    async def take(self) -> list[bytes]:
        """The lines waiting, once there are any; call `written` after writing
        them. Empty: the subscriber was closed and everything taken."""
        while not self._lines:
            if self._closed:
                return []
            self._wake = trio.Event()
            await self._wake.wait()
        batch = list(self._lines)
        self._lines.clear()
        self._taken_lines, self._taken_bytes = len(batch), self._queued_bytes
        self._queued_bytes = 0
        return batch

    def written(self) -> None:
        self._taken_lines = self._taken_bytes = 0

    @property
    def waiting(self) -> bool:
        return bool(self._lines)


class EventLog:
    """Bounded, non-blocking JSON-lines writer."""

    def __init__(
        self,
        stream: BinaryIO | None = None,
        limit: int = EVENT_LINES,
        redact: Redactor | None = None,
        limit_bytes: int = EVENT_BYTES,
    ) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        self.redact = redact
        """Every event passes through it: server text (a close reason, an
        agent's error) may echo a secret."""
        self._limit = limit
        self._limit_bytes = limit_bytes
        self._lines: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        # The batch the worker thread is writing: held until written, so it
        # counts against the bounds too.
        self._writing_lines = 0
        self._writing_bytes = 0
        self._wake = trio.Event()
        self._drained = trio.Event()
        self._drained.set()
        self.dropped = 0
        self.broken = False
        self._subscribers: list[Subscriber] = []
        self.ready_line: bytes | None = None
        """The `ready` event as written: a subscriber that comes later starts with it."""

    def subscribe(self, subscriber: Subscriber) -> None:
        """From now on `subscriber` gets every line too, starting with `ready`."""
        if self.ready_line is not None:
            subscriber.put(self.ready_line)
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.remove(subscriber)

    @property
    def held_bytes(self) -> int:
        """Bytes of lines waiting or being written."""
        return self._queued_bytes + self._writing_bytes

    def line(self, event: Event) -> bytes:
        """The event's line as every reader gets it: stamped, redacted, encoded."""
        if not event.ts_ms:
            event = msgspec.structs.replace(event, ts_ms=time.time_ns() // 1_000_000)
        if self.redact is not None:
            event = self.redact.event(event)
        return _encoder.encode(event) + b"\n"

    def emit(self, event: Event) -> None:
        line = self.line(event)
        if isinstance(event, Ready):
            self.ready_line = line
        for subscriber in self._subscribers:
            subscriber.put(line)
        lines = self._lines
        lines.append(line)
        self._queued_bytes += len(line)
        room_lines = self._limit - self._writing_lines
        room_bytes = self._limit_bytes - self._writing_bytes
        while lines and (len(lines) > room_lines or self._queued_bytes > room_bytes):
            self._queued_bytes -= len(lines.popleft())
            self.dropped += 1
        if self._drained.is_set():
            self._drained = trio.Event()
        self._wake.set()

    async def serve(self) -> None:
        """Write lines as they come, from a worker thread, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            # The lines themselves, not one string joined from them: a batch
            # of large events would be held twice.
            batch = list(self._lines)
            self._lines.clear()
            self._writing_lines, self._writing_bytes = len(batch), self._queued_bytes
            self._queued_bytes = 0
            if batch:
                # Abandoned on cancellation: a parent that stopped reading our
                # stdout blocks the write for good, and must not block our exit.
                await trio.to_thread.run_sync(self._write, batch, abandon_on_cancel=True)
            del batch
            self._writing_lines = self._writing_bytes = 0
            if not self._lines:
                self._drained.set()

    async def drain(self) -> None:
        """Wait until every line emitted so far is written (callers bound the wait)."""
        await self._drained.wait()

    def _write(self, lines: list[bytes]) -> None:
        if self.broken:
            return
        try:
            self._stream.writelines(lines)
            self._stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            # The parent went away or closed our stdout; events have nowhere to
            # go, but audio must keep flowing.
            self.broken = True
