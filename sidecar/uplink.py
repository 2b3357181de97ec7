"""The way up: bot connections on the audio-in socket -> messages in the outbox.

Each connection is one stream. A connection that opens with a UUID frame is one
participant's stream (`realtime_audio.per_participant`); any other is the
mixed stream, which survives the bot reconnecting. The reader never waits on
the network: messages land in the Outbox, which is bounded and counts drops.

A connection's first frame decides which stream it feeds. A stream held by a
connection whose bot has already hung up is not busy: that connection is only
still reading what was sent before the hang-up. The newcomer waits (briefly,
in order of arrival) for it to finish, then takes over, so a bot that
reconnects at once is never refused and the stream stays in order.
"""

from __future__ import annotations

import collections
import copy
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

from sidecar import events, frames
from sidecar.capture import CaptureStream
from sidecar.chunker import Chunk
from sidecar.config import Config
from sidecar.dialects.base import AudioOut, DtmfOut
from sidecar.fill import Filler
from sidecar.gate import PauseGate
from sidecar.outbox import Outbox
from sidecar.sockets import peer_hung_up, refuse, serve_unix_listener, wait_first

# Small reads keep a bot that writes faster than real time from starving the
# sender: each read yields to the websocket task after a few frames.
READ_SIZE = 4096
MAX_TURNS = 16
MIXED = "mixed"
# How long a new connection waits for a departing one to let go of its stream.
# A departing connection only reads what is left in its socket (at most the
# socket buffer) and perhaps refuses a last bad frame (REFUSE_TIMEOUT_S), so
# this is a bound on a bug, not a delay anybody should meet.
HANDOVER_TIMEOUT_S = 2.0

log = logging.getLogger("sidecar.uplink")


@dataclass(slots=True)
class Route:
    """Where one kind of stream's messages go: an outbox and its link's
    `notify`. Whether the link takes audio is the outbox's own state
    (`Outbox.accepting`, set by the link)."""

    outbox: Outbox
    notify: Callable[[], None]


@dataclass(slots=True)
class StreamCounters:
    frames: int = 0
    samples: int = 0
    chunks: int = 0


@dataclass(slots=True)
class UplinkStatistics:
    connections: int = 0
    # Everything read from the bot, refused audio included: the bot's own count.
    frames_in: int = 0
    bytes_in: int = 0
    samples_in: int = 0
    invalid_frames: int = 0
    dtmf: int = 0
    # Silence the fill added to the mixed stream, at the rate sent.
    samples_filled: int = 0
    # Connections refused, by reason (`busy`, `too_many_streams`,
    # `per_participant_disabled`).
    refused: Counter[str] = field(default_factory=Counter)
    # The audio those connections sent that was read and not forwarded, in
    # samples at the bot's own rate, by the same reasons; `stopping` is audio
    # that was waiting for its stream when the sidecar stopped. Audio the
    # sidecar never read (left in the socket at the close) is not counted: the
    # bot's writes fail or go unread, and the 0xff frame says why.
    refused_samples: Counter[str] = field(default_factory=Counter)
    streams: dict[str, StreamCounters] = field(default_factory=dict)
    # The bot's `mute`: the meeting's audio is captured and not sent, in
    # samples at the rate sent (a stats drop, `uplink_muted`), in all and by
    # stream (a participant's leaves with it).
    muted: bool = False
    muted_samples: int = 0
    muted_by_stream: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True, eq=False)
class _Stream:
    """One stream on its way to the server, and the connection feeding it."""

    key: str  # MIXED, or the participant's UUID
    participant: bool
    capture: CaptureStream
    route: Route
    rate: int
    counters: StreamCounters
    # Only the mixed stream makes the bot's voice wait while the meeting is loud.
    gate: PauseGate | None = None
    holder: _Connection | None = None


@dataclass(frozen=True, slots=True)
class _Refusal:
    code: frames.ErrorCode
    message: str

    @property
    def reason(self) -> str:
        return self.code.name.lower()


