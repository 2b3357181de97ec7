"""Playout buffer for the bot's output audio (the "speaker" side), sans-I/O.

Audio sent back by the user's websocket server (already at the output rate, s16le mono) is
queued with :meth:`Playout.push`. A real-time clock outside this module calls
:meth:`Playout.tick` once per frame period and writes the returned frame, if any, to the bot.
Nothing here reads a clock: time is measured purely in ticks.

Definitions (these are the contract the tests check):

Idle / playing
    The buffer starts *idle*. It returns to idle after an utterance ended cleanly (its tail was
    handed out, or its last frame ended exactly at a mark, or a mark arrived once everything had
    been handed out), after an underrun, and after :meth:`Playout.clear`.

Jitter start
    An idle buffer holding audio starts playing on the first tick at which any of these holds:
    at least ``jitter_ms`` is buffered; a mark is pending (the server declared the end of that
    audio, so waiting for more is pointless); or the audio has already been held back by
    ``ceil(jitter_ms / frame_ms)`` earlier ticks (so a short utterance is delayed by at most
    ``jitter_ms``). The starting tick hands out a frame if it can. Once playing, every tick
    hands out at most one frame.

Tail
    A remainder shorter than a frame is the *tail* of an utterance, and is padded with silence
    and handed out, when a mark is pending whose audio is all here (it lies within that
    remainder; one still awaiting its audio does not count, see Marks), or
    when an earlier tick since the last accepted push already found less than a frame
    buffered. The first tick to find a short remainder therefore hands out nothing (a one-tick
    grace): a server streaming 30 ms pieces against 20 ms frames keeps up within the grace, and
    no silence is spliced into its speech. Marks never cut frames: a mark in the middle of a
    full frame's worth of audio just rides along.

Running dry and underruns
    A tick *runs dry* exactly when the buffer is playing, holds no audio at all, and the
    previous frame did not end the utterance cleanly (see Idle). Only then is
    ``Tick.underrun`` true; the buffer goes idle so the jitter buffer refills. A grace tick
    (short remainder, see Tail) does not run dry, nor does any tick while idle.
    Running dry is ambiguous: the server may be late, or the utterance may simply have ended
    without a mark. The ``underruns`` statistic therefore counts a dry spell only once audio
    arrives again within ``resume_ms`` (default 100 ms) of it: a hiccup inside speech. A
    stream that just ends, or pauses for longer (between sentences), is not an underrun.

Overflow
    At most ``max_ms`` is buffered. The excess of a push is refused (drop newest), so the start
    of an utterance stays intact; the cap is generous because servers send faster than real
    time.

Marks
    A mark resolves ``played=True`` once the frame holding the last byte queued before it has
    been returned by :meth:`Playout.tick`; immediately if nothing is buffered when it is queued.
    A mark may also lie ``ahead`` of what was queued: audio still inside the resampler, to be
    pushed later. Such a mark *awaits* its audio; it starts playback like any pending mark, but
    does not make a short remainder a tail (its audio is not all here yet). Should a push be
    cut short by the cap, a mark beyond what was accepted moves back to the end of it: its
    audio was refused. :meth:`Playout.clear` resolves every pending mark ``played=False``.
    Order is preserved. At most ``MAX_PENDING_MARKS`` marks, with names of at most
    ``MAX_PENDING_MARK_CHARS`` characters in all, wait at once: a mark beyond either is
    refused, resolved at once ``played=False, refused=True`` and counted (``marks_refused``).

Speech
    What the bot hears as one utterance, for the ``agent_speaking`` event. It begins with the
    first frame handed out while none is open (``Tick.starts``). It ends at :meth:`Playout.clear`,
    or once no audio has been buffered for as long as a dry spell lasts before it proves an end:
    on the tick at which a dry spell starting right after the utterance's last frame would run
    out, ``ceil(resume_ms / frame_ms) + 2`` ticks after that frame (``Tick.ended``, a tick
    without a frame). A tail, a mark at the end of the audio, running dry, or a mark arriving
    once everything was handed out do not end it by themselves: each is also what a late
    server, or one that marks every piece, looks like; audio back within that window carries
    the utterance on (an underrun never splits speech). The playout's own states are unchanged
    by this: it goes idle and refills its jitter buffer inside an utterance as before.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import deque
from dataclasses import dataclass
from typing import Final

from sidecar.pcm import SAMPLE_BYTES

__all__ = ["MarkResolved", "PlayState", "Playout", "PlayoutStatistics", "Tick"]

MAX_PENDING_MARKS: Final = 8192
"""Marks waiting for their audio at once: far beyond one per 20 ms piece of a
full 60 s playout (3000), far below what would weigh on memory."""
MAX_PENDING_MARK_CHARS: Final = 1 << 20
"""Their names together: a server's 1 MB names once held 341 MiB in 300 marks."""


