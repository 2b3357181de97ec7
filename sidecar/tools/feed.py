"""`audio-sidecar feed`: play a WAV file or raw stdin into a sidecar's audio-in socket.

The audio is downmixed to mono, converted to 48 kHz and sent as 20 ms
AudioSocket frames on a real-time schedule, exactly as a meeting bot would;
the stream ends with a terminate frame so the sidecar sends its last chunk at
once. Anything the sidecar says back on the socket (an 0xff error frame when
it refuses the connection) is reported.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import trio

from sidecar import frames
from sidecar.pcm import SAMPLE_BYTES
from sidecar.resample import QUALITY_CONVERTERS, Quality, Resampler
from sidecar.service import EXIT_INTERRUPTED
from sidecar.tools.botsocket import BotSocketError, connect, describe_error_frame
from sidecar.tools.helpformat import HelpFormatter, add_progress_flag, wants_progress
from sidecar.tools.pacing import Pacer
from sidecar.tools.wavio import FloatArray, RawReader, WavError, WavReader, to_s16le

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

OUT_RATE = 48000
# How long to wait, after the terminate frame, for the sidecar to close its end.
CLOSE_WAIT_S = 2.0
PROGRESS_INTERVAL_S = 0.25
# A sidecar reads continuously; one that takes longer than this for one frame is stuck.
SEND_GRACE_S = 1.0


@runtime_checkable
class Source(Protocol):
    @property
    def rate(self) -> int: ...

    @property
    def blocking(self) -> bool:
        """True when `read` may wait on I/O (stdin) and must run in a thread."""
        ...

    def read(self, frames: int) -> FloatArray: ...


@runtime_checkable
class Rewindable(Source, Protocol):
    def rewind(self) -> None: ...


class MemorySource:
    """Samples already in memory (generated audio), read like a file."""

    blocking = False

    def __init__(self, samples: FloatArray, rate: int) -> None:
        self.rate = rate
        self._samples = samples
        self._pos = 0

    def read(self, frames: int) -> FloatArray:
        block = self._samples[self._pos : self._pos + frames]
        self._pos += len(block)
        return block

    def rewind(self) -> None:
        self._pos = 0


@dataclass(frozen=True, slots=True)
class FeedOptions:
    source: str
    to: Path
    rate: int = 48000
    channels: int = 1
    fast: bool = False
    loop: bool = False
    seconds: float | None = None
    frame_ms: int = 20
    quality: Quality = "medium"
    progress: bool = False


@dataclass(slots=True)
class FeedResult:
    seconds: float = 0.0
    frames: int = 0
    loops: int = 0
    refused: str | None = None
    lost: str | None = None
    interrupted: bool = False


class FrameSender:
    """Turns mono float blocks at any rate into paced 48 kHz AudioSocket frames."""

    def __init__(
        self, stream: trio.abc.SendStream, in_rate: int, options: FeedOptions, result: FeedResult
    ) -> None:
        self._stream = stream
        self._resampler = Resampler(in_rate, OUT_RATE, options.quality)
        self._frame_bytes = OUT_RATE * options.frame_ms // 1000 * SAMPLE_BYTES
        self._pacer = Pacer(options.fast)
        self._pending = b""
        self._result = result
        self._limit = options.seconds

    @property
    def done(self) -> bool:
        return self._limit is not None and self._result.seconds >= self._limit - 1e-9

    async def push(self, block: FloatArray) -> None:
        self._pending += to_s16le(self._resampler.process_float(block))
        while len(self._pending) >= self._frame_bytes and not self.done:
            frame, self._pending = (
                self._pending[: self._frame_bytes],
                self._pending[self._frame_bytes :],
            )
            await self._send(frame)

    async def finish(self) -> None:
        """Send what the resampler still holds, then the terminate frame."""
        if not self.done:
            self._pending += to_s16le(self._resampler.flush_float())
            while self._pending and not self.done:
                frame, self._pending = (
                    self._pending[: self._frame_bytes],
                    self._pending[self._frame_bytes :],
                )
                await self._send(frame)
        await send_whole(self._stream, frames.encode_terminate())

    async def _send(self, pcm: bytes) -> None:
        if self._limit is not None:
            room = round((self._limit - self._result.seconds) * OUT_RATE) * SAMPLE_BYTES
            pcm = pcm[: max(0, room)]
        seconds = len(pcm) / SAMPLE_BYTES / OUT_RATE
        await self._pacer.wait(seconds)
        await send_whole(self._stream, frames.encode_audio(pcm, OUT_RATE))
        self._result.frames += 1
        self._result.seconds += seconds


async def send_whole(stream: trio.abc.SendStream, frame: bytes) -> None:
    """Write one frame, never half of one: a cancelled write would leave the
    sidecar's decoder mid-frame, and the terminate frame that follows an
    interruption would then be read as garbage."""
    with trio.CancelScope(shield=True), trio.move_on_after(SEND_GRACE_S) as grace:
        await stream.send_all(frame)
    if grace.cancelled_caught:
        raise trio.BrokenResourceError(f"the sidecar stopped reading for {SEND_GRACE_S:g} s")


async def stream_source(
    stream: trio.abc.SendStream,
    source: Source,
    options: FeedOptions,
    result: FeedResult,
    *,
    rewind: bool = False,
) -> None:
    """Send a whole source (repeating it with `rewind`) and the terminate frame."""
    sender = FrameSender(stream, source.rate, options, result)
    per_read = max(1, math.ceil(source.rate * options.frame_ms / 1000))
    while not sender.done:
        if source.blocking:
            block = await trio.to_thread.run_sync(source.read, per_read, abandon_on_cancel=True)
        else:
            block = source.read(per_read)
        if not len(block):
            if rewind and isinstance(source, Rewindable) and result.frames:
                source.rewind()
                result.loops += 1
                continue
            break
        await sender.push(block)
    await sender.finish()


async def feed(options: FeedOptions, source: Source) -> FeedResult:
    """Connect to `options.to` and send `source`; never raises for a sidecar's refusal."""
    result = FeedResult()
    stream = await connect(options.to, "--audio-in")
    closed = trio.Event()
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(_listen, stream, result, closed, nursery.cancel_scope)
        if options.progress:
            nursery.start_soon(_show_progress, options, source, result)
        try:
            with trio.CancelScope() as sending:
                nursery.start_soon(_stop_on_signal, result, sending)
                await stream_source(stream, source, options, result, rewind=options.loop)
            if result.interrupted:
                await send_whole(stream, frames.encode_terminate())
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            result.lost = f"the connection broke before the end: {exc}"
        if result.lost is None:
            # The sidecar closes its end once it has taken the terminate frame;
            # waiting for that also catches a late refusal.
            with trio.move_on_after(CLOSE_WAIT_S):
                await closed.wait()
        nursery.cancel_scope.cancel()
    return result