def _now_ms() -> float:
    return time.time() * 1000.0


class Uplink:
    def __init__(
        self,
        config: Config,
        mixed: Route,
        participants: Route | None,
        log: events.EventLog,
        clock_ms: Callable[[], float] = _now_ms,
        gate: PauseGate | None = None,
    ) -> None:
        self._config = config
        self._participant_route = participants
        self._log = log
        self._clock_ms = clock_ms
        self._stats = UplinkStatistics()
        self._mixed = _Stream(
            key=MIXED,
            participant=False,
            capture=CaptureStream(config.sample_rate, config.chunk_ms, config.quality),
            route=mixed,
            rate=config.sample_rate,
            counters=StreamCounters(),
            gate=gate,
        )
        self._stats.streams[MIXED] = self._mixed.counters
        self._participants: dict[str, _Stream] = {}
        # Each distinct route once (both kinds of stream may share one); `make_way`
        # walks them after every read.
        self._routes = tuple({id(r): r for r in (mixed, participants) if r is not None}.values())
        # Connections whose first frame waits for a departing connection, in
        # order of arrival; each is judged only once those before it were. Only
        # the first is ever woken: the others' turn comes when it leaves.
        self._waiting: collections.deque[_Connection] = collections.deque()
        # --fill-silence: only the mixed stream; a participant's is speech by nature.
        self._filler = Filler(config.fill_hold_ms, config.chunk_ms) if config.fill_silence else None
        # The fill's timer while it sleeps; a bot frame moves its deadline on.
        self._fill_sleep: trio.CancelScope | None = None

    def statistics(self) -> UplinkStatistics:
        """A snapshot: counting goes on in the sidecar's own copy."""
        return copy.deepcopy(self._stats)

    async def serve_listener(self, listener: trio.SocketListener) -> None:
        await serve_unix_listener(listener, self.serve_connection, name="audio-in")

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        """Handle one bot connection until it ends; never raises for bad input."""
        self._stats.connections += 1
        decoder: frames.FrameDecoder | frames.RawDecoder
        if self._config.input_format == "raw":
            decoder = frames.RawDecoder(self._config.input_rate)
        else:
            decoder = frames.FrameDecoder()
        # A bot writes in real time: its next frame is never there yet when we read.
        stream = wait_first(stream)
        conn = _Connection(self, stream, decoder)
        async with stream:
            try:
                await conn.run()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                conn.reason = f"connection broken: {exc}"
            except trio.Cancelled:
                conn.reason = "sidecar stopping"
                raise
            finally:
                conn.finish()

    def flush(self) -> None:
        """Shutdown: emit every stream's held audio."""
        if self._filler is not None:
            self._filler.stop()
        for stream in (self._mixed, *self._participants.values()):
            self._enqueue(stream, stream.capture.flush())

    def mute(self, muted: bool) -> None:
        """The agent must hear nothing: mute wins over the fill. The audio is
        still read and captured (the bot's stream keeps its clock), then
        dropped, counted as `muted`."""
        self._stats.muted = muted
        if self._filler is not None:
            self._filler.mute(muted)
            self._wake_fill(0.0)

    async def serve_fill(self) -> None:
        """The fill's timer (--fill-silence): asleep while the bot writes (each
        frame only moves its deadline), awake in gaps once per chunk."""
        if self._filler is None:
            return
        while True:
            with trio.CancelScope(deadline=self._fill_wake()) as self._fill_sleep:
                await trio.sleep_forever()
            self._fill_sleep = None
            self._fill_now()

    def _fill_wake(self) -> float:
        """When (trio time) the fill must next look at the stream."""
        assert self._filler is not None
        capture = self._mixed.capture
        end = capture.input_end_ms
        due = None if end is None else self._filler.deadline(end, capture.to_boundary_ms)
        if due is None:
            return math.inf
        delay = max(0.0, (due - self._clock_ms()) / 1000.0)
        if not self._mixed.route.outbox.accepting:
            # Silence is for a listener; while the link is down it would only
            # push the bot's last words out of the replay. Look again later.
            delay = max(delay, self._config.chunk_ms / 1000.0)
        return trio.current_time() + delay

    def _wake_fill(self, delay_s: float) -> None:
        if self._fill_sleep is not None:
            self._fill_sleep.deadline = trio.current_time() + delay_s

    def _fill_now(self) -> None:
        assert self._filler is not None
        stream = self._mixed
        capture = stream.capture
        end = capture.input_end_ms
        if end is None or not stream.route.outbox.accepting:
            return
        now = self._clock_ms()
        spans = self._filler.due(now, end, capture.to_boundary_ms)
        if spans:
            chunks = capture.fill(spans, now)
            self._stats.samples_filled = capture.samples_filled
            self._enqueue(stream, chunks)

    async def make_way(self) -> None:
        """Give the sender a turn per queued message while a backlog exists.

        A bot writing faster than real time would otherwise win every
        scheduling round (one read yields several messages, the sender sends
        one per turn) and the backlog would overflow into drops. This only
        yields; it never waits for the network, and costs nothing in real time.
        """
        for route in self._routes:
            turns = 0
            while self._backlogged(route) and turns < MAX_TURNS:
                await trio.lowlevel.checkpoint()
                turns += 1

    def needs_way(self) -> bool:
        """Whether `make_way` would yield at all: asked after every read, and
        at real time the answer is no (the outbox is empty)."""
        return any(self._backlogged(route) for route in self._routes)

    def _backlogged(self, route: Route) -> bool:
        return route.outbox.accepting and route.outbox.depth_ms > 2 * self._config.chunk_ms

    # -- used by _Connection ---------------------------------------------------

    def received(self, nbytes: int) -> None:
        self._stats.bytes_in += nbytes

    def dtmf(self, stream: _Stream, digit: str) -> None:
        """A key the bot pressed: on to the server, where the dialect can say it."""
        self._stats.dtmf += 1
        stream.route.outbox.put_control(DtmfOut(digit))
        stream.route.notify()

    async def take(self, conn: _Connection, participant: uuid.UUID | None) -> _Stream | _Refusal:
        """The stream a connection's first frame asks for, or why it is refused.

        Judged at once unless a connection holding what it asks for has hung
        up (it is about to let go) or connections that came earlier are still
        waiting for that: then in order of arrival, each once the departure it
        waits for is done, or has stalled for HANDOVER_TIMEOUT_S.
        """
        if not self._waiting and not self._departing(participant):
            return self._judge(conn, participant)
        self._waiting.append(conn)
        try:
            while self._waiting[0] is not conn:
                await conn.next_turn()
            with trio.move_on_after(HANDOVER_TIMEOUT_S) as patience:
                while self._departing(participant):
                    await conn.next_turn()
                    # Woken by a release: the queue moves, this is no stall.
                    patience.deadline = trio.current_time() + HANDOVER_TIMEOUT_S
            return self._judge(conn, participant)
        finally:
            self._waiting.remove(conn)
            self._wake_first()

    def release(self, stream: _Stream, reason: str) -> None:
        stream.holder = None
        if stream.participant:
            self._leave(stream, reason)
        else:
            # The bot may be gone for good: what it said must not wait for its
            # return. The stream itself lives on for the next connection.
            self._enqueue(stream, stream.capture.drain())
            self._log.emit(events.BotDisconnected(socket="in", reason=reason))
        self._wake_first()

    def refused(self, refusal: _Refusal, audio: Iterable[frames.Event]) -> None:
        self._stats.refused[refusal.reason] += 1
        self.unheard(refusal.reason, audio)
        self._log.emit(events.InvalidFrame(socket="in", code=refusal.code, message=refusal.message))

    def unheard(self, reason: str, audio: Iterable[frames.Event]) -> None:
        """Audio read from the bot that no stream will carry."""
        for event in audio:
            if isinstance(event, frames.Audio):
                self._stats.frames_in += 1
                self._stats.samples_in += event.samples
                self._stats.refused_samples[reason] += event.samples

    def audio(self, stream: _Stream, frame: frames.Audio) -> None:
        samples = frame.samples
        stream.counters.frames += 1
        stream.counters.samples += samples
        self._stats.frames_in += 1
        self._stats.samples_in += samples
        if stream.gate is not None:
            # The meeting is loud: the bot's voice waits (a signal across to the downlink).
            stream.gate.observe(frame.pcm, trio.current_time())
        now = self._clock_ms()
        if self._filler is not None and not stream.participant:
            self._filler.heard(now)
            self._wake_fill(self._filler.hold_ms / 1000.0)
        self._enqueue(stream, stream.capture.push(frame, now))

    def end(self, stream: _Stream) -> None:
        """The bot declared the end of the stream: nothing more will complete it."""
        if not stream.participant:
            # A participant's stream is flushed as it is released, right after.
            self._enqueue(stream, stream.capture.flush())
            if self._filler is not None:
                self._filler.ended()
                self._wake_fill(0.0)

    def invalid(self, error: frames.FrameError) -> None:
        self._stats.invalid_frames += 1
        self._log.emit(events.InvalidFrame(socket="in", code=error.code, message=error.message))

    # -- who holds which stream ---------------------------------------------------

    def _departing(self, participant: uuid.UUID | None) -> bool:
        """A connection holding what `participant` asks for has hung up."""
        if participant is None:
            holders: Iterable[_Stream] = (self._mixed,)
        elif str(participant) in self._participants:
            holders = (self._participants[str(participant)],)
        elif len(self._participants) >= self._config.max_participants:
            # Any one of them leaving makes room.
            holders = self._participants.values()
        else:
            return False
        return any(s.holder is not None and s.holder.hung_up() for s in holders)

    def _judge(self, conn: _Connection, participant: uuid.UUID | None) -> _Stream | _Refusal:
        if participant is None:
            if self._mixed.holder is not None:
                return _Refusal(
                    frames.ErrorCode.BUSY, "another bot connection already carries the mixed stream"
                )
            self._mixed.holder = conn
            self._log.emit(events.BotConnected(socket="in"))
            return self._mixed
        return self._join(conn, participant)

    def _join(self, conn: _Connection, participant: uuid.UUID) -> _Stream | _Refusal:
        key = str(participant)
        route = self._participant_route
        if route is None:
            return _Refusal(
                frames.ErrorCode.PER_PARTICIPANT_DISABLED,
                "per-participant audio is off (start the sidecar with --per-participant)",
            )
        if key in self._participants:
            return _Refusal(frames.ErrorCode.BUSY, f"participant {key} is already streaming")
        if len(self._participants) >= self._config.max_participants:
            return _Refusal(
                frames.ErrorCode.TOO_MANY_STREAMS,
                f"already {self._config.max_participants} participant streams (--max-participants)",
            )
        rate = self._config.per_participant_sample_rate
        stream = _Stream(
            key=key,
            participant=True,
            capture=CaptureStream(rate, self._config.chunk_ms, self._config.quality),
            route=route,
            rate=rate,
            counters=StreamCounters(),
            holder=conn,
        )
        self._participants[key] = stream
        self._stats.streams[key] = stream.counters
        self._log.emit(events.ParticipantJoined(participant_uuid=key))
        return stream

    def _leave(self, stream: _Stream, reason: str) -> None:
        self._enqueue(stream, stream.capture.flush())
        del self._participants[stream.key]
        del self._stats.streams[stream.key]
        dropped = stream.route.outbox.release(stream.key)
        dropped += self._stats.muted_by_stream.pop(stream.key, 0)
        counters = stream.counters
        self._log.emit(
            events.ParticipantLeft(
                participant_uuid=stream.key,
                reason=reason,
                frames=counters.frames,
                samples=counters.samples,
                chunks=counters.chunks,
                dropped=dropped,
            )
        )

    def _wake_first(self) -> None:
        if self._waiting:
            self._waiting[0].wake()

    def _enqueue(self, stream: _Stream, chunks: list[Chunk]) -> None:
        if not chunks:
            return
        if self._stats.muted:
            muted = sum(chunk.samples for chunk in chunks)
            self._stats.muted_samples += muted
            self._stats.muted_by_stream[stream.key] += muted
            stream.counters.chunks += len(chunks)
            return
        route, rate, key = stream.route, stream.rate, stream.key
        put = route.outbox.put_audio
        for chunk in chunks:
            put(AudioOut(chunk.pcm, rate, chunk.timestamp_ms, key))
        stream.counters.chunks += len(chunks)
        route.notify()


