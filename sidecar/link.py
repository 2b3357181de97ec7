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
three tasks run inside a connection: a sender that takes over whatever could
not be written at once (a backlog, a slow server) with a bounded send, a
pinger whose pong wait is bounded, and, where the dialect has one, a
keepalive. The first of them to finish ends the connection; the retry policy
decides what happens next.

The link never knows which dialect is speaking: each connection gets a fresh
`Session` from the dialect, which says what to send on opening and closing,
turns each outbox item into wire messages when it is sent, and each server
message into neutral events for the downlink.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import ssl
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import h11
import trio
import trio_websocket as tw
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, TextMessage
from wsproto.utilities import LocalProtocolError, ProtocolError

from sidecar import events
from sidecar.config import Config, redact_url, request_target, secrets
from sidecar.dialects.base import (
    AudioOut,
    Dialect,
    Incoming,
    Outgoing,
    Session,
    SessionEnded,
    SessionReply,
    Wire,
)
from sidecar.fastpath import RECEIVE_BYTES, Delivery, DirectStream
from sidecar.handshake import HandshakeFailed, HandshakeStream
from sidecar.outbox import Outbox
from sidecar.redact import Redactor
from sidecar.retry import RetryPolicy

# trio-websocket's own queue for messages; Delivery replaces its send side, so
# nothing waits in it.
MESSAGE_QUEUE = 1

log = logging.getLogger("sidecar.link")

# What a connection that breaks under our feet raises (besides ConnectionClosed).
# LocalProtocolError: trio-websocket can let a send reach a connection its reader
# already gave up on after a protocol error from the server.
_NETWORK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError, LocalProtocolError)
_ABNORMAL_CLOSURE = 1006
_NORMAL_CLOSURE = 1000

# What we rely on in trio-websocket beyond its documented API, checked against
# this version (tests/test_handshake.py fails on any other: re-check each point
# below in its _impl.py, then update the version):
#
# 1. wrap_client_stream() starts one task, the connection's reader, with
#    nursery.start_soon(), and that reader is the only one to see the
#    handshake's outcome: _ReaderNursery watches it end.
# 2. The reader lets an exception from stream.receive_some() other than
#    trio.BrokenResourceError/ClosedResourceError propagate out of the task
#    unchanged: that is how HandshakeStream's HandshakeFailed reaches us.
# 3. ConnectionClosed carries the same CloseReason whoever closed, so who did
#    is read from the private WebSocketConnection._wsproto: after a close frame
#    from the server, trio-websocket answers it and wsproto's state is CLOSED;
#    when wsproto cannot parse what the server sent (invalid UTF-8: 1007,
#    protocol errors: 1002) it reports a CloseConnection the server never sent
#    and stays OPEN; when trio-websocket closes on a message over
#    max_message_size (1009) it is LOCAL_CLOSING. See _closed_by_us().
# 4. The one task started (point 1) is the bound method _reader_task of the
#    WebSocketConnection, which puts each complete message with
#    `await self._send_channel.send(message)`, looking the attribute up each
#    time, and ends it with `await self._send_channel.aclose()` when the
#    connection closes: Delivery takes the channel's place before the reader
#    first runs (fastpath.py). A close for a message over max_message_size
#    closes the receive end instead (`_recv_channel`, which get_message()
#    reads): _until_closed() watches both.
# 5. Every byte trio-websocket writes goes through the stream's send_all, and
#    it makes each frame with self._wsproto.send(event), which needs no lock:
#    so the link frames messages with the same wsproto object and writes them
#    through DirectStream, which orders its own writes with trio-websocket's.
#    While the reader answers a server's close, _close_reason is still unset but
#    wsproto is no longer OPEN and would refuse a frame: _sendable() asks it.
CHECKED_TRIO_WEBSOCKET = "0.12.2"
# Why our side closes with each code it uses (anything else: the code's name).
_LOCAL_CLOSES = {
    1002: "protocol error from the server",
    1007: "invalid UTF-8 from the server",
    1009: "a message over 4 x --max-message-bytes",
}


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


