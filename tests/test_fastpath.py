"""DirectStream and Delivery: the link's two short cuts past trio-websocket.

Real TCP sockets on 127.0.0.1 (port 0), with and without TLS (a trustme CA):
synchronous writes and awaited ones keep one byte order, a tail the socket
could not take waits for the next writer, and a TLS failure is reported the
way the link classifies it.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trustme

from sidecar.fastpath import Delivery, DirectStream

CA = trustme.CA()
CERT = CA.issue_cert("127.0.0.1")


def client_context(trusted: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if trusted:
        CA.configure_trust(context)
    return context


def server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    CERT.configure_cert(context)
    return context


@asynccontextmanager
async def connected(
    tls: bool, trusted: bool = True
) -> AsyncIterator[tuple[DirectStream, trio.abc.Stream]]:
    """A DirectStream and the server's end of the same connection."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    accepted: list[trio.abc.Stream] = []
    ready = trio.Event()

    async def accept() -> None:
        stream: trio.abc.Stream = await listeners[0].accept()
        if tls:
            stream = trio.SSLStream(stream, server_context(), server_side=True)
            # The handshake happens on the first read or write; a rejected one
            # is the client's to report.
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError:
                assert not trusted

        accepted.append(stream)
        ready.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        context = client_context(trusted) if tls else None
        try:
            client = await DirectStream.open(tcp, context, "127.0.0.1")
        except BaseException:
            await tcp.aclose()
            await ready.wait()
            raise
        await ready.wait()
        try:
            yield client, accepted[0]
        finally:
            await client.aclose()
            await accepted[0].aclose()
            for listener in listeners:
                await listener.aclose()


async def read_exactly(stream: trio.abc.Stream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        assert chunk, "the connection ended early"
        data += chunk
    return data


@pytest.mark.parametrize("tls", [False, True])
async def test_synchronous_and_awaited_writes_keep_one_order(tls: bool) -> None:
    with trio.fail_after(10):
        async with connected(tls) as (client, server):
            assert client.writable_now
            client.try_send(b"one,")
            await client.send_all(b"two,")
            client.try_send(b"three")
            assert await read_exactly(server, 13) == b"one,two,three"
            await server.send_all(b"back")
            assert await read_exactly(client, 4) == b"back"


@pytest.mark.parametrize("tls", [False, True])
async def test_what_the_socket_cannot_take_waits_and_goes_first(tls: bool) -> None:
    with trio.fail_after(20):
        async with connected(tls) as (client, server):
            # The server reads nothing until the client's buffers are full.
            sent = b""
            n = 0
            while not client.pending:
                piece = bytes([n % 251]) * 65536
                client.try_send(piece)
                sent += piece
                n += 1
            assert not client.writable_now
            async with trio.open_nursery() as nursery:
                # An awaited write now waits behind the tail, whoever makes it.
                nursery.start_soon(client.send_all, b"last")
                got = await read_exactly(server, len(sent) + 4)
            assert got == sent + b"last"
            assert (client.pending, client.writable_now) == (False, True)


async def test_flush_writes_the_pending_tail() -> None:
    with trio.fail_after(20):
        async with connected(tls=False) as (client, server):
            sent = b""
            while not client.pending:
                client.try_send(b"x" * 65536)
                sent += b"x" * 65536
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.flush)
                assert await read_exactly(server, len(sent)) == sent
            assert not client.pending


async def test_an_untrusted_certificate_is_a_broken_resource_caused_by_the_ssl_error() -> None:
    with trio.fail_after(10), pytest.raises(BaseExceptionGroup) as info:
        async with connected(tls=True, trusted=False):
            pass  # pragma: no cover - the handshake fails first
    # What link.py classifies: trio's own shape for a failed TLS handshake.
    matched, _ = info.value.split(trio.BrokenResourceError)
    assert matched is not None
    (error,) = _leaves(matched)
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    return [
        leaf
        for exc in group.exceptions
        for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    ]


async def test_the_end_of_a_tls_stream_reads_as_eof() -> None:
    with trio.fail_after(10):
        async with connected(tls=True) as (client, server):
            await server.send_all(b"bye")
            assert await read_exactly(client, 3) == b"bye"
            await server.aclose()
            assert await client.receive_some() == b""


async def test_delivery_hands_each_message_to_the_handler_until_closed() -> None:
    got: list[str | bytes] = []

    async def handle(message: str | bytes) -> None:
        got.append(message)

    delivery = Delivery(handle)
    async with delivery:
        await delivery.send("a")
        await delivery.send(b"b")
    assert delivery.closed.is_set()
    await delivery.send("after the close")
    assert got == ["a", b"b"]


async def test_a_tls_failure_in_a_synchronous_write_is_a_broken_resource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What link.py hands to its sender: the producing task must not meet an ssl.SSLError.
    with trio.fail_after(10):
        async with connected(tls=True) as (client, _):
            tls = client._tls
            assert tls is not None

            def refuse(data: object) -> int:
                raise ssl.SSLError("bad record mac")

            monkeypatch.setattr(tls, "write", refuse)
            with pytest.raises(trio.BrokenResourceError) as info:
                client.try_send(b"x")
            assert isinstance(info.value.__cause__, ssl.SSLError)