class _Connection:
    """One bot connection on the audio-in socket."""

    def __init__(
        self,
        uplink: Uplink,
        stream: trio.abc.Stream,
        decoder: frames.FrameDecoder | frames.RawDecoder,
    ) -> None:
        self.uplink = uplink
        self.stream = stream
        self.decoder = decoder
        # The stream this connection feeds, once its first frame has chosen one.
        self.feeds: _Stream | None = None
        self.reason = "bot closed the connection"
        self._turn = trio.Event()

    def hung_up(self) -> bool:
        return peer_hung_up(self.stream)

    async def next_turn(self) -> None:
        """Wait in Uplink.take until `wake`."""
        self._turn = trio.Event()
        await self._turn.wait()

    def wake(self) -> None:
        self._turn.set()

    async def run(self) -> None:
        up, decoder = self.uplink, self.decoder
        while True:
            data = await self.stream.receive_some(READ_SIZE)
            if not data:
                error = decoder.end_of_stream()
                if error is not None:
                    up.invalid(error)
                    # Only the bot's sending side may be closed: it can still
                    # read why its last frame was thrown away.
                    await self._refuse(error.code, error.message)
                return
            up.received(len(data))
            decoder.feed(bytes(data))
            for event in decoder:
                # The per-frame case, without `_handle`'s coroutine: audio for
                # the stream this connection already feeds (what `_handle` does).
                if type(event) is frames.Audio and self.feeds is not None:
                    up.audio(self.feeds, event)
                    continue
                done = await self._handle(event)
                if done:
                    return
            if up.needs_way():
                await up.make_way()

    async def _handle(self, event: frames.Event) -> bool:
        """Returns True when the connection must end."""
        up = self.uplink
        if isinstance(event, frames.FrameError):
            up.invalid(event)
            await self._refuse(event.code, event.message)
            return True
        if isinstance(event, frames.StreamId) and self.feeds is not None:
            message = "a UUID frame must be the first frame of a connection"
            up.invalid(frames.FrameError(frames.ErrorCode.UNEXPECTED_FRAME, message))
            await self._refuse(frames.ErrorCode.UNEXPECTED_FRAME, message)
            return True
        if self.feeds is None:
            participant = event.uuid if isinstance(event, frames.StreamId) else None
            try:
                taken = await up.take(self, participant)
            except trio.Cancelled:
                up.unheard("stopping", (event, *self.decoder))
                raise
            if isinstance(taken, _Refusal):
                # What was read with it goes nowhere either; the rest stays unread.
                up.refused(taken, (event, *self.decoder))
                await self._refuse(taken.code, taken.message)
                return True
            self.feeds = taken
            if isinstance(event, frames.StreamId):
                return False
        if isinstance(event, frames.Audio):
            up.audio(self.feeds, event)
        elif isinstance(event, frames.Terminate):
            self.reason = "bot sent terminate"
            up.end(self.feeds)
            return True
        elif isinstance(event, frames.Dtmf):
            up.dtmf(self.feeds, event.digit)
        return False

    async def _refuse(self, code: int, message: str) -> None:
        self.reason = message
        await refuse(self.stream, code, message)

    def finish(self) -> None:
        if self.feeds is not None:
            self.uplink.release(self.feeds, self.reason)
