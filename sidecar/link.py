"""The websocket supervisor: connect, keep alive, replace dead links, retry.

One connection at a time. We open the TCP (and TLS) stream ourselves and hand
it to trio-websocket, so that every step is bounded by our own timeouts, a
certificate failure is reported as one (not as a handshake that never ends),
and a dead connection can be dropped at once instead of waiting for a close
handshake its peer will never answer. The stream passes through a
HandshakeStream (sidecar/handshake.py), which judges the server's upgrade
answer before trio-websocket's wsproto can crash on a bad one.

One wake-up per message each way (sidecar/fastpath.py): whoever puts
something in the outbox (the uplink's reader, the downlink's replies) calls
`notify()`, which writes it on the socket there and then when the socket can
take it; and trio-websocket's reader task decodes and plays each server
message itself instead of handing it to a task of ours. Besides that reader,
three tasks run inside a connection (sidecar/connection.py, which owns one
connection's session, counters and the trio-websocket internals): a sender
that takes over whatever could not be written at once (a backlog, a slow
server) with a bounded send, a pinger whose pong wait is bounded, and, where
the dialect has one, a keepalive. The first of them to finish ends the
connection; this supervisor reads why, and the retry policy decides what
happens next.

What the supervisor is doing (connecting, upgrading, open, closing, down,
waiting to retry, stopped) is one state with its legal moves in one table
(sidecar/linkstate.py): whether the link counts itself connected, which
connection is live, and whether the outbox takes audio at the live limit are
read from it. A stop is a request (`_stopping`), not a state: each phase
honours it at its next decision.

The link never knows which dialect is speaking: each connection gets a fresh
`Session` from the dialect, which says what to send on opening and closing,
turns each outbox item into wire messages when it is sent, and each server
message into neutral events for the downlink.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import h11
import trio
import trio_websocket as tw
from wsproto.utilities import ProtocolError

from sidecar import events, urlfetch
from sidecar.config import (
    Config,
    ConfigError,
    check_url,
    redact_url,
    request_secrets,
    request_target,
    secrets,
)
from sidecar.connection import (
    NETWORK_ERRORS,
    NORMAL_CLOSURE,
    Connection,
    ConnectionStatistics,
    ConnState,
    End,
    Ended,
    OpeningUnencodable,
    Timeouts,
    closed,
    describe,
)
from sidecar.dialects.base import (
    Dialect,
    Incoming,
    Outgoing,
    PlayAudio,
    SessionEnded,
    SessionExpiring,
    UrlAnswerError,
    UserSpeaking,
)
from sidecar.fastpath import DirectStream
from sidecar.handshake import HandshakeFailed
from sidecar.linkstate import LinkPhase, LinkState
from sidecar.memory import MemorySnapshot
from sidecar.outbox import Outbox
from sidecar.redact import Redactor
from sidecar.retry import RetryPolicy

log = logging.getLogger("sidecar.link")

QUIET_S: Final = 1.0
"""A quiet moment to move to a new session: no agent audio arriving, none
playing or queued, and no user speech started, for at least this long."""
QUIET_POLL_S: Final = 0.1
"""How often a session due to rotate looks for its quiet moment."""


class LinkGaveUp(Exception):
    """The last retry failed."""


class LinkRejected(Exception):
    """The server refused us in a way retrying cannot fix (4xx, bad certificate)."""


class LinkEnded(Exception):
    """The server ended the call: a clean close not to reconnect after
    (--reconnect-on-close). Not a failure: the sidecar stops with exit 0."""


class LinkUnusable(Exception):
    """What we would send cannot be sent at all (an upgrade request HTTP refuses,
    an opening message the dialect cannot encode): a usage error, not a failure."""


@dataclass(slots=True)
class LinkStatistics:
    connected: bool = False
    """Read from the link's state (LinkPhase.connected), never kept."""
    connects: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    samples_out: int = 0
    # Sent on a connection that then died before a pong (or our close
    # handshake) proved the server had read them: maybe lost, maybe not.
    unconfirmed_samples: int = 0
    messages_in: int = 0
    bytes_in: int = 0
    # Messages the dialect could not encode, dropped (outbox audio among them
    # also counted as uplink_unencodable).
    encode_failures: int = 0
    # The bot's commands a session held and let go past its bounds.
    commands_dropped: int = 0


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    port: int
    host_header: str
    resource: str
    tls: bool

    @classmethod
    def parse(cls, url: str) -> _Target:
        parts = urlsplit(url)
        tls = parts.scheme == "wss"
        if parts.hostname is None:
            raise ValueError(f"{redact_url(url)} has no host")
        port = parts.port or (443 if tls else 80)
        host_header, resource = request_target(url)
        return cls(parts.hostname, port, host_header, resource, tls)


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """System trust plus --ca-file; verification is never turned off.

    A TLS 1.2 renegotiation the server asks for is refused (an alert, and the
    connection is replaced): a synchronous writer (fastpath.py) cannot stop
    to read the handshake first.
    """
    context = ssl.create_default_context()
    context.options |= ssl.OP_NO_RENEGOTIATION
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


