"""Extra peers for the link, downlink and lifecycle end-to-end tests.

- `open_sidecar`: a SidecarProcess that is always killed and reaped, even when
  the test fails half-way.
- `SilentServer`: a raw TCP server that completes the websocket upgrade and
  then ignores everything, pings included: a dead peer that keeps its socket.
- `ScriptedServer`: a raw TCP server that reads each upgrade request and lets
  the test write whatever answer it likes, bytes on the wire, valid or not.
- `reserve_port`: a free TCP port for a server that starts later.
- `open_speaker`: the bot's side of audio-out, reading in the background.
"""

from __future__ import annotations

import base64
import hashlib
import socket
from collections.abc import Awaitable, Callable
from contextlib import suppress

import trio
from support import SidecarProcess, Speaker, WsServer, wait_until

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def reserve_port() -> int:
    """A port nobody listens on right now (the kernel just handed it out)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def open_speaker(nursery: trio.Nursery, path: str) -> Speaker:
    with trio.fail_after(5):
        stream = await trio.open_unix_socket(path)
    speaker = Speaker(stream)
    nursery.start_soon(speaker.serve)
    return speaker


async def until_connected(sidecar: SidecarProcess, server: WsServer, n: int = 1) -> None:
    """The n-th connection is up on both ends (the server registers it a moment
    after the handshake the sidecar reports)."""
    await sidecar.wait_event("connected", lambda e: e["attempt"] >= n)
    await wait_until(lambda: len(server.connections) >= n)


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())


async def read_upgrade_request(stream: trio.abc.ReceiveStream) -> bytes | None:
    """The request's Sec-WebSocket-Key, or None if the client hung up first."""
    request = b""
    while b"\r\n\r\n" not in request:
        data = await stream.receive_some(4096)
        if not data:
            return None
        request += data
    head = request.partition(b"\r\n\r\n")[0]
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            return value.strip()
    return b""


def upgrade_answer(key: bytes, *, omit: bytes = b"", extra: bytes = b"") -> bytes:
    """A 101 answer to `key`; `omit` drops the header of that name, `extra` is
    added as is (header lines, each ending in CRLF)."""
    headers = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", accept_key(key)),
    ]
    lines = b"".join(
        name + b": " + value + b"\r\n" for name, value in headers if name.lower() != omit.lower()
    )
    return b"HTTP/1.1 101 Switching Protocols\r\n" + lines + extra + b"\r\n"


def server_frame(opcode: int, payload: bytes, *, rsv: int = 0) -> bytes:
    """One final, unmasked frame, as a server sends it."""
    size = len(payload)
    if size < 126:
        length = bytes([size])
    elif size < 65536:
        length = bytes([126]) + size.to_bytes(2, "big")
    else:
        length = bytes([127]) + size.to_bytes(8, "big")
    return bytes([0x80 | rsv << 4 | opcode]) + length + payload


Script = Callable[[trio.SocketStream, bytes], Awaitable[None]]


class _TcpPeer:
    """A raw TCP server on 127.0.0.1 (port 0) that each peer below answers its own way."""

    port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/audio"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        raise NotImplementedError


class ScriptedServer(_TcpPeer):
    """Reads each upgrade request, then runs `script(stream, key)`: the test
    writes the answer byte for byte, which no real websocket server would let
    it get wrong. The connection closes when the script returns."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.port = 0
        self.accepted = 0
        self.finished = 0

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        try:
            async with stream:
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    key = await read_upgrade_request(stream)
                    if key is not None:
                        await self.script(stream, key)
        finally:
            self.finished += 1


async def drain(stream: trio.abc.ReceiveStream) -> None:
    """Read until the client closes: a peer that stays, saying nothing."""
    while await stream.receive_some(65536):
        pass


class SilentServer(_TcpPeer):
    """Completes the websocket handshake, then never answers anything."""

    def __init__(self) -> None:
        self.port = 0
        self.handshakes = 0
        self.bytes_received = 0

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            with suppress(trio.BrokenResourceError):
                await self._converse(stream)

    async def _converse(self, stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            data = await stream.receive_some(4096)
            if not data:
                return
            request += data
        head, _, rest = request.partition(b"\r\n\r\n")
        key = b""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
        )
        self.handshakes += 1
        self.bytes_received += len(rest)
        while data := await stream.receive_some(65536):
            self.bytes_received += len(data)


class HangUpServer(_TcpPeer):
    """Accepts TCP, reads the upgrade request, and hangs up without an answer."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        async with stream:
            with suppress(trio.BrokenResourceError):
                await stream.receive_some(4096)