class PlayState(enum.Enum):
    """Where the buffer is between utterances and inside one (see the definitions above)."""

    IDLE = "idle"
    """Not handing out frames: empty, or holding audio while its jitter buffer fills."""
    PLAYING = "playing"
    """Handing out a frame per tick."""
    DRY = "dry"
    """Ran dry while playing (an underrun), and the dry spell may still turn out to be a
    gap in speech rather than the end: idle, but counting ticks up to ``resume_ms``."""


@dataclass(frozen=True, slots=True)
class MarkResolved:
    name: str
    played: bool
    refused: bool = False
    """Never held: the pending marks were at their limit (see Marks)."""


@dataclass(frozen=True, slots=True)
class Tick:
    frame: bytes | None
    marks: tuple[MarkResolved, ...]
    underrun: bool
    padding: int = 0
    """Samples of silence at the end of `frame` (an utterance's tail)."""
    starts: bool = False
    """`frame` is the first of an utterance (see Speech)."""
    ended: bool = False
    """No frame: the utterance whose frames were handed out is over (see Speech)."""


@dataclass(frozen=True, slots=True)
class PlayoutStatistics:
    frames_out: int
    bytes_in: int
    """Bytes accepted into the buffer (refused bytes are in ``bytes_dropped_overflow``)."""
    bytes_out: int
    """Bytes handed out in frames, padding included: always ``frames_out * frame_bytes``."""
    bytes_cleared: int
    bytes_dropped_overflow: int
    pad_bytes: int
    underruns: int
    marks_played: int
    marks_cleared: int
    marks_refused: int
    depth_ms: float
    max_depth_ms: float


