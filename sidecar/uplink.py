"""The way up: bot connections on the audio-in socket -> messages in the outbox.

Each connection is one stream. A connection that opens with a UUID frame is one
participant's stream (`realtime_audio.per_participant`); any other is the
mixed stream, which survives the bot reconnecting. The reader never waits on
the network: messages land in the Outbox, which is bounded and counts drops.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from sidecar import events, frames, messages
from sidecar.capture import CaptureStream
from sidecar.chunker import Chunk
from sidecar.config import Config
from sidecar.gate import PauseGate
from sidecar.outbox import Outbox, Outgoing

# Small reads keep a bot that writes faster than real time from starving the
# sender: each read yields to the websocket task after a few frames.
READ_SIZE = 4096
MAX_TURNS = 16
MIXED = "mixed"
ACCEPT_RETRY_S = 0.1
# Bound on telling a bot why its connection is closed: a bot that does not read
# must not hold the task.
REFUSE_TIMEOUT_S = 1.0

log = logging.getLogger("sidecar.uplink")


@dataclass(slots=True)
class Route:
    """Where one kind of stream's messages go: an outbox and its link."""

    outbox: Outbox
    notify: Callable[[], None]
    connected: Callable[[], bool]


@dataclass(slots=True)
class StreamCounters:
    frames: int = 0
    samples: int = 0
    chunks: int = 0


@dataclass(slots=True)
class UplinkStatistics:
    connections: int = 0
    frames_in: int = 0
    bytes_in: int = 0
    samples_in: int = 0
    invalid_frames: int = 0
    dtmf: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    streams: dict[str, StreamCounters] = field(default_factory=dict)


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
        self._gate = gate
        self._mixed_route = mixed
        self._participant_route = participants
        self._log = log
        self._clock_ms = clock_ms
        self._mixed = CaptureStream(config.sample_rate, config.chunk_ms, config.quality)
        self._mixed_busy = False
        self._participants: dict[str, CaptureStream] = {}
        self._stats = UplinkStatistics()
        self._stats.streams[MIXED] = StreamCounters()

    def statistics(self) -> UplinkStatistics:
        return self._stats

    async def serve_listener(self, listener: trio.SocketListener) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    # Out of file descriptors or memory: the streams already
                    # running matter more than a new one; try again shortly.
                    log.warning("audio-in: cannot accept a connection: %s", exc)
                    await trio.sleep(ACCEPT_RETRY_S)
                    continue
                nursery.start_soon(self.serve_connection, stream)

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        """Handle one bot connection until it ends; never raises for bad input."""
        self._stats.connections += 1
        decoder: frames.FrameDecoder | frames.RawDecoder
        if self._config.input_format == "raw":
            decoder = frames.RawDecoder(self._config.input_rate)
        else:
            decoder = frames.FrameDecoder()
        conn = _Connection(self, stream)
        async with stream:
            try:
                await conn.run(decoder)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                conn.reason = f"connection broken: {exc}"
            except trio.Cancelled:
                conn.reason = "sidecar stopping"
                raise
            finally:
                conn.finish()

    def flush(self) -> None:
        """Shutdown: emit every stream's held audio."""
        self._enqueue(MIXED, self._mixed.flush())
        for key, capture in self._participants.items():
            self._enqueue(key, capture.flush())

    async def make_way(self) -> None:
        """Give the sender a turn per queued message while a backlog exists.

        A bot writing faster than real time would otherwise win every
        scheduling round (one read yields several messages, the sender sends
        one per turn) and the backlog would overflow into drops. This only
        yields; it never waits for the network, and costs nothing in real time.
        """
        routes = {id(r): r for r in (self._mixed_route, self._participant_route) if r}
        for route in routes.values():
            turns = 0
            while (
                route.connected()
                and route.outbox.depth_ms > 2 * self._config.chunk_ms
                and turns < MAX_TURNS
            ):
                await trio.lowlevel.checkpoint()
                turns += 1

    def end_mixed(self) -> None:
        """The bot declared the end of the mixed stream: nothing more will complete it."""
        self._enqueue(MIXED, self._mixed.flush())

    # -- used by _Connection ---------------------------------------------------

    def claim_mixed(self) -> bool:
        if self._mixed_busy:
            return False
        self._mixed_busy = True
        self._log.emit(events.BotConnected(socket="in"))
        return True

    def release_mixed(self, reason: str) -> None:
        self._mixed_busy = False
        # The bot may be gone for good: what it said must not wait for its return.
        self._enqueue(MIXED, self._mixed.drain())
        self._log.emit(events.BotDisconnected(socket="in", reason=reason))

    def join(self, participant: uuid.UUID) -> tuple[frames.ErrorCode, str] | str:
        key = str(participant)
        if self._participant_route is None:
            return (
                frames.ErrorCode.PER_PARTICIPANT_DISABLED,
                "per-participant audio is off (start the sidecar with --per-participant)",
            )
        if key in self._participants:
            return frames.ErrorCode.BUSY, f"participant {key} is already streaming"
        if len(self._participants) >= self._config.max_participants:
            return (
                frames.ErrorCode.TOO_MANY_STREAMS,
                f"already {self._config.max_participants} participant streams (--max-participants)",
            )
        self._participants[key] = CaptureStream(
            self._config.per_participant_sample_rate, self._config.chunk_ms, self._config.quality
        )
        self._stats.streams[key] = StreamCounters()
        self._log.emit(events.ParticipantJoined(participant_uuid=key))
        return key

    def leave(self, key: str, reason: str) -> None:
        capture = self._participants.pop(key, None)
        if capture is None:
            return
        self._enqueue(key, capture.flush())
        counters = self._stats.streams.pop(key, StreamCounters())
        assert self._participant_route is not None
        dropped = self._participant_route.outbox.release(key)
        self._log.emit(
            events.ParticipantLeft(
                participant_uuid=key,
                reason=reason,
                frames=counters.frames,
                samples=counters.samples,
                chunks=counters.chunks,
                dropped=dropped,
            )
        )

    def audio(self, key: str, frame: frames.Audio) -> None:
        capture = self._mixed if key == MIXED else self._participants[key]
        counters = self._stats.streams[key]
        counters.frames += 1
        counters.samples += frame.samples
        self._stats.frames_in += 1
        self._stats.samples_in += frame.samples
        if self._gate is not None and key == MIXED:
            # The meeting is loud: the bot's voice waits (a signal across to the downlink).
            self._gate.observe(frame.pcm, trio.current_time())
        self._enqueue(key, capture.push(frame, self._clock_ms()))

    def invalid(self, error: frames.FrameError) -> None:
        self._stats.invalid_frames += 1
        self._log.emit(events.InvalidFrame(socket="in", code=error.code, message=error.message))

    def _enqueue(self, key: str, chunks: list[Chunk]) -> None:
        if not chunks:
            return
        if key == MIXED:
            route, rate = self._mixed_route, self._config.sample_rate
        else:
            assert self._participant_route is not None
            route, rate = self._participant_route, self._config.per_participant_sample_rate
        connected = route.connected()
        counters = self._stats.streams.get(key)
        for chunk in chunks:
            text = _encode(self._config.bot_id, key, chunk, rate)
            item = Outgoing(text, chunk.samples, chunk.samples * 1000.0 / rate, key)
            route.outbox.put_audio(item, connected)
            if counters is not None:
                counters.chunks += 1
        route.notify()


