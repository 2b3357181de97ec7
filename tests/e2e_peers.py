"""Extra peers for the link, downlink and lifecycle end-to-end tests.

- `open_sidecar`: a SidecarProcess that is always killed and reaped, even when
  the test fails half-way.
- `SilentServer`: a raw TCP server that completes the websocket upgrade and
  then ignores everything, pings included: a dead peer that keeps its socket.
- `reserve_port`: a free TCP port for a server that starts later.
- `open_speaker`: the bot's side of audio-out, reading in the background.
"""

from __future__ import annotations

import base64
import hashlib
import socket
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


class SilentServer:
    """Completes the websocket handshake, then never answers anything."""

    def __init__(self) -> None:
        self.port = 0
        self.handshakes = 0
        self.bytes_received = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/audio"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

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


class HangUpServer:
    """Accepts TCP, reads the upgrade request, and hangs up without an answer."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/audio"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        async with stream:
            with suppress(trio.BrokenResourceError):
                await stream.receive_some(4096)
