"""`audio-sidecar record`: save what a sidecar plays to its bot, as a WAV file.

Connects to the audio-out socket as the bot would and writes every audio
frame to the file. The sidecar sends nothing while the server is silent, so
by default those stretches are written as silence and the file keeps real
time: a sound heard 3.2 s after `record` started sits 3.2 s into the file.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from sidecar import frames
from sidecar.pcm import SAMPLE_BYTES
from sidecar.resample import Resampler
from sidecar.tools.analysis import level_dbfs
from sidecar.tools.botsocket import BotSocketError, connect, describe_error_frame
from sidecar.tools.helpformat import HelpFormatter, add_progress_flag, wants_progress
from sidecar.tools.wavio import WavError, WavWriter, from_s16le

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# Frames arrive on a 20 ms grid with some scheduling jitter; only a lateness
# beyond this is a real pause worth writing as silence.
GAP_TOLERANCE_S = 0.06
PROGRESS_INTERVAL_S = 0.25


class Timeline:
    """Places arriving frames on a time axis at one rate (sans-I/O).

    `add(frame, elapsed_s)` returns the bytes to append: silence for any pause
    before the frame (when `keep_silence`), then the frame, converted to the
    timeline's rate if it came at another.
    """

    def __init__(self, rate: int, keep_silence: bool = True) -> None:
        self.rate = rate
        self.keep_silence = keep_silence
        self.written = 0
        self.audio_samples = 0
        self.frames = 0
        self._resampler: Resampler | None = None

    def add(self, frame: frames.Audio, elapsed_s: float) -> bytes:
        pcm = frame.pcm
        if frame.rate != self.rate:
            if self._resampler is None or self._resampler.in_rate != frame.rate:
                self._resampler = Resampler(frame.rate, self.rate)
            pcm = self._resampler.process(pcm)
        out = self.pad_to(elapsed_s) + pcm
        samples = len(pcm) // SAMPLE_BYTES
        self.written += samples
        self.audio_samples += samples
        self.frames += 1
        return out

    def pad_to(self, elapsed_s: float) -> bytes:
        """Silence up to `elapsed_s`, if the timeline is behind by more than jitter."""
        if not self.keep_silence:
            return b""
        behind = round(elapsed_s * self.rate) - self.written
        # The first frame sets the time base exactly; later ones only move it
        # for a real pause, not for scheduling jitter.
        tolerance = GAP_TOLERANCE_S * self.rate if self.frames else 0
        if behind <= tolerance:
            return b""
        self.written += behind
        return bytes(SAMPLE_BYTES * behind)

    @property
    def seconds(self) -> float:
        return self.written / self.rate


@dataclass(frozen=True, slots=True)
class RecordOptions:
    source: Path
    out: Path
    seconds: float | None = None
    rate: int = 48000
    keep_silence: bool = True
    progress: bool = False


@dataclass(slots=True)
class RecordResult:
    ended: str = ""
    refused: str | None = None
    level_dbfs: float = -200.0
    seconds: float = 0.0
    audio_seconds: float = 0.0
    frames: int = 0


async def record(options: RecordOptions, *, handle_signals: bool = True) -> RecordResult:
    """Record until the sidecar closes, `options.seconds` pass, or SIGINT/SIGTERM."""
    result = RecordResult()
    stream = await connect(options.source, "--audio-out")
    timeline = Timeline(options.rate, options.keep_silence)
    with WavWriter(options.out, options.rate) as writer:
        start = trio.current_time()
        async with stream, trio.open_nursery() as nursery:
            if handle_signals:
                nursery.start_soon(_stop_on_signal, result, nursery.cancel_scope)
            if options.progress:
                nursery.start_soon(_show_progress, timeline, result, start)
            with trio.move_on_after(options.seconds or float("inf")) as timer:
                await capture(stream, timeline, writer.write, result, start)
                result.ended = result.ended or "the sidecar closed the connection"
            if timer.cancelled_caught:
                result.ended = f"recorded for {options.seconds:g} s"
            nursery.cancel_scope.cancel()
        # The file covers the whole session, up to the moment it ended.
        writer.write(timeline.pad_to(trio.current_time() - start))
    result.seconds = timeline.seconds
    result.audio_seconds = timeline.audio_samples / timeline.rate
    result.frames = timeline.frames
    return result


async def capture(
    stream: trio.abc.ReceiveStream,
    timeline: Timeline,
    sink: Callable[[bytes], None],
    result: RecordResult,
    start: float,
) -> None:
    """Read audio-out until the sidecar closes it; place each frame on `timeline`."""
    decoder = frames.FrameDecoder()
    try:
        while data := await stream.receive_some(65536):
            now = trio.current_time() - start
            decoder.feed(bytes(data))
            events = list(decoder)
            # Frames read together were queued in the socket: the sidecar wrote
            # each one a frame's duration before the next. Dated by this read
            # alone, a stall of the recorder would become silence in the record.
            later_s = sum(e.samples / e.rate for e in events if isinstance(e, frames.Audio))
            for event in events:
                if isinstance(event, frames.Audio):
                    later_s -= event.samples / event.rate
                    sink(timeline.add(event, now - later_s))
                    result.level_dbfs = level_dbfs(from_s16le(event.pcm))
                elif isinstance(event, frames.ErrorFrame):
                    result.refused = describe_error_frame(event)
                    result.ended = "refused"
                    return
                elif isinstance(event, frames.FrameError):
                    result.ended = f"the sidecar sent an invalid frame: {event.message}"
                    return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _stop_on_signal(result: RecordResult, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            result.ended = f"interrupted ({signal.Signals(signum).name})"
            scope.cancel()
            return


async def _show_progress(timeline: Timeline, result: RecordResult, start: float) -> None:
    try:
        while True:
            await trio.sleep(PROGRESS_INTERVAL_S)
            level = f"{result.level_dbfs:.0f} dBFS" if timeline.frames else "-"
            sys.stderr.write(
                f"\rrecord: {trio.current_time() - start:6.1f} s, "
                f"{timeline.audio_samples / timeline.rate:.1f}"
                f" s of audio in {timeline.frames} frames, last level {level}\x1b[K"
            )
            sys.stderr.flush()
    finally:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


# -- command line ----------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "record",
        help="save what a sidecar plays to its bot (audio-out) as a WAV file",
        description=(
            "Connect to a sidecar's audio-out socket as the bot would and save every frame to a "
            "16-bit mono WAV, until interrupted (Ctrl-C), --seconds, or the sidecar stops."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("out", type=Path, metavar="OUT.wav", help="the file to write")
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        type=Path,
        metavar="PATH",
        help="the sidecar's --audio-out socket",
    )
    p.add_argument("--seconds", type=float, help="stop after this long")
    p.add_argument(
        "--rate",
        type=int,
        default=48000,
        help="WAV sample rate (the sidecar's --output-rate; other rates are converted)",
    )
    p.add_argument(
        "--no-silence",
        dest="keep_silence",
        action="store_false",
        help="write only the frames, not the silence between them",
    )
    add_progress_flag(p)
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    options = RecordOptions(
        source=args.source,
        out=args.out,
        seconds=args.seconds,
        rate=args.rate,
        keep_silence=args.keep_silence,
        progress=wants_progress(args, sys.stderr.isatty()),
    )
    if options.seconds is not None and options.seconds <= 0:
        print("audio-sidecar record: error: --seconds must be positive", file=sys.stderr)
        return EXIT_USAGE
    if options.rate not in frames.RATE_KINDS:
        print("audio-sidecar record: error: --rate must be an AudioSocket rate", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = trio.run(record, options)
    except (BotSocketError, WavError) as exc:
        print(f"audio-sidecar record: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if result.refused is not None:
        print(f"audio-sidecar record: the sidecar refused: {result.refused}", file=sys.stderr)
        return EXIT_FAILED
    silence = result.seconds - result.audio_seconds
    print(
        f"record: wrote {result.seconds:.2f} s ({options.rate} Hz mono) to {options.out}: "
        f"{result.audio_seconds:.2f} s of audio in {result.frames} frames"
        + (f", {silence:.2f} s of silence between them" if silence > 0.005 else "")
        + f"; {result.ended}",
        file=sys.stderr,
    )
    return EXIT_OK
