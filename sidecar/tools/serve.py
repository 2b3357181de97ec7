"""`audio-sidecar serve`: a local websocket server speaking the server's side of the contract.

Point a sidecar (or any bot speaking the protocol) at it to see what it sends:
every message is validated against the contract, violations are reported with
the exact reason, and live statistics go to stderr. It can record the audio it
receives, echo it back as bot output, or speak a WAV file.

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

import trio
import trio_websocket as tw

from sidecar import messages
from sidecar.resample import Resampler
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


@dataclass(slots=True)
class ClientState:
    """One websocket client, as the server sees it."""

    number: int
    traffic: Traffic = field(default_factory=Traffic)
    echoed: int = 0
    played_s: float = 0.0
    marks_sent: dict[str, float] = field(default_factory=dict)
    marks: list[tuple[str, str]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""


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
                self.report.event("listening", f"listening on {self.url}", url=self.url)
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
        client = ClientState(next(self._numbers))
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
        send, receive = trio.open_memory_channel[tuple[float, str]](math.inf)
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
        send: trio.MemorySendChannel[tuple[float, str]],
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
        raw: str | bytes,
        now: float,
        send: trio.MemorySendChannel[tuple[float, str]],
    ) -> None:
        message = messages.decode_sidecar_message(raw, self.options.max_message_bytes)
        client.traffic.received(now, message)
        if isinstance(message, messages.MessageError):
            self._violation(client, message)
        elif isinstance(message, messages.MixedAudio):
            self._record(message.data.chunk, message.data.sample_rate)
            if self.options.echo:
                out = messages.BotOutput(
                    data=messages.BotOutputData(
                        chunk=message.data.chunk, sample_rate=message.data.sample_rate
                    )
                )
                client.echoed += 1
                send.send_nowait((now + self.options.delay_ms / 1000, _text(out)))
        elif isinstance(message, messages.MarkEcho):
            name, status = message.data.name, message.data.status
            client.marks.append((name, status))
            sent = client.marks_sent.pop(name, None)
            after = f" {(now - sent) * 1000:.0f} ms after it was sent" if sent else ""
            self.report.event(
                "mark",
                f"[client {client.number}] mark {name!r} {status}{after}",
                client=client.number,
                name=name,
                status=status,
                after_ms=round((now - sent) * 1000) if sent else None,
            )
        elif isinstance(message, messages.Error):
            # The sidecar refused something we sent: a bug in this tool, or a
            # contract change. Worth saying loudly either way.
            self.report.event(
                "error_reply",
                f"[client {client.number}] the client rejected a message we sent: "
                f"{message.data.code}: {message.data.message}",
                client=client.number,
                code=str(message.data.code),
                message=message.data.message,
            )

    def _violation(self, client: ClientState, error: messages.MessageError) -> None:
        count = client.traffic.violations
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
        self, ws: tw.WebSocketConnection, receive: trio.MemoryReceiveChannel[tuple[float, str]]
    ) -> None:
        async with receive:
            async for due, text in receive:
                await trio.sleep_until(due)
                try:
                    await ws.send_message(text)
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

    async def _play(
        self, client: ClientState, send: trio.MemorySendChannel[tuple[float, str]]
    ) -> None:
        opts = self.options
        assert opts.play is not None
        await trio.sleep(opts.play_after)
        async with send:
            with WavReader(opts.play) as reader:
                rate = opts.play_rate or nearest_rate(reader.rate)
                resampler = Resampler(reader.rate, rate)
                per_chunk = reader.rate * opts.chunk_ms // 1000
                pacer = Pacer()
                pending = b""
                chunk_bytes = rate * opts.chunk_ms // 1000 * 2
                self.report.event(
                    "playing",
                    f"[client {client.number}] playing {opts.play} "
                    f"({reader.format.describe()}) as bot_output at {rate} Hz",
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
            mark = messages.Mark(data=messages.MarkData(name=opts.mark))
            client.marks_sent[opts.mark] = trio.current_time()
            send.send_nowait((trio.current_time(), _text(mark)))
            self.report.event(
                "played",
                f"[client {client.number}] sent {client.played_s:.2f} s of bot_output, "
                f"then mark {opts.mark!r}",
                client=client.number,
                seconds=round(client.played_s, 3),
                mark=opts.mark,
            )

    async def _speak(
        self,
        client: ClientState,
        send: trio.MemorySendChannel[tuple[float, str]],
        pacer: Pacer,
        pcm: bytes,
        rate: int,
    ) -> None:
        seconds = len(pcm) / 2 / rate
        await pacer.wait(seconds)
        out = messages.BotOutput(data=messages.BotOutputData(chunk=pcm, sample_rate=rate))  # type: ignore[arg-type]
        send.send_nowait((trio.current_time(), _text(out)))
        client.played_s += seconds


def nearest_rate(rate: int) -> int:
    """The highest contract rate not above `rate` (upsampling adds nothing)."""
    fitting = [r for r in messages.SAMPLE_RATES if r <= rate]
    return max(fitting) if fitting else min(messages.SAMPLE_RATES)


def _describe_endpoint(endpoint: tw.Endpoint | str) -> str:
    if isinstance(endpoint, tw.Endpoint):
        host = f"[{endpoint.address}]" if ":" in str(endpoint.address) else endpoint.address
        return f"{host}:{endpoint.port}"
    return str(endpoint)


def _text(message: messages.ServerMessage) -> str:
    return messages.encode(message).decode()


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
            "A local websocket server speaking the server side of the contract. It validates "
            "every message it receives and prints live statistics to stderr. stdout carries "
            'JSON lines; the first is {"event": "listening", "url": ...}. Exit status 1 if any '
            "message broke the contract."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--echo", action="store_true", help="send received audio back as bot_output")
    mode.add_argument(
        "--play", type=Path, metavar="FILE.wav", help="speak a WAV file as bot_output"
    )
    p.add_argument("--delay-ms", type=int, default=0, help="with --echo: hold each echo this long")
    p.add_argument(
        "--play-rate",
        type=int,
        choices=messages.SAMPLE_RATES,
        help="with --play: bot_output sample rate [default: highest not above the file's]",
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
    p.add_argument("--chunk-ms", type=int, default=20, help="with --play: audio per message")
    p.add_argument("--record", type=Path, metavar="FILE.wav", help="save received mixed audio")
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
    except OSError as exc:
        print(f"audio-sidecar serve: error: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE


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
