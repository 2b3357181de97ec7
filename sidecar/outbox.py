"""What waits to be sent on the websocket, bounded (sans-I/O).

Audio messages are bounded by the audio they carry, not by count: while the
link is up the queue absorbs a slow server for `live_ms`; while it is down it
keeps only the newest `replay_ms`, which is sent first on reconnect with its
original timestamps. Either way the oldest audio goes first and every dropped
sample is counted under a reason. Control messages (mark echoes, error
replies, DTMF) travel in their own small lane ahead of audio, bounded in
count and in bytes (a mark's name can be long, and a server that stopped
reading must not make 400 answers of 1 MB pile up): past either limit the
oldest goes, counted as `control_overflow` or `control_bytes`.

What waits here is the dialect's neutral vocabulary, not wire bytes: the link
encodes each item when it sends it, with the connection's session, so audio
replayed after a reconnect is framed for the new connection.
"""

from __future__ import annotations

import collections
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


class Outbox:
    """One FIFO across streams, with each stream's queued audio bounded on its own.

    Limits are per stream (a participant that talks a lot must not push the
    mixed stream's replay out), while `get()` still hands out messages in the
    order they were put, whichever stream they belong to.
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
        self._streams: dict[str, collections.deque[tuple[int, AudioOut]]] = {}
        self._depth: dict[str, float] = {}
        self._seq = 0
        self._control: collections.deque[Control] = collections.deque()
        self._max_control = max_control
        self._max_control_bytes = max_control_bytes
        self._control_bytes = 0
        self._dropped = _Counters()
        self._open: set[str] = set()
        """Streams that have put audio and not been released."""

    def put_audio(self, item: AudioOut, connected: bool) -> None:
        self._open.add(item.stream)
        queue = self._streams.get(item.stream)
        if queue is None:
            queue = self._streams[item.stream] = collections.deque()
            self._depth[item.stream] = 0.0
        queue.append((self._seq, item))
        self._seq += 1
        self._depth[item.stream] += item.ms
        if connected:
            self._trim(item.stream, self.live_ms, "backpressure")
        else:
            self._trim(item.stream, self.replay_ms, "disconnected")

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

        Its per-stream drop count is forgotten once none of its audio is left
        queued, so participants that come and go leave nothing behind.
        """
        self._open.discard(stream)
        dropped = self._dropped.by_stream[stream]
        if stream not in self._streams:
            del self._dropped.by_stream[stream]
        return dropped

    def disconnected(self) -> None:
        """The link went down: keep only what replay allows."""
        for stream in list(self._streams):
            self._trim(stream, self.replay_ms, "disconnected")

    def discard(self, reason: str) -> None:
        """Nothing more will be sent (shutdown): count what is left as dropped."""
        for queue in self._streams.values():
            for _, item in queue:
                self._count(item, reason)
        self._streams.clear()
        self._depth.clear()
        for stream in set(self._dropped.by_stream) - self._open:
            del self._dropped.by_stream[stream]
        self._dropped.messages[reason] += len(self._control)
        self._control.clear()
        self._control_bytes = 0

    def get(self, audio: bool = True) -> Outgoing | None:
        """The next item to send; with `audio` False only control (the
        connection is not ready for audio yet)."""
        if self._control:
            return self._pop_control()
        if not self._streams or not audio:
            return None
        # A scan of the heads: there are at most a few dozen streams.
        stream = min(self._streams, key=lambda s: self._streams[s][0][0])
        _, item = self._streams[stream].popleft()
        self._depth[stream] -= item.ms
        self._forget_if_empty(stream)
        return item

    def count_lost(self, item: AudioOut, reason: str) -> None:
        """An item taken with get() could not be delivered."""
        self._count(item, reason)

    def __bool__(self) -> bool:
        return bool(self._control or self._streams)

    @property
    def depth_ms(self) -> float:
        return sum(self._depth.values())

    def statistics(self) -> OutboxStatistics:
        return OutboxStatistics(
            depth_ms=self.depth_ms,
            audio_messages=sum(len(q) for q in self._streams.values()),
            control_messages=len(self._control),
            dropped_samples=dict(self._dropped.samples),
            dropped_messages=dict(self._dropped.messages),
            dropped_by_stream=dict(self._dropped.by_stream),
        )

    def _pop_control(self) -> Control:
        item = self._control.popleft()
        self._control_bytes -= control_bytes(item)
        return item

    def _trim(self, stream: str, limit_ms: float, reason: str) -> None:
        # Keep the newest audio: a listener wants what was just said.
        queue = self._streams[stream]
        while queue and self._depth[stream] > limit_ms + 1e-6:
            _, item = queue.popleft()
            self._depth[stream] -= item.ms
            self._count(item, reason)
        self._forget_if_empty(stream)

    def _forget_if_empty(self, stream: str) -> None:
        # Departed participants must not leave entries behind.
        if not self._streams[stream]:
            del self._streams[stream]
            del self._depth[stream]
            if stream not in self._open:
                del self._dropped.by_stream[stream]

    def _count(self, item: AudioOut, reason: str) -> None:
        self._dropped.samples[reason] += item.samples
        self._dropped.messages[reason] += 1
        # A released stream's audio lost in flight counts in the totals only.
        if item.stream in self._open or item.stream in self._streams:
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
