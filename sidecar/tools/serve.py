"""`audio-sidecar serve`: a local websocket server speaking the server's side of a dialect.

Point a sidecar (or any client of the dialect: Attendee's realtime audio,
Twilio Media Streams, Vonage websockets) at it to see what it sends: every
message is validated against the dialect's rules by its server session
(sidecar/dialects/server.py), violations are reported with the exact reason,
and live statistics go to stderr. It can record the audio it receives, echo
it back, or speak a WAV file, in the dialect's own shapes (Twilio: mu-law
media in 20 ms pieces; Vonage: 20 ms binary frames).

stdout carries JSON lines for scripts (the first is always
`{"event": "listening", "url": ...}`); stderr carries the same news in words.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import signal
import ssl
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import msgspec
import trio
import trio_websocket as tw

from sidecar import dialects, messages
from sidecar.dialects.base import MIXED, Invalid, Wire
from sidecar.dialects.server import (
    SERVER_SESSIONS,
    AudioIn,
    ClearAnswer,
    Closed,
    DtmfIn,
    ErrorReplyIn,
    MarkAnswer,
    Opened,
    ServerIncoming,
    ServerOptions,
    ServerSession,
    server_session,
)
from sidecar.pcm import SAMPLE_BYTES
from sidecar.resample import Resampler
from sidecar.tools import protocols
from sidecar.tools.helpformat import HelpFormatter
from sidecar.tools.pacing import Pacer
from sidecar.tools.report import Report
from sidecar.tools.traffic import Traffic
from sidecar.tools.wavio import WavError, WavReader, WavWriter, to_s16le

EXIT_OK = 0
EXIT_VIOLATIONS = 1
EXIT_USAGE = 2

# Reported per connection in full; beyond these, violations are only counted.
MAX_VIOLATION_EVENTS = 100
MAX_VIOLATION_LINES = 10
# trio-websocket's own hard cap; the contract's limit is checked by the decoder
# so an oversized message is reported rather than closing the connection.
HARD_MAX_MESSAGE = 8 * messages.MAX_MESSAGE_BYTES


@dataclass(frozen=True, slots=True)
class ServeOptions:
    protocol: str = dialects.DEFAULT
    host: str = "127.0.0.1"
    port: int = 8765
    echo: bool = False
    delay_ms: int = 0
    record: Path | None = None
    play: Path | None = None
    play_rate: int | None = None
    play_after: float = 1.0
    play_loop: bool = False
    mark: str = "play-end"
    chunk_ms: int = 20
    stats_interval: float = 2.0
    once: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_message_bytes: int = messages.MAX_MESSAGE_BYTES


Queued = tuple[float, Wire]
"""A message to send, and when."""


@dataclass(slots=True)
class ClientState:
    """One websocket client, as the server sees it."""

    number: int
    session: ServerSession
    traffic: Traffic = field(default_factory=Traffic)
    opened: trio.Event = field(default_factory=trio.Event)
    """The client's opening arrived: the server may speak."""
    violations: int = 0
    echoed: int = 0
    played_s: float = 0.0
    marks_sent: dict[str, float] = field(default_factory=dict)
    marks: list[tuple[str, str]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    def __post_init__(self) -> None:
        self.note_opening()

    def note_opening(self) -> None:
        if self.session.ready:
            self.opened.set()


class Server:
    def __init__(self, options: ServeOptions, report: Report) -> None:
        self.options = options
        self.report = report
        self.clients: list[ClientState] = []
        self.url = ""
        self.finished = trio.Event()
        self._numbers = itertools.count(1)
        self._writer: WavWriter | None = None
        self._record_resampler: Resampler | None = None

    @property
    def violations(self) -> int:
        return sum(c.traffic.violations for c in self.clients)

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (or, with `once`, until the first client leaves)."""
        opts = self.options
        context = _tls_context(opts)
        try:
            async with trio.open_nursery() as nursery:
                server: tw.WebSocketServer = await nursery.start(
                    partial(
                        tw.serve_websocket,
                        self._handle,
                        opts.host,
                        opts.port,
                        context,
                        message_queue_size=64,
                        max_message_size=HARD_MAX_MESSAGE,
                    )
                )
                endpoint = server.listeners[0]
                port = endpoint.port if isinstance(endpoint, tw.Endpoint) else opts.port
                scheme = "wss" if context is not None else "ws"
                host = f"[{opts.host}]" if ":" in opts.host else opts.host
                self.url = f"{scheme}://{host}:{port}/"
                self.report.event(
                    "listening",
                    f"listening on {self.url} ({opts.protocol})",
                    url=self.url,
                    protocol=opts.protocol,
                )
                task_status.started(self.url)
                await self.finished.wait()
                nursery.cancel_scope.cancel()
        finally:
            if self._writer is not None:
                self._writer.close()
                self.report.event(
                    "recorded",
                    f"recorded {self._writer.seconds:.2f} s at {self._writer.rate} Hz "
                    f"to {self._writer.path}",
                    path=str(self._writer.path),
                    seconds=round(self._writer.seconds, 3),
                    sample_rate=self._writer.rate,
                )

    async def _handle(self, request: tw.WebSocketRequest) -> None:
        opts = self.options
        session = server_session(
            opts.protocol, ServerOptions(opts.max_message_bytes, opts.chunk_ms)
        )
        client = ClientState(next(self._numbers), session)
        self.clients.append(client)
        tag = f"[client {client.number}]"
        remote = _describe_endpoint(request.remote)
        header_names = sorted({k.decode("latin-1").lower() for k, _ in request.headers})
        ws = await request.accept()
        self.report.event(
            "connected",
            f"{tag} connected from {remote}, path {request.path}, headers: "
            + ", ".join(header_names),
            client=client.number,
            remote=remote,
            path=request.path,
            headers=header_names,
        )
        send, receive = trio.open_memory_channel[Queued](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, ws, client, send, nursery.cancel_scope)
            nursery.start_soon(self._send, ws, receive)
            nursery.start_soon(self._tick, client)
            if self.options.play is not None:
                nursery.start_soon(self._play, client, send.clone())
        snap = client.traffic.snapshot(trio.current_time())
        self.report.event(
            "disconnected",
            f"{tag} disconnected (code {client.close_code}"
            + (f", {client.close_reason}" if client.close_reason else "")
            + f"): {snap.describe()}",
            client=client.number,
            code=client.close_code,
            reason=client.close_reason,
            echoed=client.echoed,
            marks=[{"name": n, "status": s} for n, s in client.marks],
            stats=snap,
        )
        if self.options.once:
            self.finished.set()

    async def _read(
        self,
        ws: tw.WebSocketConnection,
        client: ClientState,
        send: trio.MemorySendChannel[Queued],
        scope: trio.CancelScope,
    ) -> None:
        # Drain without pause: trio-websocket stops answering pings when its
        # queue is full.
        try:
            async with send:
                while True:
                    raw = await ws.get_message()
                    self._received(client, raw, trio.current_time(), send)
        except tw.ConnectionClosed as exc:
            if exc.reason is not None:
                client.close_code = exc.reason.code
                client.close_reason = exc.reason.reason or ""
        scope.cancel()

    def _received(
        self,
        client: ClientState,
        raw: Wire,
        now: float,
        send: trio.MemorySendChannel[Queued],
    ) -> None:
        heard = client.session.receive(raw)
        client.traffic.received(now, raw, heard)
        for item in heard:
            self._heard(client, item, now, send)
        client.note_opening()

    def _heard(
        self,
        client: ClientState,
        item: ServerIncoming,
        now: float,
        send: trio.MemorySendChannel[Queued],
    ) -> None:
        tag = f"[client {client.number}]"
        match item:
            case Invalid(error=error):
                self._violation(client, error)
            case AudioIn(stream=stream) if stream == MIXED:
                self._record(item.pcm, item.rate)
                if self.options.echo:
                    client.echoed += 1
                    due = now + self.options.delay_ms / 1000
                    for wire in client.session.audio(item.pcm, item.rate):
                        send.send_nowait((due, wire))
            case AudioIn():
                pass  # one participant's audio: counted, not recorded nor echoed
            case Opened(info=info):
                about = ", ".join(f"{k} {_short(v)}" for k, v in info.items())
                self.report.event(
                    "opened",
                    f"{tag} stream opened" + (f": {about}" if about else ""),
                    client=client.number,
                    info=dict(info),
                    sample_rate=item.rate,
                )
            case MarkAnswer(name=name, played=played):
                status = {True: "played", False: "cleared", None: "answered"}[played]
                client.marks.append((name, status))
                sent = client.marks_sent.pop(name, None)
                after = f" {(now - sent) * 1000:.0f} ms after it was sent" if sent else ""
                self.report.event(
                    "mark",
                    f"{tag} mark {name!r} {status}{after}",
                    client=client.number,
                    name=name,
                    status=status,
                    after_ms=round((now - sent) * 1000) if sent else None,
                )
            case ErrorReplyIn(code=code, message=message):
                # The client refused something we sent: a bug in this tool, or a
                # contract change. Worth saying loudly either way.
                self.report.event(
                    "error_reply",
                    f"{tag} the client rejected a message we sent: {code}: {message}",
                    client=client.number,
                    code=str(code),
                    message=message,
                )
            case DtmfIn(digit=digit):
                self.report.event("dtmf", f"{tag} DTMF {digit}", client=client.number, digit=digit)
            case ClearAnswer():
                self.report.event("cleared", f"{tag} clear confirmed", client=client.number)
            case Closed(info=info):
                self.report.event(
                    "closed",
                    f"{tag} the client ended the stream",
                    client=client.number,
                    info=dict(info),
                )

    def _violation(self, client: ClientState, error: messages.MessageError) -> None:
        client.violations += 1
        count = client.violations
        text: str | None = None
        if count <= MAX_VIOLATION_LINES:
            text = (
                f"[client {client.number}] VIOLATION in message #{client.traffic.messages}: "
                f"{error.message} ({error.code})"
            )
            if count == MAX_VIOLATION_LINES:
                text += "; further violations are only counted"
        if count <= MAX_VIOLATION_EVENTS:
            self.report.event(
                "violation",
                text,
                client=client.number,
                message_number=client.traffic.messages,
                code=str(error.code),
                message=error.message,
                trigger=error.trigger,
            )
        elif text is not None:
            self.report.say(text)

    def _record(self, chunk: bytes, rate: int) -> None:
        path = self.options.record
        if path is None:
            return
        if self._writer is None:
            self._writer = WavWriter(path, rate)
        if rate != self._writer.rate:
            # One file, one rate: later audio at another rate is converted.
            if self._record_resampler is None or self._record_resampler.in_rate != rate:
                self._record_resampler = Resampler(rate, self._writer.rate)
            chunk = self._record_resampler.process(chunk)
        self._writer.write(chunk)

    async def _send(
        self, ws: tw.WebSocketConnection, receive: trio.MemoryReceiveChannel[Queued]
    ) -> None:
        async with receive:
            async for due, wire in receive:
                await trio.sleep_until(due)
                try:
                    await ws.send_message(wire)
                except tw.ConnectionClosed:
                    return

    async def _tick(self, client: ClientState) -> None:
        interval = self.options.stats_interval
        if interval <= 0:
            return
        while True:
            await trio.sleep(interval)
            if not client.traffic.messages:
                continue
            snap = client.traffic.snapshot(trio.current_time())
            self.report.event(
                "stats",
                f"[client {client.number}] {snap.describe()}",
                client=client.number,
                stats=snap,
            )

    async def _play(self, client: ClientState, send: trio.MemorySendChannel[Queued]) -> None:
        opts = self.options
        assert opts.play is not None
        await trio.sleep(opts.play_after)
        await client.opened.wait()
        session = client.session
        async with send:
            with WavReader(opts.play) as reader:
                rate = opts.play_rate
                if rate not in session.output_rates:
                    rate = nearest_rate(reader.rate, session.output_rates)
                resampler = Resampler(reader.rate, rate)
                per_chunk = reader.rate * opts.chunk_ms // 1000
                pacer = Pacer()
                pending = b""
                chunk_bytes = rate * opts.chunk_ms // 1000 * SAMPLE_BYTES
                refused = opts.play_rate not in (None, rate)
                self.report.event(
                    "playing",
                    f"[client {client.number}] playing {opts.play} "
                    f"({reader.format.describe()}) to the client at {rate} Hz"
                    + (f" (this stream takes no --play-rate {opts.play_rate})" if refused else ""),
                    client=client.number,
                    path=str(opts.play),
                    sample_rate=rate,
                )
                while True:
                    block = reader.read(per_chunk)
                    if not len(block):
                        if opts.play_loop:
                            reader.rewind()
                            continue
                        pending += to_s16le(resampler.flush_float())
                        break
                    pending += to_s16le(resampler.process_float(block))
                    while len(pending) >= chunk_bytes:
                        piece, pending = pending[:chunk_bytes], pending[chunk_bytes:]
                        await self._speak(client, send, pacer, piece, rate)
                if pending:
                    await self._speak(client, send, pacer, pending, rate)
            client.marks_sent[opts.mark] = trio.current_time()
            for wire in session.mark(opts.mark):
                send.send_nowait((trio.current_time(), wire))
            self.report.event(
                "played",
                f"[client {client.number}] sent {client.played_s:.2f} s of audio, "
                f"then mark {opts.mark!r}",
                client=client.number,
                seconds=round(client.played_s, 3),
                mark=opts.mark,
            )

    async def _speak(
        self,
        client: ClientState,
        send: trio.MemorySendChannel[Queued],
        pacer: Pacer,
        pcm: bytes,
        rate: int,
    ) -> None:
        seconds = len(pcm) / SAMPLE_BYTES / rate
        await pacer.wait(seconds)
        for wire in client.session.audio(pcm, rate):
            send.send_nowait((trio.current_time(), wire))
        client.played_s += seconds


def nearest_rate(rate: int, rates: tuple[int, ...]) -> int:
    """The highest of `rates` not above `rate` (upsampling adds nothing)."""
    fitting = [r for r in rates if r <= rate]
    return max(fitting) if fitting else min(rates)


def _short(value: object) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text if len(text) <= 80 else text[:77] + "..."


def _describe_endpoint(endpoint: tw.Endpoint | str) -> str:
    if isinstance(endpoint, tw.Endpoint):
        host = f"[{endpoint.address}]" if ":" in str(endpoint.address) else endpoint.address
        return f"{host}:{endpoint.port}"
    return str(endpoint)


def _tls_context(opts: ServeOptions) -> ssl.SSLContext | None:
    if opts.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(opts.tls_cert), str(opts.tls_key) if opts.tls_key else None)
    return context


async def serve(options: ServeOptions, report: Report) -> int:
    """The command: serve until SIGINT/SIGTERM (or the first client leaves, with --once)."""
    server = Server(options, report)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, server)
        await nursery.start(server.run)
        await server.finished.wait()
        nursery.cancel_scope.cancel()
    total = sum(c.traffic.messages for c in server.clients)
    violations = server.violations
    verdict = "no violations" if not violations else f"{violations} VIOLATION(S)"
    report.event(
        "summary",
        f"{len(server.clients)} client(s), {total} message(s), {verdict}",
        clients=len(server.clients),
        messages=total,
        violations=violations,
    )
    return EXIT_VIOLATIONS if violations else EXIT_OK


async def _stop_on_signal(server: Server) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            server.finished.set()
            return


# -- command line ----------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="a local test server: validate, record, echo or play",
        description=(
            "A local websocket server speaking the server side of a dialect (--protocol). It "
            "validates every message it receives against the dialect's rules and prints live "
            "statistics to stderr. stdout carries JSON lines; the first is "
            '{"event": "listening", "url": ...}. Exit status 1 if any message broke the rules.'
        ),
        formatter_class=HelpFormatter,
    )
    protocols.add_flag(p, SERVER_SESSIONS, "server")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--echo", action="store_true", help="send received audio back to play")
    mode.add_argument("--play", type=Path, metavar="FILE.wav", help="speak a WAV file")
    p.add_argument("--delay-ms", type=int, default=0, help="with --echo: hold each echo this long")
    p.add_argument(
        "--play-rate",
        type=int,
        metavar="HZ",
        help="with --play: the rate to send at, where the dialect takes it (its server "
        "side's rates; another is reported and the nearest used) "
        "[default: the highest it takes not above the file's]",
    )
    p.add_argument(
        "--play-after",
        type=float,
        default=1.0,
        help="with --play: seconds to wait after a client connects (time to attach a bot)",
    )
    p.add_argument("--play-loop", action="store_true", help="with --play: repeat the file")
    p.add_argument(
        "--mark", default="play-end", help="with --play: name of the mark sent at the end"
    )
    p.add_argument(
        "--chunk-ms",
        type=int,
        default=20,
        help="audio per message with --play, and per Twilio media message",
    )
    p.add_argument("--record", type=Path, metavar="FILE.wav", help="save the received audio")
    p.add_argument("--stats-interval", type=float, default=2.0, help="seconds; 0 = off")
    p.add_argument("--once", action="store_true", help="exit when the first client disconnects")
    p.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="serve wss:// with this certificate"
    )
    p.add_argument(
        "--tls-key", type=Path, metavar="PEM", help="its private key (if not in --tls-cert)"
    )
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=messages.MAX_MESSAGE_BYTES,
        help="larger messages are violations",
    )
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    options = ServeOptions(
        protocol=args.protocol,
        host=args.host,
        port=args.port,
        echo=args.echo,
        delay_ms=args.delay_ms,
        record=args.record,
        play=args.play,
        play_rate=args.play_rate,
        play_after=args.play_after,
        play_loop=args.play_loop,
        mark=args.mark,
        chunk_ms=args.chunk_ms,
        stats_interval=args.stats_interval,
        once=args.once,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        max_message_bytes=args.max_message_bytes,
    )
    error = _usage_error(options)
    if error:
        print(f"audio-sidecar serve: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return trio.run(serve, options, Report.standard("serve: "))
    except* OSError as group:
        # Binding the port is the only OSError that reaches here: trio reports
        # it from inside the server's nurseries, grouped.
        exc = _first(group)
        where = f"{options.host}:{options.port}"
        print(
            f"audio-sidecar serve: error: cannot listen on {where}: {exc.strerror or exc}",
            file=sys.stderr,
        )
    return EXIT_USAGE


def _first(group: BaseExceptionGroup[OSError]) -> OSError:
    found = group.exceptions[0]
    return found if isinstance(found, OSError) else _first(found)


def _usage_error(options: ServeOptions) -> str | None:
    if not 0 <= options.port <= 65535:
        return "--port must be between 0 and 65535"
    if options.delay_ms < 0:
        return "--delay-ms must not be negative"
    if not 10 <= options.chunk_ms <= 1000:
        return "--chunk-ms must be between 10 and 1000"
    if options.play_after < 0:
        return "--play-after must not be negative"
    if not 1 <= len(options.mark) <= 256:
        return "--mark must be 1 to 256 characters"
    if options.record is not None:
        folder = options.record.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            return f"--record: cannot write into {folder}"
    if options.tls_key is not None and options.tls_cert is None:
        return "--tls-key needs --tls-cert"
    if options.play is not None:
        try:
            with WavReader(options.play):
                pass
        except WavError as exc:
            return f"--play: {exc}"
    if options.tls_cert is not None:
        try:
            _tls_context(options)
        except (OSError, ssl.SSLError) as exc:
            return f"--tls-cert: cannot load the certificate: {exc}"
    return None
