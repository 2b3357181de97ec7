"""What waits to be sent on the websocket, bounded (sans-I/O).

Audio messages are bounded by the audio they carry, not by count: while the
link is up the queue absorbs a slow server for `live_ms`; while it is down it
keeps only the newest `replay_ms`, which is sent first on reconnect with its
original timestamps. Either way the oldest audio goes first and every dropped
sample is counted under a reason. Control messages (mark echoes, error
replies) travel in their own small lane ahead of audio.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Outgoing:
    text: str
    samples: int = 0
    ms: float = 0.0
    stream: str = "mixed"


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
    def __init__(self, replay_ms: float, live_ms: float = 2000.0, max_control: int = 256) -> None:
        if replay_ms < 0 or live_ms < 0:
            raise ValueError("outbox limits must not be negative")
        self.replay_ms = replay_ms
        self.live_ms = max(live_ms, replay_ms)
        self._audio: collections.deque[Outgoing] = collections.deque()
        self._control: collections.deque[str] = collections.deque(maxlen=max_control)
        self._depth_ms = 0.0
        self._dropped = _Counters()

    def put_audio(self, item: Outgoing, connected: bool) -> None:
        self._audio.append(item)
        self._depth_ms += item.ms
        if connected:
            self._trim(self.live_ms, "backpressure")
        else:
            self._trim(self.replay_ms, "disconnected")

    def put_control(self, text: str) -> None:
        if len(self._control) == self._control.maxlen:
            self._dropped.messages["control_overflow"] += 1
        self._control.append(text)

    def disconnected(self) -> None:
        """The link went down: keep only what replay allows."""
        self._trim(self.replay_ms, "disconnected")

    def discard(self, reason: str) -> None:
        """Nothing more will be sent (shutdown): count what is left as dropped."""
        while self._audio:
            self._count(self._audio.popleft(), reason)
        self._depth_ms = 0.0
        self._dropped.messages[reason] += len(self._control)
        self._control.clear()

    def get(self) -> Outgoing | None:
        if self._control:
            return Outgoing(self._control.popleft())
        if self._audio:
            item = self._audio.popleft()
            self._depth_ms -= item.ms
            if not self._audio:
                self._depth_ms = 0.0  # no float drift across hours
            return item
        return None

    def count_lost(self, item: Outgoing, reason: str) -> None:
        """An item taken with get() could not be delivered."""
        self._count(item, reason)

    def __bool__(self) -> bool:
        return bool(self._control or self._audio)

    @property
    def depth_ms(self) -> float:
        return self._depth_ms

    def statistics(self) -> OutboxStatistics:
        return OutboxStatistics(
            depth_ms=self._depth_ms,
            audio_messages=len(self._audio),
            control_messages=len(self._control),
            dropped_samples=dict(self._dropped.samples),
            dropped_messages=dict(self._dropped.messages),
            dropped_by_stream=dict(self._dropped.by_stream),
        )

    def _trim(self, limit_ms: float, reason: str) -> None:
        # Keep the newest audio: a listener wants what was just said.
        while self._audio and self._depth_ms > limit_ms + 1e-6:
            item = self._audio.popleft()
            self._depth_ms -= item.ms
            self._count(item, reason)
        if not self._audio:
            self._depth_ms = 0.0

    def _count(self, item: Outgoing, reason: str) -> None:
        self._dropped.samples[reason] += item.samples
        self._dropped.messages[reason] += 1
        self._dropped.by_stream[item.stream] += item.samples