async def _listen(
    stream: trio.SocketStream, result: FeedResult, closed: trio.Event, scope: trio.CancelScope
) -> None:
    decoder = frames.FrameDecoder()
    try:
        while data := await stream.receive_some(4096):
            decoder.feed(bytes(data))
            for event in decoder:
                if isinstance(event, frames.ErrorFrame):
                    result.refused = describe_error_frame(event)
                    scope.cancel()
                    return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    closed.set()


async def _stop_on_signal(result: FeedResult, sending: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            result.interrupted = True
            sending.cancel()
            return


async def _show_progress(options: FeedOptions, source: Source, result: FeedResult) -> None:
    total = source.duration if isinstance(source, WavReader) else None
    if options.loop:
        # Looping has no end unless --seconds gives one.
        total = options.seconds
    elif options.seconds is not None:
        total = options.seconds if total is None else min(total, options.seconds)
    try:
        while True:
            await trio.sleep(PROGRESS_INTERVAL_S)
            sys.stderr.write("\r" + progress_line(result, total) + "\x1b[K")
            sys.stderr.flush()
    finally:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


def progress_line(result: FeedResult, total: float | None) -> str:
    sent = f"feed: {result.seconds:6.1f} s"
    if total:
        done = min(1.0, result.seconds / total)
        bar = "#" * round(done * 30)
        sent += f" / {total:.1f} s [{bar:<30}] {done:4.0%}"
    if result.loops:
        sent += f" (loop {result.loops + 1})"
    return sent


# -- command line ----------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "feed",
        help="play a WAV file (or raw stdin) into a sidecar's audio-in socket",
        description=(
            "Play audio into a sidecar like a bot would: any WAV (8/16/24/32-bit PCM or float, "
            "any rate, mono or stereo) or raw s16le from stdin ('-'), converted to 48 kHz mono "
            "and sent as 20 ms AudioSocket frames in real time, ending with a terminate frame."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("source", metavar="FILE.wav|-", help="a WAV file, or - for raw s16le on stdin")
    p.add_argument(
        "--to", required=True, type=Path, metavar="PATH", help="the sidecar's --audio-in"
    )
    p.add_argument("--rate", type=int, default=48000, help="with -: sample rate of stdin")
    p.add_argument("--channels", type=int, default=1, choices=(1, 2), help="with -: channels")
    p.add_argument("--fast", action="store_true", help="send as fast as possible, not in real time")
    p.add_argument("--loop", action="store_true", help="repeat the file until interrupted")
    p.add_argument("--seconds", type=float, help="stop after this much audio")
    p.add_argument("--frame-ms", type=int, default=20, help="audio per frame")
    p.add_argument("--quality", choices=tuple(QUALITY_CONVERTERS), default="medium")
    add_progress_flag(p)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    options = FeedOptions(
        source=args.source,
        to=args.to,
        rate=args.rate,
        channels=args.channels,
        fast=args.fast,
        loop=args.loop,
        seconds=args.seconds,
        frame_ms=args.frame_ms,
        quality=args.quality,
        progress=wants_progress(args, sys.stderr.isatty()),
    )
    try:
        source = _open_source(options)
    except (WavError, ValueError) as exc:
        print(f"audio-sidecar feed: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = trio.run(feed, options, source)
    except BotSocketError as exc:
        print(f"audio-sidecar feed: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if isinstance(source, WavReader):
            source.close()
    return _summarise(options, result)


def _open_source(options: FeedOptions) -> Source:
    if options.frame_ms not in range(10, 101):
        raise ValueError("--frame-ms must be between 10 and 100")
    if options.seconds is not None and options.seconds <= 0:
        raise ValueError("--seconds must be positive")
    if options.source == "-":
        if options.loop:
            raise ValueError("--loop needs a file; stdin cannot be replayed")
        if not 1000 <= options.rate <= 384000:
            raise ValueError("--rate must be between 1000 and 384000")
        return RawReader(sys.stdin.buffer, options.rate, options.channels)
    return WavReader(Path(options.source))


def _summarise(options: FeedOptions, result: FeedResult) -> int:
    sent = f"sent {result.seconds:.2f} s ({result.frames} frames at {OUT_RATE} Hz) to {options.to}"
    if result.refused is not None:
        print(
            f"audio-sidecar feed: the sidecar refused the stream: {result.refused}; {sent}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if result.lost is not None:
        print(f"audio-sidecar feed: {result.lost}; {sent}", file=sys.stderr)
        return EXIT_FAILED
    loops = f", {result.loops + 1} times through the file" if result.loops else ""
    print(f"feed: {sent}{loops}, then a terminate frame", file=sys.stderr)
    return EXIT_INTERRUPTED if result.interrupted else EXIT_OK