@dataclass(frozen=True, slots=True)
class _End:
    reason: str
    code: int | None = None
    detail: str = ""
    """The close frame's own reason text, for the dialect to judge."""
    renew: bool = False
    """The server's routine end of a session: reconnect without the retry delay."""
    by_server: bool = False
    """A close frame the server sent (not one our side made for it)."""
    call_ended: bool = False
    """A clean close from the server that ends the call (--reconnect-on-close)."""


class _Ended(Exception):
    """Internal: a connection task ended the connection, with a reason."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.end = _End(reason, code)


@dataclass(slots=True)
class _Conn:
    """One connection's moving parts."""

    session: Session
    stream: DirectStream
    delivery: Delivery
    ws: tw.WebSocketConnection | None = None
    open: bool = False
    """The opening messages are out: audio may follow, from any task."""
    broken: BaseException | None = None
    """A synchronous write failed; the sender raises it in its own task."""


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
    ) -> None:
        self._config = config
        self._url = url or config.url
        self._target = _Target.parse(self._url)
        self._outbox = outbox
        self._dialect = dialect
        self._conn: _Conn | None = None
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
        self._wake = trio.Event()
        self._stopping = trio.Event()
        self._stats = LinkStatistics()
        # Samples sent on the current connection, and how many of them a pong confirmed.
        self._sent = 0
        self._confirmed = 0
        self._audio_sent_at = 0.0

    @property
    def connected(self) -> bool:
        return self._stats.connected

    @property
    def accepting_audio(self) -> bool:
        """Up, and the session is ready for audio (a dialect may wait for a go-ahead)."""
        conn = self._conn
        return self._stats.connected and conn is not None and conn.session.audio_ready

    def statistics(self) -> LinkStatistics:
        return LinkStatistics(**{f: getattr(self._stats, f) for f in LinkStatistics.__slots__})

    def notify(self) -> None:
        """Something was put in the outbox: on its way now, if the socket takes it.

        Runs in the caller's task and never waits: what cannot be written at
        once stays in the outbox (or, a message's tail, in the stream) for the
        sender task, which this then wakes.
        """
        conn = self._conn
        if conn is not None and conn.open and conn.ws is not None:
            self._write_now(conn, conn.ws)
            if not self._outbox and not conn.stream.pending:
                return
        self._wake.set()

    def _write_now(self, conn: _Conn, ws: tw.WebSocketConnection) -> None:
        outbox, session, stream = self._outbox, conn.session, conn.stream
        while stream.writable_now and conn.broken is None and _sendable(ws):
            item = outbox.get(audio=session.audio_ready)
            if item is None:
                return
            try:
                encoded = self._encode(session, ws, item)
                if encoded is None:
                    continue
                wires, data = encoded
                stream.try_send(data)
            except (OSError, trio.BrokenResourceError, LocalProtocolError) as exc:
                # Raised in the caller's task (the uplink's, the clock's): the
                # sender raises it in the link's own, where it ends the connection.
                if isinstance(item, AudioOut):
                    outbox.count_lost(item, "in_flight")
                conn.broken = exc
                return
            self._account(item, wires)

    def _encode(
        self, session: Session, ws: tw.WebSocketConnection, item: Outgoing
    ) -> tuple[Sequence[Wire], bytes] | None:
        """`item`'s messages and their frames; None, counted, where the dialect
        cannot encode it. Whatever the dialect raises is contained here: this
        runs in whichever task called notify() (the uplink's, the clock's)."""
        try:
            wires = session.wire(item)
            return wires, b"".join(_frame(ws, wire) for wire in wires)
        except LocalProtocolError:
            # Not the item: wsproto's connection closed under us (a drop).
            raise
        except Exception as exc:
            self._stats.encode_failures += 1
            if isinstance(item, AudioOut):
                self._outbox.count_lost(item, "unencodable")
            if self._stats.encode_failures == 1:
                what = type(item).__name__
                self._log.emit(
                    events.WarningEvent(
                        message=f"--protocol {self._dialect.name} cannot encode a {what} "
                        f"({_describe(exc)}): dropped, and counted in stats.encode_failures",
                        code="encode_failed",
                    )
                )
            return None

    def _account(self, item: Outgoing, wires: Sequence[Wire]) -> None:
        self._stats.messages_out += len(wires)
        self._stats.bytes_out += sum(len(wire) for wire in wires)
        if isinstance(item, AudioOut):
            self._sent += item.samples
            self._stats.samples_out += item.samples
            self._audio_sent_at = trio.current_time()

    def stop(self) -> None:
        """Send what is queued, close the connection with 1000 and stop retrying."""
        self._stopping.set()
        self._wake.set()

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
            raise self._unusable(f"the upgrade request cannot be sent: {_describe(exc)}") from None

    async def serve(self) -> None:
        """Run until stopped or cancelled; raise LinkGaveUp, LinkRejected,
        LinkUnusable or LinkEnded."""
        self._check_request()
        redacted = redact_url(self._url)
        while not self._stopping.is_set():
            end = await self._attempt(redacted)
            was_up, self._stats.connected = self._stats.connected, False
            self._outbox.disconnected()
            if was_up:
                self._log.emit(events.Disconnected(reason=end.reason, code=end.code, url=redacted))
                await self._on_incoming(SessionEnded())
            if self._stopping.is_set():
                return
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
            with trio.move_on_after(delay):
                await self._stopping.wait()

    async def _attempt(self, redacted: str) -> _End:
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

    def _failure(self, exc: BaseException, ws: tw.WebSocketConnection | None = None) -> _End:
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
        if isinstance(exc, _Ended):
            return exc.end
        if isinstance(exc, LinkRejected | LinkUnusable):
            raise exc
        if isinstance(exc, HandshakeFailed):
            reason = self._redact(exc.reason)
            if exc.status is not None and 400 <= exc.status < 500:
                self._log.emit(events.GaveUp(reason=reason, attempts=0, status=exc.status))
                raise LinkRejected(reason) from None
            return _End(reason)
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
            return _End(f"TLS handshake failed: {cause.reason or cause}")
        if isinstance(exc, tw.ConnectionClosed):
            end = _closed(exc.reason, ws)
            return dataclasses.replace(end, reason=self._redact(end.reason))
        if isinstance(exc, _NETWORK_ERRORS):
            what = "cannot connect" if ws is None else "connection lost"
            return _End(f"{what}: {_describe(exc)}")
        if isinstance(exc, h11.ProtocolError | ProtocolError):
            return _End(self._redact(f"HTTP/websocket protocol error: {_describe(exc)}"))
        # Nothing from a connection ends the process: what no branch above
        # knows is a failure like any other, retried and bounded by
        # --max-retries. The traceback is for --log-level debug.
        log.debug("unexpected error on the connection", exc_info=exc)
        return _End(self._redact(f"unexpected {type(exc).__name__}: {_describe(exc)}"))

    def _unusable(self, reason: str) -> LinkUnusable:
        reason = self._redact(reason)
        self._log.emit(events.GaveUp(reason=reason, attempts=0))
        return LinkUnusable(reason)

    async def _connection(self, redacted: str) -> _End:
        config = self._config
        conn: _Conn | None = None
        async with trio.open_nursery() as nursery:
            try:
                try:
                    with trio.fail_after(config.connect_timeout):
                        stream = await self._open_stream()
                        conn = self._conn = _Conn(
                            self._dialect.session(), stream, Delivery(self._deliver)
                        )
                        conn.ws = await self._handshake(nursery, conn)
                except trio.TooSlowError:
                    raise _Ended(f"no handshake within {config.connect_timeout:g} s") from None
                self._connected(redacted)
                return await self._run(conn, conn.ws)
            finally:
                self._conn = None
                # Whatever ended the connection, its socket goes now: a dead
                # peer gets no close handshake to wait for.
                if conn is not None:
                    await trio.aclose_forcefully(conn.stream)
                nursery.cancel_scope.cancel()

    async def _handshake(self, nursery: trio.Nursery, conn: _Conn) -> tw.WebSocketConnection:
        """The websocket upgrade; fails as soon as the server hangs up or refuses."""
        reader = _ReaderNursery(nursery, conn.delivery)
        opened: list[tw.WebSocketConnection] = []

        async def upgrade() -> None:
            opened.append(
                await tw.wrap_client_stream(
                    # trio-websocket only calls start_soon() on it.
                    cast(trio.Nursery, reader),
                    # Annotated narrower than its documented "arbitrary stream":
                    # only the trio.abc.Stream methods are called on it.
                    cast(trio.SocketStream, HandshakeStream(conn.stream, redact=self._redact)),
                    self._target.host_header,
                    self._target.resource,
                    extra_headers=self._headers,
                    message_queue_size=MESSAGE_QUEUE,
                    # Our own limit (config.max_message_bytes) answers with an
                    # error reply; this hard cap only stops a hostile server's
                    # memory attack.
                    max_message_size=4 * self._config.max_message_bytes,
                    receive_buffer_size=RECEIVE_BYTES,
                )
            )
            race.cancel_scope.cancel()

        async def hang_up() -> None:
            await reader.done.wait()
            ws = reader.connection
            if ws is None or not ws.handshake_headers:
                race.cancel_scope.cancel()
            # Otherwise the upgrade completed and the reader ended right after
            # it (the server's first message closed the connection): upgrade()
            # returns, and the close is the connection's first event.

        async with trio.open_nursery() as race:
            race.start_soon(upgrade)
            race.start_soon(hang_up)
        if opened:
            return opened[0]
        if reader.failed is not None:
            raise reader.failed
        # The reader ends without an error when the connection breaks under it.
        raise _Ended("the server closed the connection during the handshake")

    async def _open_stream(self) -> DirectStream:
        target = self._target
        tcp = await trio.open_tcp_stream(target.host, target.port)
        try:
            return await DirectStream.open(tcp, self._ssl, target.host)
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise

    def _connected(self, redacted: str) -> None:
        self._sent = self._confirmed = 0
        self._policy.connected(trio.current_time())
        self._stats.connected = True
        self._stats.connects += 1
        self._log.emit(events.Connected(url=redacted, attempt=self._stats.connects))

    async def _run(self, conn: _Conn, ws: tw.WebSocketConnection) -> _End:
        ended: list[_End] = []

        async def guard(fn: Callable[[_Conn, tw.WebSocketConnection], Awaitable[None]]) -> None:
            try:
                await fn(conn, ws)
            except Exception as exc:
                ended.append(self._failure(exc, ws))
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guard, self._until_closed)
            nursery.start_soon(guard, self._send)
            nursery.start_soon(guard, self._ping)
            if conn.session.keepalive_s is not None:
                nursery.start_soon(guard, self._keepalive)
        conn.open = False
        end = ended[0] if ended else _End("connection ended")
        if self._stopping.is_set():
            with trio.move_on_after(self._config.close_timeout) as scope:
                await self._write(conn, ws, self._closing(conn.session))
                await ws.aclose(code=1000, reason="sidecar stopping")
            if not scope.cancelled_caught:
                # The server answered our close: it has read everything before it.
                self._confirmed = self._sent
            end = _End("sidecar stopping", 1000)
        elif end.code == _NORMAL_CLOSURE and end.by_server and not self._reconnect_on_clean_close:
            end = dataclasses.replace(end, call_ended=True)
        elif end.code is not None and conn.session.reconnect_at_once(end.code, end.detail):
            end = dataclasses.replace(end, renew=True)
        self._stats.unconfirmed_samples += self._sent - self._confirmed
        return end

    async def _deliver(self, message: str | bytes) -> None:
        """Each server message, in trio-websocket's reader task (Delivery)."""
        conn = self._conn
        if conn is None:
            return
        self._stats.messages_in += 1
        self._stats.bytes_in += len(message)
        session = conn.session
        ready = session.audio_ready
        for incoming in session.receive(message):
            await self._on_incoming(incoming)
        replies = session.replies()
        if replies:
            # Behind what waits already, in the one ordered writer.
            self._outbox.put_control(SessionReply(session, tuple(replies)))
            self.notify()
        if session.audio_ready and not ready:
            self.notify()  # the server's go-ahead: queued audio may go now

    async def _until_closed(self, conn: _Conn, ws: tw.WebSocketConnection) -> None:
        """Return... never: raise ConnectionClosed once trio-websocket closes.

        It closes either end of its message channel depending on who closed
        (point 4 above): Delivery stands for the send end, and the receive
        end, which nothing is ever put in any more, raises once closed.
        """
        async with trio.open_nursery() as either:

            async def receive_end() -> None:
                with contextlib.suppress(tw.ConnectionClosed):
                    await ws.get_message()
                either.cancel_scope.cancel()

            either.start_soon(receive_end)
            await conn.delivery.closed.wait()
            either.cancel_scope.cancel()
        raise tw.ConnectionClosed(ws.closed)

    def _closing(self, session: Session) -> Sequence[Wire]:
        try:
            return session.closing()
        except Exception as exc:
            # The close itself still goes out: the server learns we stopped.
            self._stats.encode_failures += 1
            log.warning("the closing message cannot be encoded: %s", _describe(exc))
            return ()

    async def _write(self, conn: _Conn, ws: tw.WebSocketConnection, wires: Sequence[Wire]) -> None:
        """The awaited write, behind whatever waits in the stream already."""
        if wires:
            await conn.stream.send_all(b"".join(_frame(ws, wire) for wire in wires))

    async def _send(self, conn: _Conn, ws: tw.WebSocketConnection) -> None:
        outbox, session, stream = self._outbox, conn.session, conn.stream
        timeout = self._config.send_timeout
        item: Outgoing | None = None
        # One scope for the whole loop, its deadline moved per write: a new
        # fail_after for each would be measurable scheduling overhead.
        with trio.CancelScope() as bound:
            bound.deadline = trio.current_time() + timeout
            try:
                opening = session.opening()
                data = b"".join(_frame(ws, wire) for wire in opening)
            except LocalProtocolError:
                raise  # the server closed first: a drop like any other
            except Exception as exc:
                # The session cannot even start: no connection ever will.
                raise self._unusable(
                    f"--protocol {self._dialect.name}: the session's opening message "
                    f"cannot be encoded ({_describe(exc)})"
                ) from None
            if data:
                await stream.send_all(data)
            self._stats.messages_out += len(opening)
            self._stats.bytes_out += sum(len(wire) for wire in opening)
            bound.deadline = math.inf
            conn.open = True
            while True:
                if conn.broken is not None:
                    raise conn.broken
                if not _sendable(ws):
                    # The server's close is being answered: the reader ends the
                    # connection with its code (a session-length close must be
                    # told from a drop). Nothing is taken from the outbox first.
                    await conn.delivery.closed.wait()
                    raise tw.ConnectionClosed(ws.closed)
                if stream.pending:
                    item = None
                    bound.deadline = trio.current_time() + timeout
                    await stream.flush()
                    bound.deadline = math.inf
                    continue
                item = outbox.get(audio=session.audio_ready)
                if item is None:
                    if self._stopping.is_set():
                        raise _Ended("sidecar stopping", 1000)
                    await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                samples = item.samples if isinstance(item, AudioOut) else 0
                try:
                    encoded = self._encode(session, ws, item)
                except LocalProtocolError:
                    if isinstance(item, AudioOut):
                        outbox.count_lost(item, "in_flight")
                    raise
                if encoded is None:
                    continue
                wires, data = encoded
                bound.deadline = trio.current_time() + timeout
                try:
                    await stream.send_all(data)
                except (tw.ConnectionClosed, *_NETWORK_ERRORS):
                    if isinstance(item, AudioOut):
                        outbox.count_lost(item, "in_flight")
                    raise
                except trio.Cancelled:
                    if trio.current_time() < bound.deadline:
                        # The connection ended under a send (the reader or the
                        # pinger noticed first): whether the server got it,
                        # nobody knows.
                        self._stats.unconfirmed_samples += samples
                    raise
                bound.deadline = math.inf
                self._account(item, wires)
        # Only the send deadline ends the loop without an exception.
        if isinstance(item, AudioOut):
            outbox.count_lost(item, "in_flight")
        raise _Ended(f"server did not accept a message within {timeout:g} s")

    async def _ping(self, conn: _Conn, ws: tw.WebSocketConnection) -> None:
        interval, timeout = self._config.ping_interval, self._config.ping_timeout
        while True:
            await trio.sleep(interval)
            sent = self._sent
            try:
                # The send is bounded too: a peer that stopped reading fills our
                # socket buffer before it misses a pong.
                with trio.fail_after(timeout):
                    await ws.ping()
            except trio.TooSlowError:
                raise _Ended(f"no pong within {timeout:g} s: peer is dead") from None
            # The server read the ping, so it read every message sent before it.
            self._confirmed = sent

    async def _keepalive(self, conn: _Conn, ws: tw.WebSocketConnection) -> None:
        """The dialect's keepalive, only while no audio flows (a silent bot)."""
        session = conn.session
        assert session.keepalive_s is not None
        period, timeout = session.keepalive_s, self._config.send_timeout
        self._audio_sent_at = trio.current_time()
        while True:
            due = self._audio_sent_at + period
            if trio.current_time() < due:
                await trio.sleep_until(due)
                continue
            try:
                wires = session.keepalive()
            except Exception as exc:
                self._stats.encode_failures += 1
                log.warning("the keepalive cannot be encoded: %s", _describe(exc))
                wires = ()
            try:
                with trio.fail_after(timeout):
                    await self._write(conn, ws, wires)
            except trio.TooSlowError:
                raise _Ended(f"server did not accept a keepalive within {timeout:g} s") from None
            self._stats.messages_out += len(wires)
            self._stats.bytes_out += sum(len(wire) for wire in wires)
            self._audio_sent_at = trio.current_time()


