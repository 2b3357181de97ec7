"""The way down: server messages -> Voice -> paced frames on the audio-out socket.

The playout clock ticks on an absolute grid (no drift) and sleeps while there
is nothing to play. Frames go to the bot through a short queue served by a
writer task, so a bot that stops reading can never stall the clock: its frames
are dropped and counted instead. A mark rides with the frame that completes
it and is echoed once that frame was written to the bot, not before.

`agent_speaking` follows what the bot receives, not what the server says: the
playout tells which frame starts an utterance and when one has ended; the
true is emitted when the first frame of an utterance is written to the bot,
the false when the frame that was last when its end became known has been
written (`finished`), or at a clear (`cleared`; after the frame being written,
if one is). A frame that never reaches the bot (no bot, a bot not reading)
announces nothing: the true waits for the first frame that is written, and an
utterance none of whose frames was written has no events at all. Every true
is followed by exactly one false: an end riding on a frame that is then
dropped (the bot left) is emitted at the drop.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import trio

from sidecar import events, frames, messages
from sidecar.config import Config
from sidecar.dialects.base import (
    ClearedOut,
    ClearPlayout,
    Control,
    CutAudio,
    ErrorOut,
    Heard,
    Incoming,
    Invalid,
    MarkIn,
    MarkOut,
    Notice,
    PlayAudio,
    SessionEnded,
    ToolCallCancelledIn,
    ToolCallIn,
)
from sidecar.gate import PauseGate
from sidecar.pcm import SAMPLE_BYTES
from sidecar.playout import MAX_PENDING_MARK_CHARS, MAX_PENDING_MARKS, MarkResolved
from sidecar.ratelimit import TokenBucket
from sidecar.sockets import peer_hung_up, refuse, serve_unix_listener
from sidecar.voice import Voice

# Frames queued for the bot beyond the one being written: enough to ride out a
# scheduling hiccup, short enough that a stuck bot costs little memory.
WRITE_QUEUE_FRAMES = 5
# After a stall longer than this many periods the grid restarts instead of
# catching up, because catching up would burst frames faster than real time.
MAX_LATE_PERIODS = 3
# Bot output is resampled this much at a time, the clock free to run in between:
# a 700 ms message done at once held the loop for ~5 ms, the pacing jitter's p99.
SLICE_MS = 50
# Segment changes remembered ahead of the playout, to name the segment an
# utterance began with: far more than the replies 60 s of playout hold.
MAX_SEGMENT_STARTS = 256
BOT_CLOSED = "bot closed the connection"
TOO_MANY_MARKS = messages.MessageError(
    messages.ErrorCode.TOO_MANY_MARKS,
    f"a mark was refused: {MAX_PENDING_MARKS} marks, or names of {MAX_PENDING_MARK_CHARS} "
    "characters in all, already wait for their audio; it is answered as cleared",
)


@dataclass(slots=True)
class _Outgoing:
    """A frame on its way to the bot, with the marks it completes."""

    data: bytes
    marks: tuple[MarkResolved, ...]
    samples: int  # of audio, the padding of an utterance's last frame not included
    frame_samples: int  # what the bot will hear, padding included
    segment: str | None = None  # the segment its utterance began with
    # The utterance ends once this frame is written (set after it was queued).
    end: Literal["finished", "cleared"] | None = None


@dataclass(slots=True)
class DownlinkStatistics:
    invalid_messages: int = 0
    invalid_by_code: Counter[str] = field(default_factory=Counter)
    error_replies: int = 0
    error_replies_suppressed: int = 0
    clears: int = 0
    marks: int = 0
    frames_written: int = 0
    samples_written: int = 0
    dropped_frames: Counter[str] = field(default_factory=Counter)
    # The audio in those frames (padding not counted), by the same reasons.
    dropped_samples: Counter[str] = field(default_factory=Counter)
    bot_connections: int = 0
    # The clock woke more than MAX_LATE_PERIODS late (the process stalled) and
    # restarted its grid: the audio after it is late, not lost.
    clock_restarts: int = 0
    # Audio the server sent for a reply a barge-in had already cut (never
    # played): at the rate it came in, and as output-rate samples, the unit of
    # the drops, where it is a `cleared` one.
    cut_samples: int = 0
    cut_resampled: int = 0
    # Segment changes not remembered (MAX_SEGMENT_STARTS already ahead): an
    # utterance starting in one is named after the last one remembered.
    segment_starts_dropped: int = 0


class Downlink:
    def __init__(
        self,
        config: Config,
        log: events.EventLog,
        reply: Callable[[Control], None],
        gate: PauseGate | None = None,
        *,
        error_replies: bool = True,
        on_calls: Callable[[ToolCallIn | ToolCallCancelledIn | SessionEnded], None] | None = None,
    ) -> None:
        self._config = config
        self._on_calls = on_calls
        self._gate = gate
        self._log = log
        self._reply = reply
        self._error_replies = error_replies
        # The segment (an agent's reply) now arriving, and where its audio
        # starts on the voice's sample timeline, to tell a barge-in how much
        # of it was heard.
        self._segment: str | None = None
        self._segment_start = 0
        # The segment that was arriving when playback was last cleared: the
        # rest of it, still on its way, is never played (the bot's clear may
        # reach the server only after it sent more of that reply).
        self._cut_segment: str | None = None
        # Where each segment's audio starts in that timeline, oldest first,
        # the first at or before the voice's play position.
        self._segment_starts: collections.deque[tuple[int, str]] = collections.deque()
        # The segment of the utterance the playout is handing out, and whether
        # (and for which segment) the bot was told the agent is speaking.
        self._utterance_segment: str | None = None
        self._speaking = False
        self._speaking_segment: str | None = None
        self.voice = Voice(
            config.output_rate,
            config.frame_ms,
            config.max_playout_ms,
            config.jitter_ms,
            config.quality,
        )
        self._bucket = TokenBucket(config.error_replies_per_s, max(1.0, config.error_replies_per_s))
        self._wake = trio.Event()
        self._bot: trio.abc.Stream | None = None
        self._queue: collections.deque[_Outgoing] = collections.deque()
        self._queued = trio.Event()
        self._writing: _Outgoing | None = None
        self._bot_sock: socket.socket | None = None
        self._warned_no_bot = False
        self._stats = DownlinkStatistics()

    def statistics(self) -> DownlinkStatistics:
        """A snapshot: counting goes on in the sidecar's own copy."""
        return copy.deepcopy(self._stats)

    # -- messages from the server ----------------------------------------------

    async def on_incoming(self, incoming: Incoming) -> None:
        """One thing the server said, already decoded by the dialect."""
        match incoming:
            case PlayAudio(pcm=pcm, rate=rate, segment=segment):
                if segment is not None and segment == self._cut_segment:
                    self._cut(len(pcm) // SAMPLE_BYTES, rate)
                    return
                if segment is not None and segment != self._segment:
                    self._segment = segment
                    self._segment_start = self.voice.written
                    self._segment_started(segment, self._segment_start)
                await self._bot_output(pcm, rate)
            case ClearPlayout():
                self.clear()
            case MarkIn(name=name):
                self._stats.marks += 1
                resolved = self.voice.mark(name)
                if any(mark.refused for mark in resolved):
                    self._invalid(TOO_MANY_MARKS)
                self._resolved(resolved)
                self._wake.set()
            case CutAudio(samples=samples, rate=rate):
                self._cut(samples, rate)
            case Invalid(error=error):
                self._invalid(error)
            case Notice(event=event):
                self._log.emit(event)
            case ToolCallIn() | ToolCallCancelledIn() | SessionEnded():
                # The control plane's business: the tool calls waiting for the bot.
                if self._on_calls is not None:
                    self._on_calls(incoming)

    def _cut(self, samples: int, rate: int) -> None:
        resampled = round(samples * self._config.output_rate / rate)
        self._stats.cut_samples += samples
        self._stats.cut_resampled += resampled
        self._stats.dropped_samples["cleared"] += resampled

    def clear(self, *, by_bot: bool = False) -> None:
        """Stop playback now: the server's barge-in, or the bot's `clear` command
        (`by_bot`), which the dialect may pass on as an interruption."""
        self._stats.clears += 1
        self._cut_segment = self._segment
        # Frames already handed to the writer count as unplayed too; their
        # marks come first, being older than those still in the playout.
        unsent = tuple(self._queue)
        heard = self._heard(unsent)
        unsent_ms = sum(item.samples for item in unsent) * 1000 / self._config.output_rate
        self._log.emit(
            events.PlayoutCleared(
                dropped_ms=round(unsent_ms + self.voice.playout.buffered_ms),
                heard_ms=None if heard is None else heard.ms,
            )
        )
        self._queue.clear()
        self._dropped("cleared", unsent)
        self._resolved(tuple(MarkResolved(m.name, False) for item in unsent for m in item.marks))
        self._resolved(self.voice.clear())
        if self._writing is not None and self._writing.end is None:
            # Being written: the bot gets it, and hears the cut after it.
            self._writing.end = "cleared"
        else:
            self._not_speaking("cleared")
        self._reply(ClearedOut(heard, by_bot))

    def _heard(self, unsent: tuple[_Outgoing, ...]) -> Heard | None:
        """How much of the current segment reached the bot before a clear."""
        if self._segment is None:
            return None
        unplayed = sum(item.samples for item in unsent)
        return Heard(self._segment, self.voice.heard_ms(self._segment_start, unplayed))

    async def _bot_output(self, pcm: bytes, rate: int) -> None:
        step = rate * SLICE_MS // 1000 * SAMPLE_BYTES
        # An empty chunk still goes in: a change of rate flushes the old resampler.
        for start in range(0, max(len(pcm), 1), step):
            if start:
                await trio.lowlevel.checkpoint()
            self.voice.audio(pcm[start : start + step], rate)
            self._wake.set()

    def _invalid(self, error: messages.MessageError) -> None:
        self._stats.invalid_messages += 1
        self._stats.invalid_by_code[error.code] += 1
        self._log.emit(
            events.InvalidMessage(code=error.code, message=error.message, trigger=error.trigger)
        )
        if not self._error_replies:
            return  # the dialect has no error reply: stdout is the only report
        if self._bucket.take(trio.current_time()):
            self._stats.error_replies += 1
            self._reply(ErrorOut(error))
        else:
            self._stats.error_replies_suppressed += 1

    def _resolved(self, marks: tuple[MarkResolved, ...]) -> None:
        for mark in marks:
            status: messages.MarkStatus = "played" if mark.played else "cleared"
            self._log.emit(events.MarkPlayed(name=mark.name, status=status))
            self._reply(MarkOut(mark.name, mark.played))

    # -- the playout clock ---------------------------------------------------------

    async def serve_clock(self) -> None:
        period = self._config.frame_ms / 1000.0
        deadline = trio.current_time()
        while True:
            if self.voice.idle:
                # A fresh Event only to sleep on, not one per tick: producers set
                # whichever is current, and nothing runs between here and the wait.
                self._wake = trio.Event()
                await self._wake.wait()
                deadline = trio.current_time()
            if self._gate is None or not self._gate.paused(trio.current_time()):
                tick = self.voice.tick()
                if tick.frame is not None:
                    if tick.starts:
                        # The timeline position of the frame's first sample.
                        first = self.voice.played - self.voice.playout.frame_samples + tick.padding
                        self._utterance_segment = self._segment_at(first)
                    self._deliver(tick.frame, tick.marks, tick.padding)
                else:
                    self._resolved(tick.marks)
                if tick.ended:
                    self._utterance_ended()
            # Paused (the meeting is loud): no tick, so the playout holds its audio
            # and its state; the grid goes on and playback resumes on it.
            deadline += period
            now = trio.current_time()
            if now - deadline > MAX_LATE_PERIODS * period:
                self._stats.clock_restarts += 1
                deadline = now
            await trio.sleep_until(deadline)

    def _deliver(self, frame: bytes, marks: tuple[MarkResolved, ...], padding: int) -> None:
        item = _Outgoing(
            frames.encode_audio(frame, self._config.output_rate),
            marks,
            len(frame) // SAMPLE_BYTES - padding,
            len(frame) // SAMPLE_BYTES,
            self._utterance_segment,
        )
        if self._bot is None:
            self._dropped("no_bot", (item,))
            if not self._warned_no_bot:
                self._warned_no_bot = True
                self._log.emit(
                    events.WarningEvent(
                        message="bot output is being dropped: no bot is connected to audio-out",
                        code="no_bot",
                    )
                )
            # Nobody hears it, but its time has passed: the server's timeline goes on.
            self._resolved(marks)
            return
        if len(self._queue) >= WRITE_QUEUE_FRAMES:
            self._dropped("bot_not_reading", (item,))
            self._resolved(marks)
            return
        if not self._queue and self._writing is None and self._bot_sock is not None:
            # The usual case: the bot keeps up, the socket has room, and the
            # frame goes out from the clock itself instead of waking the writer.
            try:
                sent = self._bot_sock.send(item.data)
            except OSError:
                sent = 0  # the writer task meets the error and ends the connection
            if sent == len(item.data):
                self._written(item)
                return
            item = dataclasses.replace(item, data=item.data[sent:])
        self._queue.append(item)
        self._queued.set()

    def _written(self, item: _Outgoing) -> None:
        if not self._speaking:
            self._speaking = True
            self._speaking_segment = item.segment
            self._log.emit(
                events.AgentSpeaking(speaking=True, segment=item.segment, cause="started")
            )
        self._stats.frames_written += 1
        self._stats.samples_written += item.frame_samples
        self._resolved(item.marks)
        if item.end is not None:
            self._not_speaking(item.end)

    # -- agent_speaking ----------------------------------------------------------------

    def _segment_started(self, segment: str, pos: int) -> None:
        self._segment_at(self.voice.played)  # forget what was played
        if len(self._segment_starts) >= MAX_SEGMENT_STARTS:
            self._stats.segment_starts_dropped += 1
            return
        self._segment_starts.append((pos, segment))

    def _segment_at(self, pos: int) -> str | None:
        """The segment whose audio holds sample `pos` of the voice's timeline."""
        starts = self._segment_starts
        while len(starts) > 1 and starts[1][0] <= pos:
            starts.popleft()
        if starts and starts[0][0] <= pos:
            return starts[0][1]
        return None

    def _utterance_ended(self) -> None:
        """The playout knows the utterance is over: tell the bot after its last frame."""
        last = self._queue[-1] if self._queue else self._writing
        if last is None:
            self._not_speaking("finished")
        elif last.end is None:
            last.end = "finished"
        # Else that frame already ends an utterance the bot was never told of
        # (frames are written in order): this one was not announced either.

    def _not_speaking(self, cause: Literal["finished", "cleared"]) -> None:
        if not self._speaking:
            return
        self._speaking = False
        self._log.emit(
            events.AgentSpeaking(speaking=False, segment=self._speaking_segment, cause=cause)
        )

    def _dropped(self, reason: str, items: tuple[_Outgoing, ...]) -> None:
        self._stats.dropped_frames[reason] += len(items)
        self._stats.dropped_samples[reason] += sum(item.samples for item in items)

    # -- the bot on the audio-out socket ---------------------------------------------

    async def serve_listener(self, listener: trio.SocketListener) -> None:
        await serve_unix_listener(listener, self.serve_connection, name="audio-out")

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        async with stream:
            if self._bot is not None:
                message = "another bot is already connected to audio-out"
                self._log.emit(
                    events.InvalidFrame(socket="out", code=frames.ErrorCode.BUSY, message=message)
                )
                await refuse(stream, frames.ErrorCode.BUSY, message)
                return
            self._bot = stream
            self._bot_sock = _second_handle(stream)
            self._warned_no_bot = False
            self._stats.bot_connections += 1
            self._log.emit(events.BotConnected(socket="out"))
            # Anything but the bot or its connection ending is the sidecar
            # stopping (cancellation); a bug would exit with its traceback.
            reason = "sidecar stopping"
            try:
                reason = await self._serve_bot(stream)
            finally:
                self._bot = None
                if self._bot_sock is not None:
                    self._bot_sock.close()
                    self._bot_sock = None
                unsent = tuple(self._queue)
                if self._writing is not None:
                    unsent = (self._writing, *unsent)
                    self._writing = None
                self._queue.clear()
                self._dropped("bot_disconnected", unsent)
                self._resolved(tuple(m for item in unsent for m in item.marks))
                for item in unsent:
                    if item.end is not None:
                        # The end rode on a frame the bot will never get.
                        self._not_speaking(item.end)
                self._log.emit(events.BotDisconnected(socket="out", reason=reason))

    async def _serve_bot(self, stream: trio.abc.Stream) -> str:
        """Write to the bot until it leaves; returns why the connection ended.

        Its reader and its writer each meet the end of the connection in their
        own way (EOF, or a write that fails, whichever comes first); the first
        to end it ends the other, and neither lets a broken connection escape
        as an error: that is the bot leaving, not a fault of the sidecar.
        """
        ended: list[str] = []
        async with trio.open_nursery() as nursery:

            async def until_ended(side: Callable[[trio.abc.Stream], Awaitable[str]]) -> None:
                ended.append(await side(stream))
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_ended, self._watch_bot)
            nursery.start_soon(until_ended, self._write)
        return ended[0]

    async def _watch_bot(self, stream: trio.abc.Stream) -> str:
        # The bot has nothing to say on this socket; reading tells us when it leaves.
        try:
            while await stream.receive_some(4096):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            return _broken(stream, exc)
        return BOT_CLOSED

    async def _write(self, stream: trio.abc.Stream) -> str:
        try:
            while True:
                while self._queue:
                    item = self._writing = self._queue.popleft()
                    await stream.send_all(item.data)
                    self._writing = None
                    self._written(item)
                self._queued = trio.Event()
                await self._queued.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            return _broken(stream, exc)


def _broken(stream: trio.abc.Stream, exc: Exception) -> str:
    # A bot that closes its end with frames unread (it had stopped reading, or
    # left mid-frame) makes our write fail (EPIPE) and our read too (a Unix
    # socket reports ECONNRESET for the discarded data): it left all the same.
    if peer_hung_up(stream):
        return BOT_CLOSED
    return f"connection broken: {exc}"


def _second_handle(stream: trio.abc.Stream) -> socket.socket | None:
    """A second, non-blocking descriptor on the bot's socket, so the clock can
    try a write without awaiting; None when there is none to be had."""
    if not isinstance(stream, trio.SocketStream):
        return None
    try:
        sock = socket.socket(fileno=os.dup(stream.socket.fileno()))
    except OSError:
        # Out of file descriptors: the handle is only a shortcut, and the
        # writer task serves the bot without it.
        return None
    sock.setblocking(False)
    return sock
