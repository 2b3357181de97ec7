"""`audio-sidecar demo`: the whole loop on one machine, with nothing external.

An echo server (`serve --echo`, in this process, on a free localhost port), a
real sidecar subprocess (`run`), both speaking the dialect of --protocol, and
a synthetic bot that speaks generated
speech-like audio into audio-in while recording audio-out. The report
compares what came back with what was sent: round-trip latency (found by
cross-correlation), level, SNR, drops and reconnects (from the sidecar's own
final statistics), and whether every message the sidecar sent was valid.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import trio

from sidecar import dialects
from sidecar.config import ConfigError, dialect_options
from sidecar.dialects.server import SERVER_SESSIONS
from sidecar.pcm import SAMPLE_BYTES
from sidecar.tools import analysis, protocols, synth
from sidecar.tools.botsocket import connect
from sidecar.tools.feed import FeedOptions, FeedResult, MemorySource, stream_source
from sidecar.tools.helpformat import HelpFormatter
from sidecar.tools.record import RecordResult, Timeline, capture
from sidecar.tools.report import Report
from sidecar.tools.serve import ServeOptions, Server
from sidecar.tools.wavio import FloatArray, from_s16le, write_wav

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

RATE = 48000
# The echo has ended once audio-out has been quiet this long after the bot stopped.
TAIL_QUIET_S = 0.6
MAX_TAIL_S = 5.0
MAX_LATENCY_S = 2.0
START_TIMEOUT_S = 20.0
MIN_CORRELATION = 0.5


@dataclass(frozen=True, slots=True)
class DemoOptions:
    seconds: float = 5.0
    out: Path = Path("demo-echo.wav")
    sample_rate: int | None = None
    """On the websocket, where the dialect lets it be chosen; None: the sidecar's default."""
    delay_ms: int = 0
    protocol: str = dialects.DEFAULT

    def wire(self) -> str:
        """How the audio travels on the websocket, in words; ConfigError for a
        rate the dialect does not take."""
        config = protocols.resolve(self.protocol, "ws://127.0.0.1/", sample_rate=self.sample_rate)
        wire = dialects.make(self.protocol, dialect_options(config)).uplink_audio()
        return f"{protocols.describe(wire)} {self.protocol} websocket"


class DemoReport(msgspec.Struct):
    ok: bool = False
    protocol: str = dialects.DEFAULT
    problem: str | None = None
    url: str = ""
    sidecar_pid: int = 0
    sent_seconds: float = 0.0
    received_seconds: float = 0.0
    latency_ms: float | None = None
    correlation: float = 0.0
    sent_level_dbfs: float = -200.0
    returned_level_dbfs: float = -200.0
    snr_db: float | None = None
    dropped: dict[str, int] = {}
    underruns: int = 0
    clock_restarts: int = 0
    reconnects: int = 0
    sidecar_exit: int | None = None
    messages_checked: int = 0
    violations: int = 0
    timestamp_gaps: int = 0
    jitter_ms: float = 0.0
    recording: str = ""
    recording_seconds: float = 0.0


class DemoFailed(Exception):
    pass