class _ReaderNursery:
    """Where trio-websocket starts its reader task, so we see it end.

    During the handshake the reader is the only one who learns that the server
    answered with anything but a valid upgrade, or hung up (point 1 of the
    block above); trio-websocket itself would wait out the whole connect
    timeout for an upgrade that will never come. Before the reader first
    runs, its message channel makes way for the link's Delivery (point 4).
    """

    def __init__(self, nursery: trio.Nursery, delivery: Delivery) -> None:
        self._nursery = nursery
        self._delivery = delivery
        self.done = trio.Event()
        self.failed: HandshakeFailed | None = None
        self.connection: tw.WebSocketConnection | None = None

    def start_soon(self, fn: Callable[[], Awaitable[None]]) -> None:
        connection = getattr(fn, "__self__", None)
        if not isinstance(connection, tw.WebSocketConnection):
            raise RuntimeError(
                f"trio-websocket {tw.__version__} starts something other than its "
                f"reader task; link.py was checked against {CHECKED_TRIO_WEBSOCKET}"
            )
        connection._send_channel = self._delivery  # type: ignore[assignment]
        self.connection = connection

        async def run() -> None:
            try:
                await fn()
            except HandshakeFailed as exc:
                self.failed = exc
            finally:
                self.done.set()
                # Some closes (a message over max_message_size) end the reader
                # without closing the channel: either way, no more messages.
                await self._delivery.aclose()

        self._nursery.start_soon(run)