def _encode(bot_id: str, key: str, chunk: Chunk, rate: int) -> str:
    message: messages.MixedAudio | messages.ParticipantAudio
    if key == MIXED:
        message = messages.MixedAudio(
            bot_id=bot_id,
            data=messages.MixedData(
                chunk=chunk.pcm,
                sample_rate=rate,  # type: ignore[arg-type]
                timestamp_ms=chunk.timestamp_ms,
            ),
        )
    else:
        message = messages.ParticipantAudio(
            bot_id=bot_id,
            data=messages.ParticipantData(
                chunk=chunk.pcm,
                sample_rate=rate,  # type: ignore[arg-type]
                timestamp_ms=chunk.timestamp_ms,
                participant_uuid=key,
            ),
        )
    return messages.encode(message).decode()


class _Connection:
    """One bot connection on the audio-in socket."""

    def __init__(self, uplink: Uplink, stream: trio.abc.Stream) -> None:
        self.uplink = uplink
        self.stream = stream
        self.key: str | None = None
        self.reason = "bot closed the connection"

    async def run(self, decoder: frames.FrameDecoder | frames.RawDecoder) -> None:
        up = self.uplink
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
            up._stats.bytes_in += len(data)
            decoder.feed(bytes(data))
            for event in decoder:
                done = await self._handle(event)
                if done:
                    return
            await up.make_way()

    async def _handle(self, event: frames.Event) -> bool:
        """Returns True when the connection must end."""
        up = self.uplink
        if isinstance(event, frames.FrameError):
            up.invalid(event)
            await self._refuse(event.code, event.message)
            return True
        if isinstance(event, frames.StreamId):
            if self.key is not None:
                message = "a UUID frame must be the first frame of a connection"
                up.invalid(frames.FrameError(frames.ErrorCode.UNEXPECTED_FRAME, message))
                await self._refuse(frames.ErrorCode.UNEXPECTED_FRAME, message)
                return True
            joined = up.join(event.uuid)
            if isinstance(joined, tuple):
                code, message = joined
                up._stats.refused[code.name.lower()] += 1
                up._log.emit(events.InvalidFrame(socket="in", code=code, message=message))
                await self._refuse(code, message)
                return True
            self.key = joined
            return False
        if self.key is None:
            if not up.claim_mixed():
                message = "another bot connection already carries the mixed stream"
                up._stats.refused["busy"] += 1
                up._log.emit(
                    events.InvalidFrame(socket="in", code=frames.ErrorCode.BUSY, message=message)
                )
                await self._refuse(frames.ErrorCode.BUSY, message)
                return True
            self.key = MIXED
        if isinstance(event, frames.Audio):
            up.audio(self.key, event)
        elif isinstance(event, frames.Terminate):
            self.reason = "bot sent terminate"
            if self.key == MIXED:
                up.end_mixed()
            return True
        elif isinstance(event, frames.Dtmf):
            up._stats.dtmf += 1
        return False

    async def _refuse(self, code: int, message: str) -> None:
        self.reason = message
        with (
            trio.move_on_after(REFUSE_TIMEOUT_S),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await self.stream.send_all(frames.encode_error(code, message))

    def finish(self) -> None:
        up = self.uplink
        if self.key == MIXED:
            up.release_mixed(self.reason)
        elif self.key is not None:
            up.leave(self.key, self.reason)
