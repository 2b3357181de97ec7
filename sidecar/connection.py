"""One websocket connection: its session, its counters, its tasks, and every
trio-websocket internal it leans on.

The link (link.py) is the supervisor: it connects, classifies what ended a
connection, retries, renews. Everything that lives and dies with one
connection is here: the dialect's `Session`, the samples sent and confirmed,
the writer that sends from the producer's own task (`write_now`), the sender
task for what could not go at once, the pinger and the keepalive.

What we rely on in trio-websocket beyond its documented API, checked against
this version (tests/test_handshake.py fails on any other: re-check each point
below in its _impl.py, then update the version):

1. wrap_client_stream() starts one task, the connection's reader, with
   nursery.start_soon(), and that reader is the only one to see the
   handshake's outcome: _ReaderNursery watches it end.
2. The reader lets an exception from stream.receive_some() other than
   trio.BrokenResourceError/ClosedResourceError propagate out of the task
   unchanged: that is how HandshakeStream's HandshakeFailed reaches us.
3. ConnectionClosed carries the same CloseReason whoever closed, so who did
   is read from the private WebSocketConnection._wsproto: after a close frame
   from the server, trio-websocket answers it and wsproto's state is CLOSED;
   when wsproto cannot parse what the server sent (invalid UTF-8: 1007,
   protocol errors: 1002) it reports a CloseConnection the server never sent
   and stays OPEN; when trio-websocket closes on a message over
   max_message_size (1009) it is LOCAL_CLOSING. See closed_by_us().
4. The one task started (point 1) is the bound method _reader_task of the
   WebSocketConnection, which puts each complete message with
   `await self._send_channel.send(message)`, looking the attribute up each
   time, and ends it with `await self._send_channel.aclose()` when the
   connection closes: Delivery takes the channel's place before the reader
   first runs (fastpath.py). A close for a message over max_message_size
   closes the receive end instead (`_recv_channel`, which get_message()
   reads): _until_closed() watches both.
5. Every byte trio-websocket writes goes through the stream's send_all, and
   it makes each frame with self._wsproto.send(event), which needs no lock:
   so we frame messages with the same wsproto object and write them through
   DirectStream, which orders its own writes with trio-websocket's. While
   the reader answers a server's close, _close_reason is still unset but
   wsproto is no longer OPEN and would refuse a frame: _sendable() asks it.
6. A text message whose UTF-8 bytes a dialect already made (Utf8Text) is
   framed by wsproto's private FrameProtocol._serialize_frame (reached as
   _wsproto.connection._proto), which its send(TextMessage) calls after encoding the
   str; our messages are always whole (fin), so its continuation bookkeeping
   in send_data() never applies. Checked against wsproto CHECKED_WSPROTO.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import cast

import trio
import trio_websocket as tw
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, TextMessage
from wsproto.frame_protocol import Opcode
from wsproto.utilities import LocalProtocolError

from sidecar.dialects.base import (
    AudioOut,
    Incoming,
    Notice,
    Outgoing,
    Session,
    SessionReply,
    Utf8Text,
    Wire,
)
from sidecar.fastpath import RECEIVE_BYTES, Delivery, DirectStream
from sidecar.handshake import HandshakeFailed, HandshakeStream
from sidecar.outbox import Outbox
from sidecar.redact import Redactor

CHECKED_TRIO_WEBSOCKET = "0.12.2"
CHECKED_WSPROTO = "1.3.2"

# trio-websocket's own queue for messages; Delivery replaces its send side, so
# nothing waits in it.
MESSAGE_QUEUE = 1

log = logging.getLogger("sidecar.link")

# What a connection that breaks under our feet raises (besides ConnectionClosed).
# LocalProtocolError: trio-websocket can let a send reach a connection its reader
# already gave up on after a protocol error from the server.
NETWORK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError, LocalProtocolError)
ABNORMAL_CLOSURE = 1006
NORMAL_CLOSURE = 1000
# Why our side closes with each code it uses (anything else: the code's name).
_LOCAL_CLOSES = {
    1002: "protocol error from the server",
    1007: "invalid UTF-8 from the server",
    1009: "a message over 4 x --max-message-bytes",
}


class ConnState(enum.Enum):
    """Where one connection is; only OPEN lets any task write to it. (Around
    it, the link's own phase is LinkState, sidecar/linkstate.py.)"""

    HANDSHAKE = "handshake"
    """The upgrade is under way: the server's answer is not judged yet."""
    OPENING = "opening"
    """Upgraded; the session's opening messages are being written."""
    OPEN = "open"
    """The opening is out: what the outbox holds may follow, from any task."""
    CLOSING = "closing"
    """Its tasks have ended: only our close handshake is written, while what
    the server still sends is delivered."""
    CLOSED = "closed"
    """Over: nothing more is written or delivered."""


@dataclass(frozen=True, slots=True)
class End:
    """Why a connection ended, as the supervisor judges it."""

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
    rotated: bool = False
    """Our clean close, to move to a new session (the link's rotation)."""


class Ended(Exception):
    """A connection task ended the connection, with a reason."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.end = End(reason, code)


class OpeningUnencodable(Exception):
    """The session cannot encode its opening: no connection ever will."""


@dataclass(slots=True)
class ConnectionStatistics:
    messages_out: int = 0
    bytes_out: int = 0
    samples_out: int = 0
    messages_in: int = 0
    bytes_in: int = 0
    encode_failures: int = 0
    unconfirmed_samples: int = 0
    """Sent, then the connection died before a pong (or our close handshake)
    proved the server had read them: maybe lost, maybe not."""
    commands_dropped: int = 0
    """The bot's commands the session held and let go (Session.commands_dropped)."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    send: float
    ping_interval: float
    ping_timeout: float
    close: float


class Connection:
    """One connection's moving parts, from the upgrade to its end."""

    def __init__(
        self,
        session: Session,
        stream: DirectStream,
        outbox: Outbox,
        on_incoming: Callable[[Incoming], Awaitable[None]],
        encode_failed: Callable[[Outgoing, Exception], None],
        ready_changed: Callable[[], None],
    ) -> None:
        self.session = session
        self.stream = stream
        self.state = ConnState.HANDSHAKE
        self.delivery = Delivery(self._deliver)
        self.ws: tw.WebSocketConnection | None = None
        self._outbox = outbox
        self._on_incoming = on_incoming
        self._encode_failed = encode_failed
        self._ready_changed = ready_changed
        """The session's readiness for audio changed: the link decides whether
        that is the outbox's (it is while the link counts this connection open)."""
        self._broken: BaseException | None = None
        """A synchronous write failed; the sender raises it in its own task."""
        self._wake = trio.Event()
        self._rotating = trio.Event()
        self._stats = ConnectionStatistics()
        # Samples sent, and how many of them a pong confirmed.
        self._sent = 0
        self._confirmed = 0
        self._audio_sent_at = 0.0

    def statistics(self) -> ConnectionStatistics:
        return dataclasses.replace(self._stats, commands_dropped=self.session.commands_dropped)

    # -- the upgrade ------------------------------------------------------------

    async def handshake(
        self,
        nursery: trio.Nursery,
        host_header: str,
        resource: str,
        headers: list[tuple[bytes, bytes]],
        max_message_size: int,
        redact: Redactor,
    ) -> None:
        """The websocket upgrade; fails as soon as the server hangs up or refuses."""
        reader = _ReaderNursery(nursery, self.delivery)
        opened: list[tw.WebSocketConnection] = []

        async def upgrade() -> None:
            opened.append(
                await tw.wrap_client_stream(
                    # trio-websocket only calls start_soon() on it.
                    cast(trio.Nursery, reader),
                    # Annotated narrower than its documented "arbitrary stream":
                    # only the trio.abc.Stream methods are called on it.
                    cast(trio.SocketStream, HandshakeStream(self.stream, redact=redact)),
                    host_header,
                    resource,
                    extra_headers=headers,
                    message_queue_size=MESSAGE_QUEUE,
                    max_message_size=max_message_size,
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
            self.ws = opened[0]
            self.state = ConnState.OPENING
            return
        if reader.failed is not None:
            raise reader.failed
        # The reader ends without an error when the connection breaks under it.
        raise Ended("the server closed the connection during the handshake")

    # -- writing from the producer's task ---------------------------------------------

    def notify(self) -> None:
        """Something was put in the outbox: on its way now, if the socket takes it.

        Runs in the caller's task and never waits: what cannot be written at
        once stays in the outbox (or, a message's tail, in the stream) for the
        sender task, which this then wakes.
        """
        if self.state is ConnState.OPEN:
            self._write_now()
            if not self._outbox and not self.stream.pending:
                return
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def _write_now(self) -> None:
        outbox, session, stream, ws = self._outbox, self.session, self.stream, self.ws
        assert ws is not None
        while stream.writable_now and self._broken is None and _sendable(ws):
            item = outbox.get(audio=session.audio_ready)
            if item is None:
                return
            try:
                encoded = self._encode(item)
                if encoded is None:
                    continue
                wires, data = encoded
                if data:  # nothing on the wire (a clear Attendee answers by its marks)
                    stream.try_send(data)
            except (OSError, trio.BrokenResourceError, LocalProtocolError) as exc:
                # Raised in the caller's task (the uplink's, the clock's): the
                # sender raises it in the connection's own, where it ends it.
                if isinstance(item, AudioOut):
                    outbox.count_lost(item, "in_flight")
                self._broken = exc
                return
            self._account(item, wires)

    def _encode(self, item: Outgoing) -> tuple[Sequence[Wire | Utf8Text], bytes] | None:
        """`item`'s messages and their frames; None, counted, where the dialect
        cannot encode it. Whatever the dialect raises is contained here: this
        runs in whichever task called notify() (the uplink's, the clock's)."""
        assert self.ws is not None
        try:
            wires = self.session.wire_utf8(item)
            return wires, b"".join(frame(self.ws, wire) for wire in wires)
        except LocalProtocolError:
            # Not the item: wsproto's connection closed under us (a drop).
            raise
        except Exception as exc:
            self._stats.encode_failures += 1
            if isinstance(item, AudioOut):
                self._outbox.count_lost(item, "unencodable")
            self._encode_failed(item, exc)
            return None

    def _account(self, item: Outgoing, wires: Sequence[Wire | Utf8Text]) -> None:
        self._stats.messages_out += len(wires)
        self._stats.bytes_out += sum(len(wire) for wire in wires)
        if isinstance(item, AudioOut):
            self._sent += item.samples
            self._stats.samples_out += item.samples
            self._audio_sent_at = trio.current_time()

    # -- reading, in trio-websocket's reader task ------------------------------------------

    async def _deliver(self, message: str | bytes) -> None:
        """Each server message, in trio-websocket's reader task (Delivery)."""
        if self.state is ConnState.CLOSED:
            return
        self._stats.messages_in += 1
        self._stats.bytes_in += len(message)
        session = self.session
        ready = session.audio_ready
        for incoming in session.receive(message):
            await self._on_incoming(incoming)
        replies = session.replies()
        if replies:
            # Behind what waits already, in the one ordered writer.
            self._outbox.put_control(SessionReply(session, tuple(replies)))
            self.notify()
        now_ready = session.audio_ready
        if now_ready != ready:
            self._ready_changed()
            if now_ready:
                self.notify()  # the server's go-ahead: queued audio may go now

    # -- the connection's life ----------------------------------------------------------

    async def run(
        self,
        timeouts: Timeouts,
        stopping: trio.Event,
        failure: Callable[[BaseException, tw.WebSocketConnection], End],
    ) -> End:
        """Until the connection ends: what ended it, as `failure` judges the error.

        Stopping (the sidecar's graceful stop), the close handshake with 1000
        is made here, and the end is that, whatever else happened.
        """
        ws = self.ws
        assert ws is not None
        ended: list[End] = []

        async def guard(fn: Callable[[tw.WebSocketConnection], Awaitable[None]]) -> None:
            try:
                await fn(ws)
            except Exception as exc:
                ended.append(failure(exc, ws))
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guard, self._until_closed)
            nursery.start_soon(guard, lambda ws: self._send(ws, timeouts, stopping))
            nursery.start_soon(guard, lambda ws: self._ping(ws, timeouts))
            if self.session.keepalive_s is not None:
                nursery.start_soon(guard, lambda ws: self._keepalive(ws, timeouts))
            nursery.start_soon(guard, self._until_rotated)
        self.state = ConnState.CLOSING
        end = ended[0] if ended else End("connection ended")
        rotated = self._rotating.is_set() and not stopping.is_set()
        if stopping.is_set() or rotated:
            why = "session rotation" if rotated else "sidecar stopping"
            with trio.move_on_after(timeouts.close) as scope:
                await self._write(self._closing())
                await ws.aclose(code=NORMAL_CLOSURE, reason=why)
            if not scope.cancelled_caught:
                # The server answered our close: it has read everything before it.
                self._confirmed = self._sent
            end = End(why, NORMAL_CLOSURE, rotated=rotated)
        self._stats.unconfirmed_samples += self._sent - self._confirmed
        self.state = ConnState.CLOSED
        return end

    def rotate(self) -> None:
        """End this connection with a clean close, leaving what the outbox holds
        for the next one (the link moves to a new session)."""
        self._rotating.set()

    async def _until_rotated(self, ws: tw.WebSocketConnection) -> None:
        await self._rotating.wait()
        raise Ended("session rotation", NORMAL_CLOSURE)

    async def _until_closed(self, ws: tw.WebSocketConnection) -> None:
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
            await self.delivery.closed.wait()
            either.cancel_scope.cancel()
        raise tw.ConnectionClosed(ws.closed)

    def _closing(self) -> Sequence[Wire]:
        try:
            return self.session.closing()
        except Exception as exc:
            # The close itself still goes out: the server learns we stopped.
            self._stats.encode_failures += 1
            log.warning("the closing message cannot be encoded: %s", describe(exc))
            return ()

    async def _write(self, wires: Sequence[Wire]) -> None:
        """The awaited write, behind whatever waits in the stream already."""
        assert self.ws is not None
        if wires:
            await self.stream.send_all(b"".join(frame(self.ws, wire) for wire in wires))

    async def _send(
        self, ws: tw.WebSocketConnection, timeouts: Timeouts, stopping: trio.Event
    ) -> None:
        outbox, session, stream = self._outbox, self.session, self.stream
        timeout = timeouts.send
        item: Outgoing | None = None
        # One scope for the whole loop, its deadline moved per write: a new
        # fail_after for each would be measurable scheduling overhead.
        with trio.CancelScope() as bound:
            bound.deadline = trio.current_time() + timeout
            try:
                opening = session.opening()
                data = b"".join(frame(ws, wire) for wire in opening)
            except LocalProtocolError:
                raise  # the server closed first: a drop like any other
            except Exception as exc:
                raise OpeningUnencodable(describe(exc)) from None
            if data:
                await stream.send_all(data)
            self._stats.messages_out += len(opening)
            self._stats.bytes_out += sum(len(wire) for wire in opening)
            bound.deadline = math.inf
            self.state = ConnState.OPEN
            # -- memory (issue 19): what of the conversation the opening carried over
            restored = session.restored()
            if restored is not None:
                await self._on_incoming(Notice(restored))
            # --
            while True:
                if self._broken is not None:
                    raise self._broken
                if not _sendable(ws):
                    # The server's close is being answered: the reader ends the
                    # connection with its code (a session-length close must be
                    # told from a drop). Nothing is taken from the outbox first.
                    await self.delivery.closed.wait()
                    raise tw.ConnectionClosed(ws.closed)
                if stream.pending:
                    item = None
                    bound.deadline = trio.current_time() + timeout
                    await stream.flush()
                    bound.deadline = math.inf
                    continue
                item = outbox.get(audio=session.audio_ready)
                if item is None:
                    if stopping.is_set():
                        raise Ended("sidecar stopping", NORMAL_CLOSURE)
                    await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                samples = item.samples if isinstance(item, AudioOut) else 0
                try:
                    encoded = self._encode(item)
                except LocalProtocolError:
                    if isinstance(item, AudioOut):
                        outbox.count_lost(item, "in_flight")
                    raise
                if encoded is None:
                    continue
                wires, data = encoded
                if not data:  # nothing on the wire for it (see _write_now)
                    self._account(item, wires)
                    continue
                bound.deadline = trio.current_time() + timeout
                try:
                    await stream.send_all(data)
                except (tw.ConnectionClosed, *NETWORK_ERRORS):
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
        raise Ended(f"server did not accept a message within {timeout:g} s")

    async def _ping(self, ws: tw.WebSocketConnection, timeouts: Timeouts) -> None:
        interval, timeout = timeouts.ping_interval, timeouts.ping_timeout
        while True:
            await trio.sleep(interval)
            sent = self._sent
            try:
                # The send is bounded too: a peer that stopped reading fills our
                # socket buffer before it misses a pong.
                with trio.fail_after(timeout):
                    await ws.ping()
            except trio.TooSlowError:
                raise Ended(f"no pong within {timeout:g} s: peer is dead") from None
            # The server read the ping, so it read every message sent before it.
            self._confirmed = sent

    async def _keepalive(self, ws: tw.WebSocketConnection, timeouts: Timeouts) -> None:
        """The dialect's keepalive, only while no audio flows (a silent bot)."""
        session = self.session
        assert session.keepalive_s is not None
        period, timeout = session.keepalive_s, timeouts.send
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
                log.warning("the keepalive cannot be encoded: %s", describe(exc))
                wires = ()
            try:
                with trio.fail_after(timeout):
                    await self._write(wires)
            except trio.TooSlowError:
                raise Ended(f"server did not accept a keepalive within {timeout:g} s") from None
            self._stats.messages_out += len(wires)
            self._stats.bytes_out += sum(len(wire) for wire in wires)
            self._audio_sent_at = trio.current_time()


class _ReaderNursery:
    """Where trio-websocket starts its reader task, so we see it end.

    During the handshake the reader is the only one who learns that the server
    answered with anything but a valid upgrade, or hung up (point 1 of the
    list above); trio-websocket itself would wait out the whole connect
    timeout for an upgrade that will never come. Before the reader first
    runs, its message channel makes way for the connection's Delivery (point 4).
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
                f"reader task; connection.py was checked against {CHECKED_TRIO_WEBSOCKET}"
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


def closed(reason: tw.CloseReason | None, ws: tw.WebSocketConnection | None) -> End:
    """What a ConnectionClosed means: who closed, with which code and why."""
    if reason is None or reason.code == ABNORMAL_CLOSURE:
        return End("connection lost without a close frame", ABNORMAL_CLOSURE)
    by_server = ws is None or not closed_by_us(ws)
    if not by_server:
        why = _LOCAL_CLOSES.get(reason.code, reason.name)
        text = f"the sidecar closed the connection with code {reason.code} ({why})"
    else:
        text = f"closed by server with code {reason.code} ({reason.name})"
    detail = reason.reason or ""
    return End(f"{text}: {detail}" if detail else text, reason.code, detail, by_server=by_server)


def closed_by_us(ws: tw.WebSocketConnection) -> bool:
    """Whether our websocket library, not the server, ended the connection
    (point 3 of the list above); unknown internals count as the server."""
    state = getattr(getattr(ws, "_wsproto", None), "state", None)
    return state is ConnectionState.OPEN or state is ConnectionState.LOCAL_CLOSING


def _sendable(ws: tw.WebSocketConnection) -> bool:
    """May a message be framed now? Not once a close has begun (point 5 above)."""
    return ws.closed is None and ws._wsproto.state is ConnectionState.OPEN


def frame(ws: tw.WebSocketConnection, wire: Wire | Utf8Text) -> bytes | bytearray:
    """One message as the bytes of a websocket frame (point 5 of the list above)."""
    proto = ws._wsproto
    if isinstance(wire, Utf8Text):
        # Point 6: what wsproto's send(TextMessage) does past its str.encode().
        conn = proto.connection
        if conn is None or conn.state is not ConnectionState.OPEN:
            raise LocalProtocolError(f"a text message cannot be sent in state {proto.state}")
        return conn._proto._serialize_frame(Opcode.TEXT, wire.data, True)
    event = TextMessage(data=wire) if isinstance(wire, str) else BytesMessage(data=wire)
    data: bytes = proto.send(event)
    return data


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