def _closed(reason: tw.CloseReason | None, ws: tw.WebSocketConnection | None) -> _End:
    if reason is None or reason.code == _ABNORMAL_CLOSURE:
        return _End("connection lost without a close frame", _ABNORMAL_CLOSURE)
    by_server = ws is None or not _closed_by_us(ws)
    if not by_server:
        why = _LOCAL_CLOSES.get(reason.code, reason.name)
        text = f"the sidecar closed the connection with code {reason.code} ({why})"
    else:
        text = f"closed by server with code {reason.code} ({reason.name})"
    detail = reason.reason or ""
    return _End(f"{text}: {detail}" if detail else text, reason.code, detail, by_server=by_server)


def _closed_by_us(ws: tw.WebSocketConnection) -> bool:
    """Whether our websocket library, not the server, ended the connection
    (point 3 of the block above); unknown internals count as the server."""
    state = getattr(getattr(ws, "_wsproto", None), "state", None)
    return state is ConnectionState.OPEN or state is ConnectionState.LOCAL_CLOSING


def _sendable(ws: tw.WebSocketConnection) -> bool:
    """May a message be framed now? Not once a close has begun (point 5 above)."""
    return ws.closed is None and ws._wsproto.state is ConnectionState.OPEN


def _frame(ws: tw.WebSocketConnection, wire: Wire) -> bytes:
    """One message as the bytes of a websocket frame (point 5 of the block above)."""
    event = TextMessage(data=wire) if isinstance(wire, str) else BytesMessage(data=wire)
    data: bytes = ws._wsproto.send(event)
    return data


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


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