class Playout:
    def __init__(
        self,
        rate: int = 48000,
        frame_ms: int = 20,
        max_ms: int = 60000,
        jitter_ms: int = 40,
        resume_ms: int = 100,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be a positive sample rate, got {rate}.")
        if frame_ms <= 0:
            raise ValueError(f"frame_ms must be positive, got {frame_ms}.")
        if (rate * frame_ms) % 1000:
            raise ValueError(
                f"frame_ms={frame_ms} does not hold a whole number of samples at rate={rate}."
            )
        if max_ms < frame_ms:
            raise ValueError(f"max_ms must be at least frame_ms ({frame_ms}), got {max_ms}.")
        if jitter_ms < 0:
            raise ValueError(f"jitter_ms must not be negative, got {jitter_ms}.")
        self._rate = rate
        # Everything is counted in samples; bytes only where PCM is cut or joined.
        self._frame = rate * frame_ms // 1000
        self._max = rate * max_ms // 1000
        self._jitter = (rate * jitter_ms + 999) // 1000
        self._jitter_ticks = -(-jitter_ms // frame_ms)
        self._resume_ticks = -(-resume_ms // frame_ms)

        self._chunks: deque[bytes] = deque()
        self._head = 0  # byte offset into _chunks[0]; avoids re-slicing big chunks every tick
        # Absolute sample positions (monotonic, never reset) so marks need no rebasing.
        self._read_pos = 0
        self._write_pos = 0
        self._marks: deque[tuple[int, str]] = deque()
        self._mark_chars = 0

        self._state = PlayState.IDLE
        self._dry_ticks = 0  # ticks since running dry, in DRY
        self._held_ticks = 0  # ticks the jitter buffer has held audio back, in IDLE
        # A tick found less than a frame since the last accepted push (see Tail): the
        # grace is over, whatever the state.
        self._short_seen = False
        self._speaking = False
        self._quiet = 0  # ticks without audio since the open utterance's last frame

        self._frames_out = 0
        self._cleared = 0
        self._dropped = 0
        self._padded = 0
        self._underruns = 0
        self._marks_played = 0
        self._marks_cleared = 0
        self._marks_refused = 0
        self._max_size = 0

    @property
    def frame_bytes(self) -> int:
        return self._frame * SAMPLE_BYTES

    @property
    def frame_samples(self) -> int:
        return self._frame

    @property
    def state(self) -> PlayState:
        return self._state

    @property
    def playing(self) -> bool:
        """Handing out a frame per tick (not idle, not filling the jitter buffer)."""
        return self._state is PlayState.PLAYING

    @property
    def speaking(self) -> bool:
        """An utterance is open: its first frame was handed out, its end not yet known."""
        return self._speaking

    @property
    def dry(self) -> bool:
        """In a dry spell that may still turn out to be a gap in speech: keep ticking."""
        return self._state is PlayState.DRY

    @property
    def played(self) -> int:
        """Samples handed out in frames since the start (padding not counted)."""
        return self._read_pos

    @property
    def written(self) -> int:
        """Samples accepted since the start; a clear moves `played` up to it."""
        return self._write_pos

    @property
    def awaiting(self) -> bool:
        """A pending mark lies beyond the audio pushed so far (see Marks)."""
        return bool(self._marks) and self._marks[-1][0] > self._write_pos

    @property
    def _size(self) -> int:
        """Samples buffered: what was accepted and neither handed out nor cleared."""
        return self._write_pos - self._read_pos

    @property
    def buffered_ms(self) -> float:
        return self._to_ms(self._size)

    def _to_ms(self, samples: int) -> float:
        return samples * 1000 / self._rate

    def push(self, pcm: bytes) -> int:
        """Queue s16le audio; returns the bytes accepted (the rest is refused, see Overflow)."""
        if len(pcm) % SAMPLE_BYTES:
            raise ValueError(f"pcm must be whole s16le samples (even length), got {len(pcm)}.")
        samples = len(pcm) // SAMPLE_BYTES
        accepted = min(samples, self._max - self._size)
        self._dropped += samples - accepted
        if accepted < samples and self.awaiting:
            # Their audio was refused: they end where the accepted audio does.
            end = self._write_pos + accepted
            # Positions never decrease: only a run at the right can lie past
            # `end`, so a full playout with a mark after every piece costs per
            # push what those marks need, not a rebuild of all 8192.
            i = len(self._marks) - 1
            while i >= 0 and self._marks[i][0] > end:
                self._marks[i] = (end, self._marks[i][1])
                i -= 1
        if accepted == 0:
            return 0
        if self._state is PlayState.DRY:
            self._underruns += 1
            self._state = PlayState.IDLE
        if self._size == 0 and self._state is PlayState.IDLE:
            self._held_ticks = 0
        kept = accepted * SAMPLE_BYTES
        # Copy only when truncating or when handed a mutable buffer the caller may reuse.
        self._chunks.append(bytes(pcm[:kept]) if accepted < samples else bytes(pcm))
        self._write_pos += accepted
        self._short_seen = False
        self._quiet = 0
        self._max_size = max(self._max_size, self._size)
        return kept

    def mark(self, name: str, ahead: int = 0) -> tuple[MarkResolved, ...]:
        """Queue a mark after what was pushed and `ahead` samples still to come."""
        if ahead < 0:
            raise ValueError(f"ahead must not be negative, got {ahead}.")
        if self._size == 0 and ahead == 0 and not self._marks:
            # Everything before the mark is already out; the server declared the end of the
            # utterance, so an empty tick next is not an underrun.
            self._state = PlayState.IDLE
            self._marks_played += 1
            return (MarkResolved(name, True),)
        if (
            len(self._marks) >= MAX_PENDING_MARKS
            or self._mark_chars + len(name) > MAX_PENDING_MARK_CHARS
        ):
            self._marks_refused += 1
            return (MarkResolved(name, False, refused=True),)
        pos = self._write_pos + ahead
        if self._marks:
            # Never before an earlier mark: marks are answered in order.
            pos = max(pos, self._marks[-1][0])
        self._marks.append((pos, name))
        self._mark_chars += len(name)
        return ()

    def clear(self) -> tuple[MarkResolved, ...]:
        self._cleared += self._size
        self._chunks.clear()
        self._head = 0
        self._read_pos = self._write_pos
        self._state = PlayState.IDLE
        self._held_ticks = 0
        self._short_seen = False
        self._speaking = False
        self._quiet = 0
        resolved = tuple(MarkResolved(name, False) for _, name in self._marks)
        self._marks.clear()
        self._mark_chars = 0
        self._marks_cleared += len(resolved)
        return resolved

    def tick(self) -> Tick:
        tick = self._tick()
        if tick.frame is not None:
            self._quiet = 0
            if not self._speaking:
                self._speaking = True
                return dataclasses.replace(tick, starts=True)
        elif self._speaking and self._size == 0:
            self._quiet += 1
            # The tick a dry spell right after the last frame would run out
            # (see Running dry): from here on it was the end.
            if self._quiet > self._resume_ticks + 1:
                self._speaking = False
                self._quiet = 0
                return dataclasses.replace(tick, ended=True)
        return tick

    def _tick(self) -> Tick:
        state = self._state
        if self._size == 0:
            if state is not PlayState.PLAYING:
                if state is PlayState.DRY:
                    self._dry_ticks += 1
                    if self._dry_ticks > self._resume_ticks:
                        self._state = PlayState.IDLE  # long enough: that was the end
                return Tick(None, (), False)
            self._state = PlayState.DRY
            self._dry_ticks = 0
            return Tick(None, (), True)

        # Holding audio: a push ended any dry spell, so IDLE or PLAYING.
        if state is not PlayState.PLAYING:
            if self._size >= self._jitter or self._marks or self._held_ticks >= self._jitter_ticks:
                self._state = PlayState.PLAYING
            else:
                self._held_ticks += 1
                if self._size < self._frame:
                    self._short_seen = True
                return Tick(None, (), False)

        if self._size >= self._frame:
            frame = self._take(self._frame)
            padded = 0
        elif (self._marks and self._marks[0][0] <= self._write_pos) or self._short_seen:
            size = self._size
            padded = self._frame - size
            frame = self._take(size) + bytes(padded * SAMPLE_BYTES)
            self._padded += padded
        else:
            self._short_seen = True
            return Tick(None, (), False)

        self._frames_out += 1
        resolved: list[MarkResolved] = []
        ended_at_mark = False
        while self._marks and self._marks[0][0] <= self._read_pos:
            pos, name = self._marks.popleft()
            self._mark_chars -= len(name)
            ended_at_mark = pos == self._read_pos
            resolved.append(MarkResolved(name, True))
        self._marks_played += len(resolved)
        if self._size == 0 and (padded or ended_at_mark):
            self._state = PlayState.IDLE
        return Tick(frame, tuple(resolved), False, padded)

    def _take(self, n: int) -> bytes:
        """The next `n` samples, as PCM."""
        parts: list[bytes] = []
        need = n * SAMPLE_BYTES
        while need:
            chunk = self._chunks[0]
            avail = len(chunk) - self._head
            if avail <= need:
                parts.append(chunk[self._head :] if self._head else chunk)
                self._chunks.popleft()
                self._head = 0
                need -= avail
            else:
                parts.append(chunk[self._head : self._head + need])
                self._head += need
                need = 0
        self._read_pos += n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def statistics(self) -> PlayoutStatistics:
        return PlayoutStatistics(
            frames_out=self._frames_out,
            bytes_in=self._write_pos * SAMPLE_BYTES,
            bytes_out=self._frames_out * self._frame * SAMPLE_BYTES,
            bytes_cleared=self._cleared * SAMPLE_BYTES,
            bytes_dropped_overflow=self._dropped * SAMPLE_BYTES,
            pad_bytes=self._padded * SAMPLE_BYTES,
            underruns=self._underruns,
            marks_played=self._marks_played,
            marks_cleared=self._marks_cleared,
            marks_refused=self._marks_refused,
            depth_ms=self._to_ms(self._size),
            max_depth_ms=self._to_ms(self._max_size),
        )
