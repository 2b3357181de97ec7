"""`audio-sidecar check URL`: does a websocket server work with the sidecar?

Connects the way the sidecar does (same headers, same TLS rules), one step at
a time so a failure names the step: TCP, TLS, websocket handshake. Then,
driven by the dialect's own client `Session` (--protocol; the very code the
sidecar runs), it sends the dialect's opening, streams a few seconds of
speech-like test audio, behaves like the sidecar towards whatever comes back
(answers marks once the audio before them would have played, and a clear at
once; answers invalid messages where the dialect has an error reply), sends
the dialect's closing, and reports in plain words: did audio come back, how
soon, and is every message the server sent valid in the dialect. Exit status
0 when everything is right, 1 when anything is wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import socket
import ssl
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import msgspec
import trio
import trio_websocket as tw

from sidecar import dialects, messages, urlfetch
from sidecar.config import (
    ConfigError,
    check_ranges,
    check_url,
    parse_header_arg,
    parse_session,
    redact_url,
    request_secrets,
    request_target,
)
from sidecar.connection import describe
from sidecar.dialects.base import (
    AudioOut,
    ClearedOut,
    ClearPlayout,
    Dialect,
    ErrorOut,
    Invalid,
    MarkIn,
    MarkOut,
    Notice,
    Options,
    Outgoing,
    PlayAudio,
    Session,
    SessionReply,
    UrlAnswerError,
    Wire,
)
from sidecar.dialects.jsonwire import tag_of
from sidecar.handshake import HandshakeFailed, HandshakeStream
from sidecar.link import tls_context
from sidecar.pcm import SAMPLE_BYTES
from sidecar.ratelimit import TokenBucket
from sidecar.redact import Redactor
from sidecar.tools import protocols, synth
from sidecar.tools.helpformat import HelpFormatter
from sidecar.tools.pacing import Pacer
from sidecar.tools.traffic import BINARY, kind_of
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
    protocol: str = dialects.DEFAULT
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
    session: dict[str, object] = field(default_factory=dict)
    """The dialect's session object (--session), for dialects that take one."""

    def redactor(self) -> Redactor:
        """`run`'s redactor for what `check` sends: its headers, its URL and
        every dialect's credential variable."""
        return Redactor.for_run(request_secrets(self.headers, (self.url,)), os.environ)

    def dialect(self) -> Dialect:
        return dialects.make(
            self.protocol,
            Options(
                bot_id=self.bot_id,
                sample_rate=self.sample_rate,
                chunk_ms=self.chunk_ms,
                max_message_bytes=self.max_message_bytes,
                session=self.session,
            ),
        )


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
    protocol: str = dialects.DEFAULT
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
    notices: dict[str, int] = {}
    """What the server told the bot besides audio (transcripts, agent events), by event."""
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
class _Run:
    """One check's connection: the dialect's client session, and the sidecar's
    behaviour around it."""

    options: CheckOptions
    report: CheckReport
    ws: tw.WebSocketConnection
    session: Session
    rate: int
    """Of the audio sent: the dialect's."""
    error_replies: bool
    first_sent: float | None = None
    last_heard: float = 0.0
    last_audio: float = 0.0
    audio_done: bool = False
    audio_kind: str = ""
    play_until: float = 0.0
    pending_marks: list[tuple[float, str]] = field(default_factory=list)
    wake: trio.Event = field(default_factory=trio.Event)
    ready: trio.Event = field(default_factory=trio.Event)
    triggers: Counter[str] = field(default_factory=Counter)
    notices: Counter[str] = field(default_factory=Counter)
    rates: set[int] = field(default_factory=set)
    bucket: TokenBucket = field(default_factory=lambda: TokenBucket(5.0, 5.0))
    replies: list[Outgoing] = field(default_factory=list)
    replies_ready: trio.Event = field(default_factory=trio.Event)
    sending: trio.Lock = field(default_factory=trio.Lock)

    async def send(self, item: Outgoing) -> Sequence[Wire]:
        """Encode at send time, one sender at a time, as the sidecar does: a
        dialect's counters (Twilio's sequenceNumber) follow the order on the wire."""
        async with self.sending:
            return await self.send_wires(self.session.wire(item))

    async def send_wires(self, wires: Sequence[Wire]) -> Sequence[Wire]:
        for wire in wires:
            await self.ws.send_message(wire)
        return wires

    def reply(self, item: Outgoing) -> None:
        """Queue an answer; the reader never waits on a send (a full receive
        queue would stop trio-websocket answering pings)."""
        self.replies.append(item)
        self.replies_ready.set()

    async def serve_replies(self) -> None:
        while True:
            await self.replies_ready.wait()
            self.replies_ready = trio.Event()
            while self.replies:
                await self.send(self.replies.pop(0))

    async def open(self) -> None:
        async with self.sending:
            await self.send_wires(self.session.opening())
        self.note_ready()

    async def close(self) -> None:
        async with self.sending:
            await self.send_wires(self.session.closing())

    def note_ready(self) -> None:
        if self.session.audio_ready:
            self.ready.set()

    async def stream_audio(self) -> None:
        opts = self.options
        rate = self.rate
        pcm = to_s16le(synth.speech_like(opts.seconds, rate, level_dbfs=-20.0))
        chunk_bytes = rate * opts.chunk_ms // 1000 * SAMPLE_BYTES
        pacer = Pacer()
        with trio.move_on_after(opts.connect_timeout):
            await self.ready.wait()
        if not self.ready.is_set():
            return
        start_ms = time.time() * 1000.0
        for offset in range(0, len(pcm), chunk_bytes):
            piece = pcm[offset : offset + chunk_bytes]
            await pacer.wait(len(piece) / SAMPLE_BYTES / rate)
            if self.first_sent is None:
                self.first_sent = trio.current_time()
            stamp_ms = int(start_ms + offset * (1000.0 / SAMPLE_BYTES) / rate)
            wires = await self.send(AudioOut(piece, rate, stamp_ms))
            if wires and not self.audio_kind:
                self.audio_kind = kind_of(wires[0])
            self.report.sent_messages += len(wires)
            self.report.sent_seconds += len(piece) / SAMPLE_BYTES / rate
            self.last_audio = trio.current_time()
        self.audio_done = True
        self.last_heard = max(self.last_heard, trio.current_time())

    async def keepalive(self, period: float) -> None:
        """The dialect's keepalive, whenever no audio went for `period` (before
        and after the test audio)."""
        self.last_audio = trio.current_time()
        while True:
            await trio.sleep_until(self.last_audio + period)
            if trio.current_time() >= self.last_audio + period:
                async with self.sending:
                    await self.send_wires(self.session.keepalive())
                self.last_audio = trio.current_time()

    async def read(self) -> None:
        while True:
            raw = await self.ws.get_message()
            now = trio.current_time()
            self.last_heard = now
            self.received(raw, now)

    def received(self, raw: Wire, now: float) -> None:
        report = self.report
        report.server_messages += 1
        self.triggers[kind_of(raw)] += 1
        incoming = self.session.receive(raw)
        self.note_ready()
        if any(isinstance(item, Invalid) for item in incoming):
            report.violations += 1
        for item in incoming:
            match item:
                case Invalid(error=error):
                    self.note_violation(error)
                    # What the sidecar does, so the server's error handling is exercised too.
                    if self.error_replies and self.bucket.take(now):
                        report.error_replies += 1
                        self.reply(ErrorOut(error))
                case PlayAudio(pcm=pcm, rate=rate):
                    report.bot_output_messages += 1
                    seconds = len(pcm) / SAMPLE_BYTES / rate
                    report.bot_output_seconds += seconds
                    self.rates.add(rate)
                    if report.first_output_ms is None and self.first_sent is not None:
                        report.first_output_ms = round((now - self.first_sent) * 1000, 1)
                    self.play_until = max(now, self.play_until) + seconds
                case ClearPlayout():
                    report.clears += 1
                    self.play_until = now
                    cleared, self.pending_marks = self.pending_marks, []
                    for _, name in cleared:
                        self.answer_mark(name, played=False)
                    self.reply(ClearedOut())
                case MarkIn(name=name):
                    self.pending_marks.append((max(now, self.play_until), name))
                    self.wake.set()
                case Notice(event=event):
                    self.notices[tag_of(event)] += 1
        replies = self.session.replies()
        if replies:
            # What the session owes the server (a pong, a held response.create),
            # in order with the rest, as the sidecar's link sends it.
            self.reply(SessionReply(self.session, tuple(replies)))

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

    def answer_mark(self, name: str, played: bool) -> None:
        status: messages.MarkStatus = "played" if played else "cleared"
        self.report.marks.append({"name": name, "status": status})
        self.reply(MarkOut(name, played))

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
                self.answer_mark(name, played=True)

    async def drain(self) -> None:
        """After the audio: wait until the server has said all it will say."""
        limit = trio.current_time() + MAX_DRAIN_S
        while trio.current_time() < limit:
            quiet_at = max(self.last_heard, self.play_until) + self.options.quiet_after
            if trio.current_time() >= quiet_at and not self.pending_marks and not self.replies:
                return
            await trio.sleep(min(0.05, max(0.0, quiet_at - trio.current_time())) or 0.05)