@dataclass(slots=True)
class SidecarEvents:
    """The sidecar's JSON-lines stdout, parsed as it arrives."""

    process: trio.Process
    events: list[dict[str, Any]] = field(default_factory=list)
    stderr: bytes = b""
    changed: trio.Event = field(default_factory=trio.Event)
    eof: trio.Event = field(default_factory=trio.Event)

    async def read_stdout(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for data in self.process.stdout:
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    try:
                        self.events.append(msgspec.json.decode(line))
                    except msgspec.DecodeError:
                        continue
            self.changed.set()
            self.changed = trio.Event()
        self.changed.set()
        self.eof.set()

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for data in self.process.stderr:
            self.stderr += data

    async def wait_for(self, name: str) -> dict[str, Any]:
        while True:
            for event in self.events:
                if event.get("event") == name:
                    return event
            if self.process.returncode is not None:
                raise DemoFailed(
                    f"the sidecar exited with {self.process.returncode} before {name!r}: "
                    + self.stderr.decode(errors="replace").strip()[-800:]
                )
            with trio.move_on_after(0.2):
                await self.changed.wait()

    def last(self, name: str) -> dict[str, Any] | None:
        found = [e for e in self.events if e.get("event") == name]
        return found[-1] if found else None


async def run_demo(options: DemoOptions, say: Report) -> DemoReport:
    with trio.fail_after(options.seconds + START_TIMEOUT_S + MAX_TAIL_S + 30):
        return await _run_demo(options, say)


async def _run_demo(options: DemoOptions, say: Report) -> DemoReport:
    report = DemoReport(protocol=options.protocol)
    wire = options.wire()
    sent = synth.speech_like(options.seconds, RATE)
    received = bytearray()
    server = Server(
        ServeOptions(
            protocol=options.protocol,
            port=0,
            echo=True,
            delay_ms=options.delay_ms,
            stats_interval=0,
        ),
        Report.silent(),
    )
    rate = [] if options.sample_rate is None else ["--sample-rate", str(options.sample_rate)]
    with tempfile.TemporaryDirectory(prefix="audio-sidecar-demo-") as tmp:
        sock_in, sock_out = Path(tmp) / "in.sock", Path(tmp) / "out.sock"
        async with trio.open_nursery() as nursery:
            report.url = await nursery.start(server.run)
            say.say(
                f"  echo server   {report.url} (audio-sidecar serve --protocol "
                f"{options.protocol} --echo, in this process)"
            )
            process = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "sidecar",
                    "run",
                    "--protocol",
                    options.protocol,
                    "--url",
                    report.url + "demo",
                    "--audio-in",
                    str(sock_in),
                    "--audio-out",
                    str(sock_out),
                    *rate,
                    "--bot-id",
                    "demo-bot",
                    "--stats-interval",
                    "1",
                    "--exit-on-stdin-eof",
                    # The echo would send the fill back without end, and the
                    # demo waits for the echo to finish.
                    "--fill-silence",
                    "off",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                # Ctrl-C is for the demo, which stops its sidecar itself: a
                # sidecar that got it too would end first, and the demo would
                # see a broken socket instead of the interrupt.
                start_new_session=True,
            )
            sidecar = SidecarEvents(process)
            report.sidecar_pid = process.pid
            nursery.start_soon(sidecar.read_stdout)
            nursery.start_soon(sidecar.read_stderr)
            try:
                with trio.fail_after(START_TIMEOUT_S):
                    await sidecar.wait_for("ready")
                    await sidecar.wait_for("connected")
                say.say(f"  sidecar       pid {process.pid}: 48 kHz bot sockets <-> {wire}")
                say.say(
                    f"  bot           speaking {options.seconds:g} s of generated speech-like "
                    "audio, recording what comes back ..."
                )
                await _converse(sock_in, sock_out, sent, received)
            except trio.TooSlowError:
                raise DemoFailed(
                    "the sidecar did not become ready: "
                    + sidecar.stderr.decode(errors="replace").strip()[-800:]
                ) from None
            finally:
                with trio.move_on_after(10) as scope:
                    scope.shield = True
                    if process.returncode is None:
                        process.send_signal(signal.SIGTERM)
                    report.sidecar_exit = await process.wait()
                    # Its last lines (final stats, stopped) may still be in the pipe.
                    await sidecar.eof.wait()
                if process.returncode is None:
                    process.kill()
                server.finished.set()
        stats = sidecar.last("stats") or {}
    report.dropped = {k: int(v) for k, v in stats.get("dropped", {}).items()}
    report.underruns = int(stats.get("underruns", 0))
    report.clock_restarts = int(stats.get("clock_restarts", 0))
    report.reconnects = int(stats.get("reconnects", 0))
    if server.clients:
        snap = server.clients[0].traffic.snapshot(trio.current_time())
        report.messages_checked = snap.messages
        report.timestamp_gaps = snap.gaps
        report.jitter_ms = snap.jitter_ms
    report.violations = server.violations
    _analyse(report, sent, from_s16le(bytes(received)))
    write_wav(options.out, bytes(received), RATE)
    report.recording = str(options.out)
    report.recording_seconds = round(len(received) / SAMPLE_BYTES / RATE, 3)
    _judge(report)
    return report


async def _converse(sock_in: Path, sock_out: Path, sent: FloatArray, received: bytearray) -> None:
    """The bot: speak `sent` in real time while recording audio-out on a shared clock."""
    speaker = await connect(sock_out, "--audio-out")
    microphone = await connect(sock_in, "--audio-in")
    timeline = Timeline(RATE)
    recorded = RecordResult()
    fed = FeedResult()
    async with speaker, microphone, trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(capture, speaker, timeline, received.extend, recorded, start)
        await stream_source(microphone, MemorySource(sent, RATE), FeedOptions("-", sock_in), fed)
        spoken = trio.current_time()
        # Wait for the echo to finish: audio-out quiet for a while, within reason.
        heard = timeline.frames
        quiet_since = trio.current_time()
        while trio.current_time() - spoken < MAX_TAIL_S:
            await trio.sleep(0.05)
            if timeline.frames != heard:
                heard, quiet_since = timeline.frames, trio.current_time()
            elif trio.current_time() - quiet_since >= TAIL_QUIET_S and heard:
                break
        nursery.cancel_scope.cancel()


