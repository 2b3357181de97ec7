"""One wake-up per message: the two places where the link steps past trio-websocket.

trio-websocket costs three scheduler passes per message each way: a sender
hands a message to its lock, then to the stream, each a checkpoint; its reader
hands every message through a memory channel to a second task. At 50 messages
a second per direction that was half of the sidecar's CPU. So:

- `DirectStream` sits under trio-websocket and lets the link write a
  websocket frame *from the task that produced it*, without awaiting,
  whenever the socket can take it, over TLS too: the uplink reads a frame from the
  bot, resamples, encodes, and the bytes are in the kernel before it sleeps
  again. A write that cannot finish at once leaves its tail pending, and every
  later write (ours or trio-websocket's: pongs, close) waits behind it, so the
  byte stream stays whole.
- `Delivery` replaces the memory channel trio-websocket's reader puts messages
  in: the reader task itself decodes and plays each message.

Both lean on trio-websocket internals; connection.py lists them in one place, pinned
to one version by a test.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Awaitable, Callable

import trio

# Read size for the connection: bot_output messages are often tens of kB.
RECEIVE_BYTES = 65536


class DirectStream(trio.abc.Stream):
    """The connection's byte stream, whose writes may also be made synchronously.

    Over TLS the records are made by an `ssl.SSLObject` on memory BIOs (the
    standard library's sans-I/O TLS, which trio's own SSLStream is built on)
    so that encrypting needs no await either; every record goes out through
    the one ordered writer here.
    """

    def __init__(
        self,
        transport: trio.SocketStream,
        tls: ssl.SSLObject | None = None,
        bios: tuple[ssl.MemoryBIO, ssl.MemoryBIO] | None = None,
    ) -> None:
        self._transport = transport
        # A second descriptor of the same socket, non-blocking: trio's socket
        # object has no synchronous send.
        self._raw = socket.socket(fileno=os.dup(transport.socket.fileno()))
        self._raw.setblocking(False)
        self._tls = tls
        self._incoming, self._outgoing = bios or (ssl.MemoryBIO(), ssl.MemoryBIO())
        self._pending = b""
        # Held while an awaited write is under way: trio-websocket's, or our
        # flush of a pending tail. A synchronous write must not cut in.
        self._lock = trio.Lock()

    @classmethod
    async def open(
        cls,
        transport: trio.SocketStream,
        context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> DirectStream:
        """Over `transport`; with a context, after a TLS handshake done here and
        now, so a bad certificate is an error we see at once (raised as
        trio.BrokenResourceError from the ssl.SSLError, as trio's SSLStream does)."""
        if context is None:
            return cls(transport)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
        stream = cls(transport, tls, (incoming, outgoing))
        try:
            await stream._handshake(tls)
        except BaseException:
            stream._raw.close()
            raise
        return stream

    async def _handshake(self, tls: ssl.SSLObject) -> None:
        while True:
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                await self._transport.send_all(self._outgoing.read())
                data = await self._transport.receive_some(RECEIVE_BYTES)
                if not data:
                    raise trio.BrokenResourceError(
                        "the server closed the connection in the TLS handshake"
                    ) from None
                self._incoming.write(data)
                continue
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError(f"TLS handshake failed: {exc}") from exc
            break
        await self._transport.send_all(self._outgoing.read())

    @property
    def pending(self) -> bool:
        """A tail of an earlier write still waits for the socket."""
        return bool(self._pending)

    @property
    def writable_now(self) -> bool:
        """Would `try_send` take bytes now?"""
        return not self._pending and not self._lock.locked()

    def try_send(self, data: bytes) -> None:
        """Write `data` now; what the socket cannot take waits for `flush()`.

        Call only when `writable_now`. Raises OSError (or a BrokenResourceError
        for a TLS failure) when the connection is broken.
        """
        assert self.writable_now
        data = self._seal(data)
        try:
            sent = self._raw.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self._pending = data[sent:]

    async def flush(self) -> None:
        """Write the pending tail (the caller bounds how long that may take)."""
        async with self._lock:
            await self._flush()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._lock:
            await self._flush()
            await self._transport.send_all(self._seal(bytes(data)))

    async def _flush(self) -> None:
        while self._pending:
            tail = self._pending
            await self._transport.send_all(tail)
            self._pending = self._pending[len(tail) :]

    def _seal(self, data: bytes) -> bytes:
        """The bytes to put on the wire for `data`: itself, or its TLS records."""
        if self._tls is None:
            return data
        try:
            self._tls.write(data)
        except ssl.SSLWantReadError:
            # Only a TLS 1.2 renegotiation asks a writer to read first.
            raise trio.BrokenResourceError("the server asked for a TLS renegotiation") from None
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(f"TLS failed: {exc}") from exc
        return self._outgoing.read()

    async def wait_send_all_might_not_block(self) -> None:
        await self._transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        tls = self._tls
        if tls is None:
            return await self._transport.receive_some(max_bytes)
        while True:
            try:
                data = tls.read(max_bytes or RECEIVE_BYTES)
            except ssl.SSLWantReadError:
                self._queue_outgoing()
                chunk = await self._transport.receive_some(RECEIVE_BYTES)
                if not chunk:
                    return b""  # EOF without close_notify: the end, as for https
                self._incoming.write(chunk)
                continue
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError(f"TLS failed: {exc}") from exc
            self._queue_outgoing()
            return data

    def _queue_outgoing(self) -> None:
        # Reading can make records of its own (a TLS 1.3 KeyUpdate answer):
        # they join the queue of writes, so every record goes out in order.
        records = self._outgoing.read()
        if records:
            self._pending += records

    async def aclose(self) -> None:
        self._raw.close()
        await self._transport.aclose()


class Delivery:
    """Stands in for the send side of trio-websocket's message channel.

    The reader task calls `send(message)` for every complete message; here
    that runs the link's handler in place, so the message costs no second
    task's wake-up. trio-websocket closes it when the connection closes.
    """

    def __init__(self, handle: Callable[[str | bytes], Awaitable[None]]) -> None:
        self._handle = handle
        self.closed = trio.Event()

    async def send(self, message: str | bytes) -> None:
        if not self.closed.is_set():
            await self._handle(message)

    async def aclose(self) -> None:
        self.closed.set()

    async def __aenter__(self) -> Delivery:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