async def run_check(options: CheckOptions) -> CheckReport:
    report = CheckReport(url=redact_url(options.url), protocol=options.protocol)
    with contextlib.suppress(_Abort):
        await _check(options, report)
    report.ok = report.problems == 0
    return report


async def _connection_url(options: CheckOptions, report: CheckReport) -> str:
    """The URL to connect to: the one given (with what the dialect's flags put
    into it), or the one the dialect's per-connection request answers (a signed
    URL), fetched as `run` fetches it."""
    dialect = options.dialect()
    given = dialect.connect_url(options.url)
    request = dialect.url_request(given, os.environ)
    if request is None:
        return given
    what = f"the URL request to {redact_url(request.url)}"
    try:
        with trio.fail_after(options.connect_timeout):
            status, body = await urlfetch.fetch(request, tls_context(options.ca_file))
        url = dialect.url_from_answer(given, status, body)
        check_url(url, "the URL from the answer")
    except trio.TooSlowError:
        report.add("url_request", "fail", f"{what}: no answer within {options.connect_timeout:g} s")
        raise _Abort from None
    except urlfetch.UrlFetchFailed as exc:
        report.add("url_request", "fail", f"{what}: {exc.reason}")
        raise _Abort from None
    except (UrlAnswerError, ConfigError, OSError, trio.BrokenResourceError) as exc:
        report.add("url_request", "fail", f"{what}: {describe(exc)}")
        raise _Abort from None
    report.add("url_request", "ok", f"{what}: HTTP {status}, {redact_url(url)}")
    return url