def _analyse(report: DemoReport, sent: FloatArray, received: FloatArray) -> None:
    report.sent_seconds = round(len(sent) / RATE, 3)
    report.sent_level_dbfs = round(analysis.level_dbfs(sent), 1)
    if not len(received):
        return
    found = analysis.align(sent, received, max_lag=round(MAX_LATENCY_S * RATE))
    report.received_seconds = round((len(received) - found.lag) / RATE, 3)
    report.correlation = round(found.correlation, 4)
    report.latency_ms = round(found.lag * 1000 / RATE, 1)
    segment = received[found.lag : found.lag + len(sent)]
    report.returned_level_dbfs = round(analysis.level_dbfs(segment), 1)
    report.snr_db = round(analysis.snr_db(sent, received, found.lag), 1)


def _judge(report: DemoReport) -> None:
    if report.latency_ms is None:
        report.problem = "no audio came back from the echo server"
    elif report.correlation < MIN_CORRELATION:
        report.problem = (
            f"the audio that came back does not match what was sent "
            f"(correlation {report.correlation:.2f})"
        )
    elif report.violations:
        report.problem = f"{report.violations} message(s) from the sidecar broke the contract"
    elif report.sidecar_exit not in (0, None):
        report.problem = f"the sidecar exited with status {report.sidecar_exit}"
    report.ok = report.problem is None


def render(report: DemoReport) -> str:
    dropped = sum(report.dropped.values())
    drops = (
        "none"
        if not dropped
        else ", ".join(f"{n} samples ({reason})" for reason, n in report.dropped.items())
    )
    gain = report.returned_level_dbfs - report.sent_level_dbfs
    lines = ["", "result"]
    if report.latency_ms is not None:
        lines += [
            f"  returned      {report.received_seconds:.2f} s of the {report.sent_seconds:.2f} s "
            "sent",
            f"  round trip    {report.latency_ms:.0f} ms from the bot writing a sample to it "
            "coming back (cross-correlation)",
            f"  level         sent {report.sent_level_dbfs:.1f} dBFS, returned "
            f"{report.returned_level_dbfs:.1f} dBFS ({gain:+.1f} dB)",
            f"  SNR           {report.snr_db:.1f} dB (returned vs sent, aligned; "
            f"match {report.correlation:.3f})",
        ]
    lines += [
        f"  drops         {drops}; {report.underruns} playout underrun(s), "
        f"{report.clock_restarts} playout clock stall(s)",
        f"  reconnects    {report.reconnects}",
        f"  contract      {report.messages_checked} messages from the sidecar checked, "
        f"{report.violations} violation(s); timestamp gaps {report.timestamp_gaps}, "
        f"jitter {report.jitter_ms:.1f} ms",
        f"  recording     {report.recording} ({report.recording_seconds:.2f} s, {RATE} Hz mono)",
    ]
    if report.ok:
        lines.append(
            "OK: the loop works. Next: `make test`; to debug your own server, "
            f"`audio-sidecar check{_protocol_flag(report)} wss://your-server/`."
        )
    else:
        lines.append(f"FAILED: {report.problem}")
    return "\n".join(lines)


def _protocol_flag(report: DemoReport) -> str:
    return "" if report.protocol == dialects.DEFAULT else f" --protocol {report.protocol}"


# -- command line ----------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole loop locally: echo server, sidecar, synthetic bot",
        description=(
            "Start an echo server on localhost, a sidecar, and a bot that speaks generated "
            "speech-like audio; record what comes back, report round-trip latency, level, SNR, "
            "drops and reconnects, and write the recording to a WAV file. Needs no network."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--seconds", type=float, default=5.0, help="length of the spoken sample")
    p.add_argument("--out", type=Path, default=Path("demo-echo.wav"), help="the recording")
    protocols.add_flag(p, SERVER_SESSIONS, "sidecar and echo server")
    p.add_argument(
        "--sample-rate",
        type=int,
        metavar="HZ",
        help="rate on the websocket, where the dialect lets it be chosen (one of its rates, "
        "as `run` checks them) [default: the dialect's]",
    )
    p.add_argument("--delay-ms", type=int, default=0, help="extra delay in the echo server")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    if not 0.5 <= args.seconds <= 600:
        print("audio-sidecar demo: error: --seconds must be between 0.5 and 600", file=sys.stderr)
        return EXIT_USAGE
    if args.delay_ms < 0:
        print("audio-sidecar demo: error: --delay-ms must not be negative", file=sys.stderr)
        return EXIT_USAGE
    options = DemoOptions(args.seconds, args.out, args.sample_rate, args.delay_ms, args.protocol)
    try:
        options.wire()
    except ConfigError as exc:
        print(f"audio-sidecar demo: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    say = Report(None, sys.stderr if args.json else sys.stdout)
    say.say("audio-sidecar demo: the whole loop on this machine")
    try:
        report = trio.run(run_demo, options, say)
    except DemoFailed as exc:
        print(f"audio-sidecar demo: FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except trio.TooSlowError:
        print("audio-sidecar demo: FAILED: the demo did not finish in time", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        print(render(report))
    return EXIT_OK if report.ok else EXIT_FAILED