class Link:
    def __init__(
        self,
        config: Config,
        outbox: Outbox,
        dialect: Dialect,
        on_incoming: Callable[[Incoming], Awaitable[None]],
        log: events.EventLog,
        *,
        url: str | None = None,
        redactor: Redactor | None = None,
        history: Callable[[], MemorySnapshot | None] | None = None,
        quiet: Callable[[], bool] | None = None,
    ) -> None:
        self._config = config
        self._url = dialect.connect_url(url or config.url)
        self._target = _Target.parse(self._url)
        self._outbox = outbox
        self._dialect = dialect
        self._phase: LinkPhase[Connection] = LinkPhase()
        """What the supervisor is doing, and the connection it has (linkstate.py)."""
        self._on_incoming = on_incoming
        self._log = log
        self._policy = RetryPolicy(config.retry)
        self._reconnect_on_clean_close = (
            dialect.reconnect_on_clean_close
            if config.reconnect_on_close == "auto"
            else config.reconnect_on_close == "always"
        )
        self._ssl = tls_context(config.ca_file) if self._target.tls else None
        self._headers = [(k.encode(), v.encode()) for k, v in config.headers]
        self._redact = redactor or Redactor.for_run(secrets(config), os.environ)
        # A request, not a phase: each phase honours it at its next decision.
        self._stopping = trio.Event()
        self._stats = LinkStatistics()
        """The connections that ended, summed; the live one adds its own
        (its `connected` stays False: statistics() reads the state)."""
        self._encode_warned = False
        self._timeouts = Timeouts(
            send=config.send_timeout,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            close=config.close_timeout,
        )
        # -- rotation (issue 19): a new session at a quiet moment before the cap
        self._history = history
        """The conversation so far, for every connection after the first."""
        self._quiet = quiet
        """Is the bot's side quiet (no agent audio playing or queued, nothing
        else a new session would cut)? The service wires it in."""
        caps = (dialect.rotate_after_s, config.max_session_s)
        self._rotate_after = min((cap for cap in caps if cap is not None), default=None)
        self._rotation: tuple[str, float] | None = None
        """Why and after how long the connection that just ended was rotated."""
        self._expires_at: float | None = None
        """The server said its session ends then (SessionExpiring)."""
        self._expiring = trio.Event()
        self._user_spoke_at = -math.inf
        self._agent_audio_at = -math.inf
        # --

    @property
    def state(self) -> LinkState:
        return self._phase.state

    @property
    def connected(self) -> bool:
        return self._phase.connected

    @property
    def _conn(self) -> Connection | None:
        """The live connection (tests reach into it); the state carries it."""
        return self._phase.conn

    def _accepting(self) -> None:
        """The outbox's limit: the live one while the link is OPEN and its
        session ready for audio (a dialect may wait for a go-ahead), else
        replay's. Called on every move into and out of OPEN and whenever the
        session's readiness changes: one rule, so the two never disagree."""
        conn = self._phase.conn
        self._outbox.accepting = (
            self._phase.state is LinkState.OPEN and conn is not None and conn.session.audio_ready
        )

    @property
    def accepting_audio(self) -> bool:
        """Up, and the session is ready for audio (a dialect may wait for a
        go-ahead): the outbox's state, which only the link sets (_accepting)."""
        return self._outbox.accepting

    def statistics(self) -> LinkStatistics:
        stats = dataclasses.replace(self._stats, connected=self._phase.connected)
        conn = self._phase.conn
        if conn is not None:
            _add(stats, conn.statistics())
        return stats

    def notify(self) -> None:
        """Something was put in the outbox: on its way now, if the connection
        can take it (Connection.notify); else it waits there for the next one."""
        conn = self._phase.conn
        if conn is not None:
            conn.notify()

    def _encode_failed(self, item: Outgoing, exc: Exception) -> None:
        if self._encode_warned:
            return
        self._encode_warned = True
        what = type(item).__name__
        self._log.emit(
            events.WarningEvent(
                message=f"--protocol {self._dialect.name} cannot encode a {what} "
                f"({describe(exc)}): dropped, and counted in stats.encode_failures",
                code="encode_failed",
            )
        )

    def stop(self) -> None:
        """Send what is queued, close the connection with 1000 and stop retrying."""
        self._stopping.set()
        conn = self._phase.conn
        if conn is not None:
            conn.wake()

    def _check_request(self) -> None:
        """Our upgrade request, as the HTTP library will judge it when
        trio-websocket's reader sends it: refused (a header value with a
        control character, a target with a space), every connection would
        fail the same way, so none is tried."""
        target = self._target
        try:
            h11.Request(
                method="GET",
                target=target.resource,
                # h11 spells str as ASCII, as it does what trio-websocket gives it.
                headers=[(b"Host", target.host_header.encode("ascii")), *self._headers],
            )
        except (h11.LocalProtocolError, UnicodeError) as exc:
            raise self._unusable(f"the upgrade request cannot be sent: {describe(exc)}") from None

    async def serve(self) -> None:
        """Run until stopped or cancelled; raise LinkGaveUp, LinkRejected,
        LinkUnusable or LinkEnded. Once: the state ends STOPPED. Cancelled,
        the state stays where it was (the last statistics say what the link
        was doing when the service cut it short)."""
        try:
            await self._supervise()
        except LinkUnusable as exc:
            self._log.emit(events.GaveUp(reason=str(exc), attempts=0))
            self._stopped()
            raise
        except (LinkEnded, LinkGaveUp, LinkRejected):
            self._stopped()
            raise
        self._stopped()

    def _stopped(self) -> None:
        self._phase.to(LinkState.STOPPED)

    async def _supervise(self) -> None:
        self._check_request()
        redacted = redact_url(self._url)
        while not self._stopping.is_set():
            self._phase.to(LinkState.CONNECTING)
            unusable: LinkUnusable | None = None
            try:
                end = await self._attempt(redacted)
            except LinkUnusable as exc:
                # An opening the dialect cannot encode is found on an open
                # connection: it is counted down like any other end first, so
                # every `connected` has its `disconnected` before the process stops.
                unusable, end = exc, End(str(exc))
            was_up = self._phase.connected
            if was_up:
                self._phase.to(LinkState.DOWN)
            self._session_gone(self._outbox.disconnected())
            if was_up:
                self._log.emit(events.Disconnected(reason=end.reason, code=end.code, url=redacted))
            if unusable is not None:
                raise unusable
            if self._stopping.is_set():
                return
            if end.rotated and self._rotation is not None:
                reason, after_s = self._rotation
                self._log.emit(events.SessionRotated(reason=reason, after_s=round(after_s, 3)))
                continue  # at once: no retry delay, no failure counted
            if end.call_ended:
                raise LinkEnded(f"the server ended the call: {end.reason}")
            reason = end.reason
            if end.renew:
                min_age = self._dialect.renew_after_s
                if min_age is not None and self._policy.renewed(trio.current_time(), min_age):
                    self._log.emit(
                        events.Retrying(
                            attempt=0,
                            of=self._policy.max_retries,
                            delay=0.0,
                            reason=f"{reason} (the server's routine end of a session: "
                            "reconnecting at once)",
                        )
                    )
                    continue
                # A session's end, claimed by one that did not live a session:
                # a failure like any other, or it would be an endless loop.
                reason += " (a session's routine end, too soon to be one: retried as a failure)"
            delay = self._policy.failed(trio.current_time())
            if delay is None:
                attempts = self._policy.attempt
                self._log.emit(events.GaveUp(reason=reason, attempts=attempts))
                raise LinkGaveUp(f"gave up after {attempts} retries: {reason}")
            self._log.emit(
                events.Retrying(
                    attempt=self._policy.attempt,
                    of=self._policy.max_retries,
                    delay=round(delay, 3),
                    reason=reason,
                )
            )
            self._phase.to(LinkState.RETRY_WAIT)
            with trio.move_on_after(delay):
                await self._stopping.wait()

    def _session_gone(self, unsent_results: tuple[str, ...]) -> None:
        for call_id in unsent_results:
            self._log.emit(
                events.WarningEvent(
                    code="tool_result_unsent",
                    message=f"the result for tool call {call_id!r} was accepted but its "
                    "session ended before it was sent; no later session knows the call "
                    "(with --memory on, the conversation record keeps the result)",
                )
            )

    async def _attempt(self, redacted: str) -> End:
        """One connection, from connect to close; raises only LinkRejected."""
        try:
            return await self._connection(redacted)
        except BaseExceptionGroup as group:
            # The handshake's outcome (a rejection, say) surfaces in
            # trio-websocket's reader task, so it reaches us inside a group.
            error = _sole_error(group)
            if error is None:
                raise
            return self._failure(error)
        except Exception as exc:
            return self._failure(exc)

    def _failure(self, exc: BaseException, ws: tw.WebSocketConnection | None = None) -> End:
        """Why a connection (`ws`), or an attempt at one (no `ws`), ended.

        The one place that reads the errors of trio-websocket, wsproto and h11
        (h11's about the server's answer, and every bad handshake answer,
        arrive as HandshakeFailed), and decides: retry, or raise LinkRejected
        when retrying cannot help. A 4xx is the server's considered answer to
        our request (a token, a path), so it is fatal; a malformed answer, like
        a 5xx, is a fault of the server or of something in between, which may
        be one bad instance or a deploy in progress: retried, and bounded by
        --max-retries like any other. What we cannot send at all (h11 refusing
        our own request, an opening the dialect cannot encode) raises
        LinkUnusable. Nothing else is raised: an error no branch knows is a
        failure, retried, so nothing from a connection ends the process.
        """
        if isinstance(exc, Ended):
            return exc.end
        if isinstance(exc, LinkRejected | LinkUnusable):
            raise exc
        if isinstance(exc, OpeningUnencodable):
            raise self._unusable(
                f"--protocol {self._dialect.name}: the session's opening message "
                f"cannot be encoded ({exc})"
            ) from None
        if isinstance(exc, HandshakeFailed):
            reason = self._redact(exc.reason)
            if exc.status is not None and 400 <= exc.status < 500:
                self._log.emit(events.GaveUp(reason=reason, attempts=0, status=exc.status))
                raise LinkRejected(reason) from None
            return End(reason)
        if (
            ws is None
            and isinstance(exc, trio.BrokenResourceError)
            and isinstance(exc.__cause__, ssl.SSLError)
        ):
            cause = exc.__cause__
            if isinstance(cause, ssl.SSLCertVerificationError):
                reason = f"TLS certificate rejected: {cause.verify_message}"
                self._log.emit(events.GaveUp(reason=reason, attempts=0))
                raise LinkRejected(reason + " (use --ca-file for a private CA)") from None
            return End(f"TLS handshake failed: {cause.reason or cause}")
        if isinstance(exc, tw.ConnectionClosed):
            end = closed(exc.reason, ws)
            return dataclasses.replace(end, reason=self._redact(end.reason))
        if isinstance(exc, NETWORK_ERRORS):
            what = "cannot connect" if ws is None else "connection lost"
            return End(f"{what}: {describe(exc)}")
        if isinstance(exc, h11.ProtocolError | ProtocolError):
            return End(self._redact(f"HTTP/websocket protocol error: {describe(exc)}"))
        # Nothing from a connection ends the process: what no branch above
        # knows is a failure like any other, retried and bounded by
        # --max-retries. The traceback is for --log-level debug.
        log.debug("unexpected error on the connection", exc_info=exc)
        return End(self._redact(f"unexpected {type(exc).__name__}: {describe(exc)}"))

    def _unusable(self, reason: str) -> LinkUnusable:
        # serve() emits its gave_up, after the disconnected of a connection
        # that was up when it was found.
        return LinkUnusable(self._redact(reason))

    async def _connection(self, redacted: str) -> End:
        config = self._config
        conn: Connection | None = None
        async with trio.open_nursery() as nursery:
            try:
                try:
                    target = await self._connection_target()
                    with trio.fail_after(config.connect_timeout):
                        stream = await self._open_stream(target)
                        history = None
                        if self._history is not None and self._stats.connects:
                            history = self._history()
                        self._new_session()
                        conn = Connection(
                            self._dialect.session(history),
                            stream,
                            self._outbox,
                            self._incoming,
                            self._encode_failed,
                            self._accepting,
                        )
                        self._phase.to(LinkState.HANDSHAKE, conn)
                        await conn.handshake(
                            nursery,
                            target.host_header,
                            target.resource,
                            self._headers,
                            # Our own limit (config.max_message_bytes) answers with an
                            # error reply; this hard cap only stops a hostile server's
                            # memory attack.
                            4 * config.max_message_bytes,
                            self._redact,
                        )
                except trio.TooSlowError:
                    raise Ended(f"no handshake within {config.connect_timeout:g} s") from None
                self._connected(redacted)
                nursery.start_soon(self._rotate_when_due, conn)
                # Open for audio now, or when the session's go-ahead arrives
                # (Connection._deliver calls it again).
                self._accepting()
                end = await conn.run(self._timeouts, self._stopping, self._failure)
                return self._judge(conn, end)
            finally:
                up = self._phase.state is LinkState.OPEN
                self._phase.to(LinkState.CLOSING if up else LinkState.DOWN)
                self._accepting()
                # Whatever ended the connection, its socket goes now: a dead
                # peer gets no close handshake to wait for.
                if conn is not None:
                    conn.state = ConnState.CLOSED
                    _add(self._stats, conn.statistics())
                    if up:
                        # Before any await: from now on a tool_result for this
                        # session's calls is answered stale, not queued for a
                        # session that never made them.
                        await self._on_incoming(SessionEnded())
                    await trio.aclose_forcefully(conn.stream)
                nursery.cancel_scope.cancel()

    async def _connection_target(self) -> _Target:
        """Where this connection goes: the run's URL, or the one the dialect
        reads from its per-connection request's answer (a signed URL that
        expires: fetched anew for every connection). Judged as a handshake
        is: a 4xx answer is a rejection (exit 4), anything else a failure,
        retried; bounded by --connect-timeout and in bytes (urlfetch)."""
        request = self._dialect.url_request(self._url, os.environ)
        if request is None:
            return self._target
        what = f"the URL request to {redact_url(request.url)}"
        # Its own secrets (its key header, its query) are hidden from here on.
        self._redact.connection_secrets(request_secrets(request.headers, (request.url,)))
        try:
            with trio.fail_after(self._config.connect_timeout):
                status, body = await urlfetch.fetch(request, tls_context(self._config.ca_file))
            url = self._dialect.url_from_answer(self._url, status, body)
            check_url(url, "the URL from the answer")
            target = _Target.parse(url)
        except trio.TooSlowError:
            raise HandshakeFailed(
                f"{what}: no answer within {self._config.connect_timeout:g} s"
            ) from None
        except urlfetch.UrlFetchFailed as exc:
            raise HandshakeFailed(f"{what}: {exc.reason}", exc.status) from None
        except (UrlAnswerError, ConfigError, ValueError) as exc:
            raise HandshakeFailed(f"{what}: {exc}") from None
        self._redact.connection_secrets(request_secrets(request.headers, (request.url, url)))
        return target

    def _judge(self, conn: Connection, end: End) -> End:
        """The supervisor's reading of a close: the end of the call, or a
        session's routine end to renew at once, or a drop."""
        if self._stopping.is_set():
            return end
        if end.code == NORMAL_CLOSURE and end.by_server and not self._reconnect_on_clean_close:
            return dataclasses.replace(end, call_ended=True)
        if end.code is not None and conn.session.reconnect_at_once(end.code, end.detail):
            return dataclasses.replace(end, renew=True)
        return end

    # -- rotation (issue 19) ------------------------------------------------------------

    async def _incoming(self, item: Incoming) -> None:
        """What the connection delivers: noted for the rotation, then passed on."""
        match item:
            case PlayAudio():
                self._agent_audio_at = trio.current_time()
            case UserSpeaking():
                self._user_spoke_at = trio.current_time()
            case SessionExpiring(within_s=within_s):
                expires_at = trio.current_time() + max(within_s, 0.0)
                if self._expires_at is None or expires_at < self._expires_at:
                    self._expires_at = expires_at
                self._expiring.set()
        await self._on_incoming(item)

    def _new_session(self) -> None:
        self._rotation, self._expires_at = None, None
        self._expiring = trio.Event()

    def _quiet_now(self, now: float) -> bool:
        return (
            now - self._user_spoke_at >= QUIET_S
            and now - self._agent_audio_at >= QUIET_S
            and (self._quiet is None or self._quiet())
        )

    async def _rotate_when_due(self, conn: Connection) -> None:
        """Move to a new session at the first quiet moment once this one is due
        (the dialect's cap less its margin, or --max-session-s), or before the
        time the server said it expires (at that time whether quiet or not)."""
        started = trio.current_time()
        due = math.inf if self._rotate_after is None else started + self._rotate_after
        while True:
            now = trio.current_time()
            expires_at = self._expires_at
            expiring = expires_at is not None
            if now < due and not expiring:
                with trio.move_on_at(due):
                    await self._expiring.wait()
                continue
            late = expires_at is not None and now >= expires_at
            if late or (self._quiet_now(now) and not conn.session.replying):
                self._rotation = ("expiring" if expiring else "cap", now - started)
                conn.rotate()
                return
            await trio.sleep(QUIET_POLL_S)

    async def _open_stream(self, target: _Target) -> DirectStream:
        tcp = await trio.open_tcp_stream(target.host, target.port)
        context = (self._ssl or tls_context(self._config.ca_file)) if target.tls else None
        try:
            return await DirectStream.open(tcp, context, target.host)
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise

    def _connected(self, redacted: str) -> None:
        self._policy.connected(trio.current_time())
        self._phase.to(LinkState.OPEN)
        self._stats.connects += 1
        self._log.emit(events.Connected(url=redacted, attempt=self._stats.connects))


def _add(total: LinkStatistics, conn: ConnectionStatistics) -> None:
    for name in (
        "messages_out",
        "bytes_out",
        "samples_out",
        "messages_in",
        "bytes_in",
        "encode_failures",
        "unconfirmed_samples",
        "commands_dropped",
    ):
        setattr(total, name, getattr(total, name) + getattr(conn, name))


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def _sole_error(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    """The one real error in a group (cancellations aside), if there is exactly one."""
    _, rest = group.split(trio.Cancelled)
    if rest is None:
        return None
    leaves = list(_leaves(rest))
    if len(leaves) == 1 and isinstance(leaves[0], Exception):
        return leaves[0]
    return None


__all__ = [
    "Link",
    "LinkEnded",
    "LinkGaveUp",
    "LinkRejected",
    "LinkStatistics",
    "LinkUnusable",
    "tls_context",
]