async def _check(options: CheckOptions, report: CheckReport) -> None:
    url = await _connection_url(options, report)
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    host_header, resource = request_target(url)
    warning = check_url(url, "URL")
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
            if isinstance(leaf, HandshakeFailed):
                _rejected(report, leaf)
                raise _Abort from None
            if isinstance(leaf, _Abort):
                raise leaf from None
            raise


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


async def _start_tls(
    options: CheckOptions, report: CheckReport, tcp: trio.SocketStream, host: str
) -> trio.SSLStream[trio.SocketStream]:
    stream = trio.SSLStream(
        tcp, tls_context(options.ca_file), server_hostname=host, https_compatible=True
    )
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
            # The sidecar's own judge of the answer (sidecar/handshake.py), so
            # check and run name a bad answer alike, and as soon: a rejection
            # is known from its head, and raised from the reader task.
            cast(trio.SocketStream, HandshakeStream(stream, redact=options.redactor())),
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


def _rejected(report: CheckReport, exc: HandshakeFailed) -> None:
    """A bad answer to the upgrade, in the words `run` uses, and a hint."""
    status = exc.status
    if status is not None and 200 <= status < 300:
        text = (
            f"the server answered with HTTP {status} instead of switching protocols: "
            "a plain HTTP endpoint, not a websocket one (check the URL's path)"
        )
        report.add("handshake", "fail", text)
        return
    hints = {
        401: "the server wants credentials: pass them with --header 'Authorization: ...'",
        403: "the server refused these credentials: check --header",
        404: "nothing at this path: check the URL's path",
        426: "the server wants a different protocol or version",
    }
    text = exc.reason
    if status in hints:
        text += f" ({hints[status]})"
    report.add("handshake", "fail", text)


async def _session(options: CheckOptions, report: CheckReport, ws: tw.WebSocketConnection) -> None:
    dialect = options.dialect()
    wire = dialect.uplink_audio()
    run = _Run(options, report, ws, dialect.session(), wire.rate, dialect.error_replies)
    closed: tw.CloseReason | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run.read)
            await run.open()
            nursery.start_soon(run.serve_marks)
            nursery.start_soon(run.serve_replies)
            if run.session.keepalive_s is not None:
                nursery.start_soon(run.keepalive, run.session.keepalive_s)
            await run.stream_audio()
            await run.drain()
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
            with contextlib.suppress(tw.ConnectionClosed):
                await run.close()
                await ws.aclose(code=1000, reason="check finished")
        report.closed_by = "check"
    else:
        report.closed_by = "server"
        report.close_code = closed.code
        report.close_reason = closed.reason
    _summarise_session(options, report, run, protocols.describe(wire))


