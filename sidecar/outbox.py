"""What waits to be sent on the websocket, bounded (sans-I/O).

Audio messages are bounded by the audio they carry, not by count: while the
link is up the queue absorbs a slow server for `live_ms`; while it is down it
keeps only the newest `replay_ms`, which is sent first on reconnect with its
original timestamps. Either way the oldest audio goes first and every dropped
sample is counted under a reason. Control messages (mark echoes, error
replies, DTMF) travel in their own small lane ahead of audio, bounded in
count and in bytes (a mark's name can be long, and a server that stopped
reading must not make 400 answers of 1 MB pile up): past either limit the
oldest goes, counted as `control_overflow` or `control_bytes`. A tool result
still waiting when its session ends goes too (`session_ended`): it answers a
call no later session knows.

What waits here is the dialect's neutral vocabulary, not wire bytes: the link
encodes each item when it sends it, with the connection's session, so audio
replayed after a reconnect is framed for the new connection.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Final

from sidecar.dialects.base import (
    AddContext,
    AudioOut,
    ClearedOut,
    Control,
    DtmfOut,
    ErrorOut,
    MarkOut,
    Outgoing,
    RawSend,
    Say,
    SessionReply,
    SetInstructions,
    ToolResult,
    UserText,
)
from sidecar.pcm import SAMPLE_BYTES

MAX_CONTROL: Final = 256
MAX_CONTROL_BYTES: Final = 1 << 20
# What a control message costs beyond its own text: its object, and the
# envelope the dialect wraps it in on the wire.
_CONTROL_OVERHEAD: Final = 128


@dataclass(frozen=True, slots=True)
class OutboxStatistics:
    depth_ms: float
    audio_messages: int
    control_messages: int
    dropped_samples: dict[str, int]
    dropped_messages: dict[str, int]
    dropped_by_stream: dict[str, int]


@dataclass(slots=True)
class _Counters:
    samples: collections.Counter[str] = field(default_factory=collections.Counter)
    messages: collections.Counter[str] = field(default_factory=collections.Counter)
    by_stream: collections.Counter[str] = field(default_factory=collections.Counter)


class _Stream:
    """One stream's queue, kept for the stream's life (not rebuilt per chunk)."""

    __slots__ = ("live", "open", "queue", "rate", "replay", "samples")

    def __init__(self) -> None:
        self.queue: collections.deque[tuple[int, AudioOut]] = collections.deque()
        self.samples = 0
        """Samples queued: the bound is kept in whole samples, not summed ms."""
        self.rate = 0
        self.live = 0
        self.replay = 0
        """The two limits in samples at `rate`."""
        self.open = False
        """It has put audio and has not been released."""


def _limit(ms: float, rate: int) -> int:
    # The most whole samples that fit in `ms` (the epsilon absorbs a product
    # such as 0.06 * 16000 landing a hair under its integer).
    return math.floor(ms * rate / 1000.0 + 1e-6)


class Outbox:
    """One FIFO across streams, with each stream's queued audio bounded on its own.

    Limits are per stream (a participant that talks a lot must not push the
    mixed stream's replay out), while `get()` still hands out messages in the
    order they were put, whichever stream they belong to.

    Which limit applies is the outbox's own state, `accepting`: the link sets
    it when a connection opens for audio and clears it when the connection
    goes down, so whoever puts audio need not ask.
    """

    def __init__(
        self,
        replay_ms: float,
        live_ms: float = 2000.0,
        max_control: int = MAX_CONTROL,
        max_control_bytes: int = MAX_CONTROL_BYTES,
    ) -> None:
        if replay_ms < 0 or live_ms < 0:
            raise ValueError("outbox limits must not be negative")
        self.replay_ms = replay_ms
        self.live_ms = max(live_ms, replay_ms)
        self.accepting = False
        """A connection is up and its session takes audio: the live limit
        applies; otherwise only the newest `replay_ms` is kept."""
        self._streams: dict[str, _Stream] = {}
        self._queued = 0
        """Audio messages queued, across streams."""
        self._seq = 0
        self._control: collections.deque[Control] = collections.deque()
        self._max_control = max_control
        self._max_control_bytes = max_control_bytes
        self._control_bytes = 0
        self._dropped = _Counters()

    def put_audio(self, item: AudioOut) -> None:
        stream = self._streams.get(item.stream)
        if stream is None:
            stream = self._streams[item.stream] = _Stream()
        if item.rate != stream.rate:
            # A stream's rate is the dialect's and does not change; were it
            # to, the limits follow it.
            stream.rate = item.rate
            stream.live = _limit(self.live_ms, item.rate)
            stream.replay = _limit(self.replay_ms, item.rate)
        stream.open = True
        stream.queue.append((self._seq, item))
        self._seq += 1
        self._queued += 1
        stream.samples += len(item.pcm) // SAMPLE_BYTES
        if self.accepting:
            if stream.samples > stream.live:
                self._trim(item.stream, stream, stream.live, "backpressure")
        elif stream.samples > stream.replay:
            self._trim(item.stream, stream, stream.replay, "disconnected")

    def put_control(self, item: Control) -> None:
        weight = control_bytes(item)
        if weight > self._max_control_bytes:
            # It could never fit: it alone goes, not what waits before it.
            self._dropped.messages["control_bytes"] += 1
            return
        if len(self._control) == self._max_control:
            self._pop_control()
            self._dropped.messages["control_overflow"] += 1
        self._control.append(item)
        self._control_bytes += weight
        while self._control_bytes > self._max_control_bytes:
            self._pop_control()
            self._dropped.messages["control_bytes"] += 1

    def release(self, stream: str) -> int:
        """The stream has ended: returns the samples of it dropped so far.

        Its queue and per-stream drop count are forgotten once none of its
        audio is left queued, so participants that come and go leave nothing
        behind.
        """
        dropped = self._dropped.by_stream[stream]
        record = self._streams.get(stream)
        if record is None:
            self._dropped.by_stream.pop(stream, None)
            return dropped
        record.open = False
        self._forget_if_done(stream, record)
        return dropped

    def disconnected(self) -> tuple[str, ...]:
        """The link went down: keep only what replay allows. Tool results still
        waiting answer calls of the session that ended, which no later session
        knows: they go (counted `session_ended`), and their call ids are returned."""
        self.accepting = False
        for key, stream in list(self._streams.items()):
            if stream.samples > stream.replay:
                self._trim(key, stream, stream.replay, "disconnected")
        dead = tuple(item.call_id for item in self._control if isinstance(item, ToolResult))
        if dead:
            kept = [item for item in self._control if not isinstance(item, ToolResult)]
            self._control = collections.deque(kept)
            self._control_bytes = sum(map(control_bytes, kept))
            self._dropped.messages["session_ended"] += len(dead)
        return dead

    def discard(self, reason: str) -> None:
        """Nothing more will be sent (shutdown): count what is left as dropped."""
        for key, stream in list(self._streams.items()):
            for _, item in stream.queue:
                self._count(item, reason)
            stream.queue.clear()
            stream.samples = 0
            if not stream.open:
                del self._streams[key]
        self._queued = 0
        for key in set(self._dropped.by_stream) - set(self._streams):
            del self._dropped.by_stream[key]
        self._dropped.messages[reason] += len(self._control)
        self._control.clear()
        self._control_bytes = 0

    def get(self, audio: bool = True) -> Outgoing | None:
        """The next item to send; with `audio` False only control (the
        connection is not ready for audio yet)."""
        if self._control:
            return self._pop_control()
        if not self._queued or not audio:
            return None
        streams = self._streams
        if len(streams) == 1:
            key, stream = next(iter(streams.items()))
        else:
            # A scan of the heads: there are at most a few dozen streams.
            key, stream = min(
                ((k, s) for k, s in streams.items() if s.queue),
                key=lambda ks: ks[1].queue[0][0],
            )
        _, item = stream.queue.popleft()
        self._queued -= 1
        stream.samples -= len(item.pcm) // SAMPLE_BYTES
        if not stream.open and not stream.queue:
            self._forget_if_done(key, stream)
        return item

    def count_lost(self, item: AudioOut, reason: str) -> None:
        """An item taken with get() could not be delivered."""
        self._count(item, reason)

    def __bool__(self) -> bool:
        return bool(self._control or self._queued)

    @property
    def depth_ms(self) -> float:
        if not self._queued:
            # The usual answer at real time (asked after every read from the bot):
            # no queued message, no queued sample.
            return 0.0
        return sum(s.samples * 1000.0 / s.rate for s in self._streams.values() if s.samples)

    def statistics(self) -> OutboxStatistics:
        return OutboxStatistics(
            depth_ms=self.depth_ms,
            audio_messages=self._queued,
            control_messages=len(self._control),
            dropped_samples=dict(self._dropped.samples),
            dropped_messages=dict(self._dropped.messages),
            dropped_by_stream=dict(self._dropped.by_stream),
        )

    def _pop_control(self) -> Control:
        item = self._control.popleft()
        self._control_bytes -= control_bytes(item)
        return item

    def _trim(self, key: str, stream: _Stream, limit: int, reason: str) -> None:
        # Keep the newest audio: a listener wants what was just said.
        queue = stream.queue
        while queue and stream.samples > limit:
            _, item = queue.popleft()
            self._queued -= 1
            stream.samples -= len(item.pcm) // SAMPLE_BYTES
            self._count(item, reason)
        self._forget_if_done(key, stream)

    def _forget_if_done(self, key: str, stream: _Stream) -> None:
        # Departed participants must not leave entries behind.
        if not stream.open and not stream.queue:
            del self._streams[key]
            self._dropped.by_stream.pop(key, None)

    def _count(self, item: AudioOut, reason: str) -> None:
        self._dropped.samples[reason] += item.samples
        self._dropped.messages[reason] += 1
        # A released stream's audio lost in flight counts in the totals only.
        if item.stream in self._streams:
            self._dropped.by_stream[item.stream] += item.samples


def control_bytes(item: Control) -> int:
    """What a control message weighs against the lane's byte limit: its text
    (a character as a byte, as most are on the wire) and a fixed overhead."""
    match item:
        case MarkOut(name=name):
            text = len(name)
        case ErrorOut(error=error):
            text = len(error.message) + len(error.trigger or "")
        case ClearedOut(heard=heard):
            text = 0 if heard is None else len(heard.segment)
        case DtmfOut():
            text = 1
        case ToolResult(call_id=call_id, output=output):
            text = len(call_id) + len(output)
        case Say(text=t) | UserText(text=t) | AddContext(text=t) | SetInstructions(text=t):
            text = len(t)
        case RawSend(message=message):
            text = len(message)
        case SessionReply(wires=wires):
            text = sum(len(wire) for wire in wires)
    return _CONTROL_OVERHEAD + text
