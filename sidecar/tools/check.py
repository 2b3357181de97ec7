"""`audio-sidecar check URL`: does a websocket server work with the sidecar?

Connects the way the sidecar does (same headers, same TLS rules), one step at
a time so a failure names the step: TCP, TLS, websocket handshake. Then it
streams a few seconds of speech-like test audio as `realtime_audio.mixed`,
behaves like the sidecar towards whatever comes back (echoes marks once the
audio before them would have played, answers invalid messages with
`realtime_audio.error`), and reports in plain words: did bot_output come
back, how soon, and is every message the server sent valid under the
contract. Exit status 0 when everything is right, 1 when anything is wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import socket
import ssl
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec
import trio
import trio_websocket as tw

from sidecar import messages
from sidecar.config import ConfigError, check_url, parse_header, redact_url
from sidecar.ratelimit import TokenBucket
from sidecar.tools import synth
from sidecar.tools.helpformat import HelpFormatter
from sidecar.tools.pacing import Pacer
from sidecar.tools.wavio import to_s16le

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Status = Literal["ok", "warn", "fail", "info"]
MAX_LISTED_VIOLATIONS = 10
# After the audio ends, keep listening until the server has been quiet this
# long (it may still be speaking), but never longer than MAX_DRAIN_S.
MAX_DRAIN_S = 30.0
HARD_MAX_MESSAGE = 8 * messages.MAX_MESSAGE_BYTES
CLOSE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class CheckOptions:
    url: str
    seconds: float = 3.0
    sample_rate: int = 16000
    chunk_ms: int = 20
    headers: tuple[tuple[str, str], ...] = ()
    ca_file: Path | None = None
    bot_id: str = "bot_check"
    connect_timeout: float = 10.0
    quiet_after: float = 2.0
    require_output: bool = False
    max_message_bytes: int = messages.MAX_MESSAGE_BYTES


class Finding(msgspec.Struct, frozen=True):
    step: str
    status: Status
    text: str


class Violation(msgspec.Struct):
    """One kind of problem: the first message that had it, and how many did."""

    number: int
    code: str
    message: str
    trigger: str | None = None
    count: int = 1


class CheckReport(msgspec.Struct):
    url: str
    ok: bool = False
    findings: list[Finding] = []
    tls: dict[str, Any] | None = None
    connect_ms: float | None = None
    handshake_ms: float | None = None
    sent_messages: int = 0
    sent_seconds: float = 0.0
    server_messages: int = 0
    by_trigger: dict[str, int] = {}
    bot_output_messages: int = 0
    bot_output_seconds: float = 0.0
    bot_output_rates: list[int] = []
    first_output_ms: float | None = None
    marks: list[dict[str, str]] = []
    clears: int = 0
    violations: int = 0
    violation_list: list[Violation] = []
    error_replies: int = 0
    close_code: int | None = None
    close_reason: str | None = None
    closed_by: Literal["check", "server"] | None = None

    def add(self, step: str, status: Status, text: str) -> None:
        self.findings.append(Finding(step, status, text))

    @property
    def problems(self) -> int:
        return sum(f.status == "fail" for f in self.findings)


class _Abort(Exception):
    """A step failed; its finding is already in the report."""


@dataclass(slots=True)
class _Session:
    options: CheckOptions
    report: CheckReport
    ws: tw.WebSocketConnection
    first_sent: float | None = None
    last_heard: float = 0.0
    audio_done: bool = False
    play_until: float = 0.0
    pending_marks: list[tuple[float, str]] = field(default_factory=list)
    wake: trio.Event = field(default_factory=trio.Event)
    triggers: Counter[str] = field(default_factory=Counter)
    rates: set[int] = field(default_factory=set)
    bucket: TokenBucket = field(default_factory=lambda: TokenBucket(5.0, 5.0))
    replies: list[messages.SidecarMessage] = field(default_factory=list)
    replies_ready: trio.Event = field(default_factory=trio.Event)

    async def send(self, message: messages.SidecarMessage) -> None:
        await self.ws.send_message(messages.encode(message).decode())

    def reply(self, message: messages.SidecarMessage) -> None:
        """Queue an answer; the reader never waits on a send (a full receive
        queue would stop trio-websocket answering pings)."""
        self.replies.append(message)
        self.replies_ready.set()

    async def serve_replies(self) -> None:
        while True:
            await self.replies_ready.wait()
            self.replies_ready = trio.Event()
            while self.replies:
                await self.send(self.replies.pop(0))

    async def stream_audio(self) -> None:
        opts = self.options
        rate = opts.sample_rate
        pcm = to_s16le(synth.speech_like(opts.seconds, rate, level_dbfs=-20.0))
        chunk_bytes = rate * opts.chunk_ms // 1000 * 2
        pacer = Pacer()
        start_ms = time.time() * 1000.0
        for offset in range(0, len(pcm), chunk_bytes):
            piece = pcm[offset : offset + chunk_bytes]
            await pacer.wait(len(piece) / 2 / rate)
            if self.first_sent is None:
                self.first_sent = trio.current_time()
            data = messages.MixedData(
                chunk=piece,
                sample_rate=rate,  # type: ignore[arg-type]
                timestamp_ms=int(start_ms + offset / 2 * 1000 / rate),
            )
            await self.send(messages.MixedAudio(bot_id=opts.bot_id, data=data))
            self.report.sent_messages += 1
            self.report.sent_seconds += len(piece) / 2 / rate
        self.audio_done = True
        self.last_heard = max(self.last_heard, trio.current_time())

    async def read(self) -> None:
        while True:
            raw = await self.ws.get_message()
            now = trio.current_time()
            self.last_heard = now
            self.received(raw, now)

    def received(self, raw: str | bytes, now: float) -> None:
        report = self.report
        report.server_messages += 1
        message = messages.decode_server_message(raw, self.options.max_message_bytes)
        if isinstance(message, messages.MessageError):
            self.triggers[message.trigger or "(invalid)"] += 1
            report.violations += 1
            self.note_violation(message)
            if self.bucket.take(now):
                # What the sidecar does, so the server's error handling is exercised too.
                report.error_replies += 1
                data = messages.ErrorData(
                    code=message.code, message=message.message, trigger=message.trigger
                )
                self.reply(messages.Error(bot_id=self.options.bot_id, data=data))
            return
        if isinstance(message, messages.BotOutput):
            self.triggers[messages.BOT_OUTPUT] += 1
            report.bot_output_messages += 1
            seconds = len(message.data.chunk) / 2 / message.data.sample_rate
            report.bot_output_seconds += seconds
            self.rates.add(message.data.sample_rate)
            if report.first_output_ms is None and self.first_sent is not None:
                report.first_output_ms = round((now - self.first_sent) * 1000, 1)
            self.play_until = max(now, self.play_until) + seconds
        elif isinstance(message, messages.Clear):
            self.triggers[messages.CLEAR] += 1
            report.clears += 1
            self.play_until = now
            cleared, self.pending_marks = self.pending_marks, []
            for _, name in cleared:
                self.echo_mark(name, "cleared")
        else:
            self.triggers[messages.MARK] += 1
            self.pending_marks.append((max(now, self.play_until), message.data.name))
            self.wake.set()

    def note_violation(self, error: messages.MessageError) -> None:
        for known in self.report.violation_list:
            if (known.code, known.message, known.trigger) == (
                error.code,
                error.message,
                error.trigger,
            ):
                known.count += 1
                return
        if len(self.report.violation_list) < MAX_LISTED_VIOLATIONS:
            self.report.violation_list.append(
                Violation(self.report.server_messages, error.code, error.message, error.trigger)
            )

    def echo_mark(self, name: str, status: messages.MarkStatus) -> None:
        self.report.marks.append({"name": name, "status": status})
        data = messages.MarkEchoData(name=name, status=status)
        self.reply(messages.MarkEcho(bot_id=self.options.bot_id, data=data))

    async def serve_marks(self) -> None:
        """Answer marks when the audio queued before them would have finished playing."""
        while True:
            if not self.pending_marks:
                await self.wake.wait()
                self.wake = trio.Event()
                continue
            due, name = self.pending_marks[0]
            with trio.move_on_at(due):
                await self.wake.wait()
                self.wake = trio.Event()
                continue
            if self.pending_marks and self.pending_marks[0] == (due, name):
                self.pending_marks.pop(0)
                self.echo_mark(name, "played")

    async def drain(self) -> None:
        """After the audio: wait until the server has said all it will say."""
        limit = trio.current_time() + MAX_DRAIN_S
        while trio.current_time() < limit:
            quiet_at = max(self.last_heard, self.play_until) + self.options.quiet_after
            if trio.current_time() >= quiet_at and not self.pending_marks and not self.replies:
                return
            await trio.sleep(min(0.05, max(0.0, quiet_at - trio.current_time())) or 0.05)


async def run_check(options: CheckOptions) -> CheckReport:
    report = CheckReport(url=redact_url(options.url))
    with contextlib.suppress(_Abort):
        await _check(options, report)
    report.ok = report.problems == 0
    return report


async def _check(options: CheckOptions, report: CheckReport) -> None:
    parts = urlsplit(options.url)
    host = parts.hostname or ""
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = host if port in (80, 443) else f"{host}:{port}"
    if ":" in host:
        host_header = f"[{host}]" if port in (80, 443) else f"[{host}]:{port}"
    warning = check_url(options.url, "URL")
    if warning:
        report.add("url", "warn", warning)

    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    stream = await _connect_tcp(options, report, host, port)
    if secure:
        stream = await _start_tls(options, report, stream, host)
    else:
        report.add("tls", "info", "not used (ws://)")
    async with stream:
        try:
            async with trio.open_nursery() as nursery:
                ws = await _handshake(options, report, nursery, stream, host_header, resource)
                await _session(options, report, ws)
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            leaf = _leaf(group)
            if isinstance(leaf, tw.ConnectionRejected):
                _rejected(report, leaf)
                raise _Abort from None
            if isinstance(leaf, _Abort):
                raise leaf from None
            raise
        except tw.ConnectionRejected as exc:
            _rejected(report, exc)
            raise _Abort from None


async def _connect_tcp(
    options: CheckOptions, report: CheckReport, host: str, port: int
) -> trio.SocketStream:
    started = trio.current_time()
    where = f"{host}:{port}"
    try:
        with trio.fail_after(options.connect_timeout):
            stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        report.add(
            "connect",
            "fail",
            f"no TCP connection to {where} within "
            f"{options.connect_timeout:g} s (a firewall dropping packets?)",
        )
        raise _Abort from None
    except socket.gaierror as exc:
        report.add("connect", "fail", f"cannot resolve host {host!r}: {exc.strerror}")
        raise _Abort from None
    except OSError as exc:
        report.add("connect", "fail", f"cannot connect to {where}: {_os_reason(exc)}")
        raise _Abort from None
    report.connect_ms = round((trio.current_time() - started) * 1000, 1)
    report.add("connect", "ok", f"TCP connection to {where} in {report.connect_ms:.0f} ms")
    return stream


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ECONNREFUSED or isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing is listening on that port)"
    # trio's happy eyeballs wraps per-address failures in one OSError.
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        first = cause.exceptions[0]
        if isinstance(first, OSError):
            return _os_reason(first)
    return exc.strerror or str(exc)


def _tls_context(options: CheckOptions) -> ssl.SSLContext:
    # The same rules as the sidecar (link.ssl_context): system trust, plus --ca-file.
    context = ssl.create_default_context()
    if options.ca_file is not None:
        context.load_verify_locations(cafile=str(options.ca_file))
    return context


async def _start_tls(
    options: CheckOptions, report: CheckReport, tcp: trio.SocketStream, host: str
) -> trio.SSLStream[trio.SocketStream]:
    stream = trio.SSLStream(tcp, _tls_context(options), server_hostname=host, https_compatible=True)
    try:
        with trio.fail_after(options.connect_timeout):
            await stream.do_handshake()
    except trio.TooSlowError:
        report.add("tls", "fail", f"no TLS handshake within {options.connect_timeout:g} s")
        await tcp.aclose()
        raise _Abort from None
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLCertVerificationError):
            hint = "" if options.ca_file else "; for a private CA pass --ca-file"
            text = f"certificate rejected: {cause.verify_message}{hint}"
        elif isinstance(cause, ssl.SSLError):
            text = f"TLS handshake failed: {cause.reason or cause}"
            if cause.reason in (
                "WRONG_VERSION_NUMBER",
                "HTTP_REQUEST",
                "UNEXPECTED_EOF_WHILE_READING",
            ):
                text += " (is the server speaking plain ws:// on this port?)"
        else:
            text = f"TLS handshake failed: {cause or exc}"
        report.add("tls", "fail", text)
        await tcp.aclose()
        raise _Abort from None
    cert: dict[str, Any] = stream.getpeercert() or {}
    names = [str(value) for _, value in cert.get("subjectAltName", ())]
    subject = ", ".join(names) or _name(cert.get("subject", ())) or host
    issuer = _name(cert.get("issuer", ())) or "an unnamed issuer"
    report.tls = {
        "version": stream.version(),
        "cipher": (stream.cipher() or ("",))[0],
        "subject": subject,
        "issuer": issuer,
        "not_after": cert.get("notAfter"),
    }
    report.add(
        "tls",
        "ok",
        f"{report.tls['version']}; certificate for {subject} issued by {issuer}, verified, "
        f"valid until {cert.get('notAfter', '?')}",
    )
    return stream


def _name(rdns: Any) -> str:
    for rdn in rdns:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    for rdn in rdns:
        for key, value in rdn:
            if key == "organizationName":
                return str(value)
    return ""


async def _handshake(
    options: CheckOptions,
    report: CheckReport,
    nursery: trio.Nursery,
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
    host_header: str,
    resource: str,
) -> tw.WebSocketConnection:
    started = trio.current_time()
    headers = [(k.encode(), v.encode()) for k, v in options.headers]
    with trio.move_on_after(options.connect_timeout) as scope:
        ws = await tw.wrap_client_stream(
            nursery,
            stream,
            host_header,
            resource,
            extra_headers=headers,
            message_queue_size=64,
            max_message_size=HARD_MAX_MESSAGE,
        )
    if scope.cancelled_caught:
        report.add(
            "handshake",
            "fail",
            f"no websocket handshake within {options.connect_timeout:g} s: "
            "is this a websocket endpoint?",
        )
        raise _Abort
    if ws.closed is not None:
        report.add(
            "handshake", "fail", f"the server closed the connection: {_close_text(ws.closed)}"
        )
        raise _Abort
    report.handshake_ms = round((trio.current_time() - started) * 1000, 1)
    sent = ", ".join(k for k, _ in options.headers)
    extra = f" (sent headers: {sent})" if sent else ""
    report.add("handshake", "ok", f"websocket accepted in {report.handshake_ms:.0f} ms{extra}")
    return ws


def _rejected(report: CheckReport, exc: tw.ConnectionRejected) -> None:
    status = exc.status_code
    body = " ".join((exc.body or b"").decode("utf-8", "replace").split())
    if len(body) > 120:
        body = body[:117] + "..."
    if 200 <= status < 300:
        text = (
            f"the server answered with HTTP {status} instead of switching protocols: "
            "a plain HTTP endpoint, not a websocket one (check the URL's path)"
        )
        report.add("handshake", "fail", text)
        return
    text = f"the server refused the websocket handshake with HTTP {status}"
    if body:
        text += f": {body}"
    hints = {
        401: "the server wants credentials: pass them with --header 'Authorization: ...'",
        403: "the server refused these credentials: check --header",
        404: "nothing at this path: check the URL's path",
        426: "the server wants a different protocol or version",
    }
    if status in hints:
        text += f" ({hints[status]})"
    report.add("handshake", "fail", text)


async def _session(options: CheckOptions, report: CheckReport, ws: tw.WebSocketConnection) -> None:
    session = _Session(options, report, ws)
    closed: tw.CloseReason | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.read)
            nursery.start_soon(session.serve_marks)
            nursery.start_soon(session.serve_replies)
            await session.stream_audio()
            await session.drain()
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        leaf = _leaf(group)
        if not isinstance(leaf, tw.ConnectionClosed):
            raise
        closed = leaf.reason
    except tw.ConnectionClosed as exc:
        closed = exc.reason
    if closed is None:
        with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
            scope.shield = True
            await ws.aclose(code=1000, reason="check finished")
        report.closed_by = "check"
    else:
        report.closed_by = "server"
        report.close_code = closed.code
        report.close_reason = closed.reason
    _summarise_session(options, report, session)


def _summarise_session(options: CheckOptions, report: CheckReport, session: _Session) -> None:
    report.by_trigger = dict(session.triggers)
    report.bot_output_rates = sorted(session.rates)
    report.bot_output_seconds = round(report.bot_output_seconds, 3)
    report.sent_seconds = round(report.sent_seconds, 3)
    sent = (
        f"sent {report.sent_seconds:.2f} s of speech-like audio as {report.sent_messages} "
        f"realtime_audio.mixed messages at {options.sample_rate} Hz"
    )
    if session.audio_done:
        report.add("audio", "ok", sent)
    else:
        report.add("audio", "fail", f"{sent}; the connection ended before all of it was sent")
    if report.bot_output_messages:
        rates = "/".join(map(str, report.bot_output_rates))
        latency = (
            f"; the first arrived {report.first_output_ms:.0f} ms after the first audio was sent"
            if report.first_output_ms is not None
            else ""
        )
        report.add(
            "bot_output",
            "ok",
            f"{report.bot_output_messages} messages, {report.bot_output_seconds:.2f} s of audio "
            f"at {rates} Hz{latency}",
        )
    else:
        report.add(
            "bot_output",
            "fail" if options.require_output else "warn",
            "no realtime_audio.bot_output came back: the bot would stay silent",
        )
    if report.marks or report.clears:
        played = sum(m["status"] == "played" for m in report.marks)
        report.add(
            "marks",
            "info",
            f"{len(report.marks)} mark(s) answered ({played} played), {report.clears} clear(s)",
        )
    valid = report.server_messages - report.violations
    if not report.server_messages:
        report.add("contract", "info", "the server sent no messages to validate")
    elif not report.violations:
        report.add(
            "contract", "ok", f"all {report.server_messages} messages from the server are valid"
        )
    else:
        lines = [
            f"{report.violations} of {report.server_messages} messages from the server break "
            f"the contract ({valid} valid):"
        ]
        for v in report.violation_list:
            about = f" ({v.trigger})" if v.trigger and v.code != "unknown_trigger" else ""
            more = f" (and {v.count - 1} more like it)" if v.count > 1 else ""
            lines.append(f"message #{v.number}{about}{more}: {v.message} [{v.code}]")
        listed = sum(v.count for v in report.violation_list)
        if report.violations > listed:
            lines.append(f"... and {report.violations - listed} more of other kinds")
        report.add("contract", "fail", "\n".join(lines))
    if report.closed_by == "check":
        report.add("close", "ok", "the connection closed cleanly (code 1000)")
    elif report.close_code in (1000, 1001) and session.audio_done:
        report.add("close", "warn", f"the server closed the connection: {_close_fields(report)}")
    else:
        report.add(
            "close",
            "fail",
            f"the server closed the connection early: {_close_fields(report)}",
        )


def _close_fields(report: CheckReport) -> str:
    text = f"code {report.close_code}"
    return f"{text} ({report.close_reason})" if report.close_reason else text


def _close_text(reason: tw.CloseReason) -> str:
    text = f"code {reason.code}"
    return f"{text} ({reason.reason})" if reason.reason else text


def _leaf(exc: BaseException) -> BaseException:
    """The one real error inside nested exception groups (Cancelled filtered out)."""
    while isinstance(exc, BaseExceptionGroup):
        real = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        if len(real) != 1:
            return exc
        exc = real[0]
    return exc


# -- output ---------------------------------------------------------------------------------

_MARKS: dict[Status, str] = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "info": "--  "}


def render(report: CheckReport) -> str:
    lines = [f"audio-sidecar check {report.url}"]
    for finding in report.findings:
        first, *rest = finding.text.split("\n")
        lines.append(f"  {_MARKS[finding.status]}  {finding.step}: {first}")
        lines.extend(f"          {line}" for line in rest)
    if report.ok:
        warnings = sum(f.status == "warn" for f in report.findings)
        note = f" ({warnings} warning(s))" if warnings else ""
        lines.append(f"PASS: the server works with the sidecar{note}")
    else:
        lines.append(f"FAIL: {report.problems} problem(s) found")
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check",
        help="check that a websocket server works with the sidecar",
        description=(
            "Connect to URL as the sidecar would, stream a few seconds of test audio and report "
            "in plain words: handshake and TLS, whether bot_output came back and how soon, and "
            "whether every message the server sent is valid. Exit status 0 when all is well, 1 "
            "when anything is wrong, 2 for a usage error."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("url", help="ws:// or wss:// URL of the server")
    p.add_argument("--seconds", type=float, default=3.0, help="test audio to stream")
    p.add_argument("--sample-rate", type=int, choices=messages.SAMPLE_RATES, default=16000)
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra handshake header, e.g. Authorization (repeatable)",
    )
    p.add_argument("--ca-file", type=Path, help="PEM bundle of a private CA to trust")
    p.add_argument("--bot-id", default="bot_check", help="bot_id sent in every message")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="seconds per step")
    p.add_argument(
        "--quiet-after",
        type=float,
        default=2.0,
        help="after the audio, stop once the server has been silent this long",
    )
    p.add_argument(
        "--require-output",
        action="store_true",
        help="fail (not just warn) when no bot_output comes back",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    try:
        check_url(args.url, "URL")
        headers = tuple(parse_header(h) for h in args.header)
    except ConfigError as exc:
        print(f"audio-sidecar check: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not 0 < args.seconds <= 600:
        print("audio-sidecar check: error: --seconds must be between 0 and 600", file=sys.stderr)
        return EXIT_USAGE
    if args.ca_file is not None and not args.ca_file.is_file():
        print(
            f"audio-sidecar check: error: --ca-file {args.ca_file} is not a file", file=sys.stderr
        )
        return EXIT_USAGE
    options = CheckOptions(
        url=args.url,
        seconds=args.seconds,
        sample_rate=args.sample_rate,
        headers=headers,
        ca_file=args.ca_file,
        bot_id=args.bot_id,
        connect_timeout=args.connect_timeout,
        quiet_after=args.quiet_after,
        require_output=args.require_output,
    )
    report = trio.run(run_check, options)
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        print(render(report))
    return EXIT_OK if report.ok else EXIT_FAILED