def _summarise_session(
    options: CheckOptions, report: CheckReport, run: _Run, audio_format: str
) -> None:
    report.by_trigger = dict(run.triggers)
    report.bot_output_rates = sorted(run.rates)
    report.bot_output_seconds = round(report.bot_output_seconds, 3)
    report.sent_seconds = round(report.sent_seconds, 3)
    kind = "binary" if run.audio_kind == BINARY else run.audio_kind or "audio"
    sent = (
        f"sent {report.sent_seconds:.2f} s of speech-like audio as {report.sent_messages} "
        f"{kind} messages at {audio_format}"
    )
    if run.audio_done:
        report.add("audio", "ok", sent)
    elif not run.ready.is_set():
        report.add(
            "audio",
            "fail",
            f"the server gave no go-ahead for audio within {options.connect_timeout:g} s",
        )
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
            f"no {dialects.DIALECTS[options.protocol].server_audio} came back: "
            "the bot would stay silent",
        )
    if report.marks or report.clears:
        played = sum(m["status"] == "played" for m in report.marks)
        report.add(
            "marks",
            "info",
            f"{len(report.marks)} mark(s) answered ({played} played), {report.clears} clear(s)",
        )
    if run.notices:
        report.notices = dict(run.notices)
        kinds = ", ".join(f"{n} {kind}" for kind, n in run.notices.most_common())
        report.add("notices", "info", f"the server also told the bot: {kinds}")
    valid = report.server_messages - report.violations
    if not report.server_messages:
        # Whatever the dialect, a server that works says something: audio, a
        # mark, an event. Silence is a server that ignores or drops what it
        # was sent (another dialect, say), which the bot would learn only in a
        # meeting.
        report.add(
            "contract",
            "fail",
            f"nothing came back at all: not one message in reply to the "
            f"{report.sent_seconds:.2f} s of audio (is the server speaking --protocol "
            f"{options.protocol}?)",
        )
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
    elif report.close_code in (1000, 1001) and run.audio_done:
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
    # The dialect too: the same server passes in one and fails in another.
    lines = [f"audio-sidecar check {report.url} --protocol {report.protocol}"]
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
            "Connect to URL as the sidecar would, in the dialect of --protocol, stream a few "
            "seconds of test audio and report in plain words: handshake and TLS, whether audio "
            "came back and how soon, and whether every message the server sent is valid. Exit "
            "status 0 when all is well, 1 when anything is wrong, 2 for a usage error."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "url",
        nargs="?",
        help="ws:// or wss:// URL of the server [default: the dialect's own, where it has one]",
    )
    protocols.add_flag(p, dialects.DIALECTS, "client (the sidecar)")
    p.add_argument("--seconds", type=float, default=3.0, help="test audio to stream")
    p.add_argument(
        "--sample-rate",
        type=int,
        help="rate of the audio sent, where the dialect lets it be chosen (one of its "
        "rates, as `run` checks them) [default: the dialect's]",
    )
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'|@FILE",
        help="extra handshake header, e.g. Authorization, or @FILE of such lines (repeatable)",
    )
    p.add_argument(
        "--session",
        metavar="JSON|FILE",
        help="the dialect's session object, for dialects that take one",
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
        help="fail (not just warn) when no audio comes back",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    try:
        options = options_from_args(args)
    except ConfigError as exc:
        print(f"audio-sidecar check: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = trio.run(run_check, options)
    # The report quotes the server (a rejection's body, its errors, close
    # reasons): one may echo a credential. Every string is redacted before it
    # is encoded: JSON escapes a secret's quotes and backslashes, after which
    # it would no longer match.
    report = redacted(report, options.redactor())
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        print(render(report))
    return EXIT_OK if report.ok else EXIT_FAILED


def redacted(report: CheckReport, redact: Redactor) -> CheckReport:
    """The report with every string in it, keys included, through `redact`."""

    def clean(value: object) -> object:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return msgspec.convert(clean(msgspec.to_builtins(report)), CheckReport)


def options_from_args(args: argparse.Namespace) -> CheckOptions:
    url = args.url or dialects.DIALECTS[args.protocol].default_url
    if url is None:
        raise ConfigError(f"give the server's URL (--protocol {args.protocol} has no default)")
    check_url(url, "URL")
    headers = tuple(pair for arg in args.header for pair in parse_header_arg(arg))
    if not 0 < args.seconds <= 600:
        raise ConfigError("--seconds must be between 0 and 600")
    check_ranges({"--connect-timeout": args.connect_timeout})
    if not 0 <= args.quiet_after <= MAX_DRAIN_S:
        raise ConfigError(f"--quiet-after must be between 0 and {MAX_DRAIN_S:g}")
    if args.ca_file is not None and not args.ca_file.is_file():
        raise ConfigError(f"--ca-file {args.ca_file} is not a file")
    config = protocols.resolve(
        args.protocol,
        url,
        sample_rate=args.sample_rate,
        headers=headers,
        session=parse_session(args.session) if args.session is not None else None,
        bot_id=args.bot_id,
    )
    for warning in config.warnings:
        print(f"audio-sidecar check: warning: {warning}", file=sys.stderr)
    return CheckOptions(
        url=url,
        protocol=args.protocol,
        seconds=args.seconds,
        sample_rate=config.sample_rate,
        headers=config.headers,
        ca_file=args.ca_file,
        bot_id=args.bot_id,
        connect_timeout=args.connect_timeout,
        quiet_after=args.quiet_after,
        require_output=args.require_output,
        session=config.session or {},
    )
