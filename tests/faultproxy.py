"""A TCP fault proxy for tests: sits between the sidecar and a real server.

It forwards bytes both ways and, on the test's command, misbehaves the way
networks and servers do: resets connections, swallows traffic while keeping
the connection open (a blackhole), adds latency, throttles what reaches the
server (a server that reads slowly), refuses new connections, or accepts them
and never forwards (a handshake that never completes).
"""

from __future__ import annotations

import enum
import socket
import struct
from dataclasses import dataclass, field

import trio


class Mode(enum.Enum):
    PASS = "pass"
    BLACKHOLE = "blackhole"  # open, nothing passes either way
    REFUSE = "refuse"  # new connections are reset at once
    STALL = "stall"  # new connections are accepted and never forwarded


@dataclass
class ProxyStatistics:
    accepted: int = 0
    resets: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    refused: int = 0


@dataclass
class _Pair:
    client: trio.SocketStream
    upstream: trio.SocketStream | None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class FaultProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream_port = upstream_port
        self.host = host
        self.mode = Mode.PASS
        self.latency = 0.0
        # Bytes per second towards the server; 0 = unthrottled.
        self.upstream_rate = 0.0
        self.port = 0
        self.stats = ProxyStatistics()
        self._pairs: list[_Pair] = []
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/audio"

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        self._changed.set()
        self._changed = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept, listener, nursery)

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            client = await listener.accept()
            self.stats.accepted += 1
            if self.mode is Mode.REFUSE:
                self.stats.refused += 1
                _reset(client)
                continue
            nursery.start_soon(self._handle, client)

    async def _handle(self, client: trio.SocketStream) -> None:
        pair = _Pair(client, None)
        self._pairs.append(pair)
        try:
            with pair.scope:
                if self.mode is Mode.STALL:
                    await trio.sleep_forever()
                upstream = await trio.open_tcp_stream(self.host, self.upstream_port)
                pair.upstream = upstream
                async with upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, upstream, True, nursery.cancel_scope)
                    nursery.start_soon(self._pump, upstream, client, False, nursery.cancel_scope)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._pairs.remove(pair)
            await client.aclose()

    async def _pump(
        self, src: trio.SocketStream, dst: trio.SocketStream, up: bool, scope: trio.CancelScope
    ) -> None:
        try:
            while True:
                data = await src.receive_some(65536 if not up or not self.upstream_rate else 1024)
                if not data:
                    break
                while self.mode is Mode.BLACKHOLE:
                    await self._changed.wait()
                if self.latency:
                    await trio.sleep(self.latency)
                if up and self.upstream_rate:
                    await trio.sleep(len(data) / self.upstream_rate)
                await dst.send_all(data)
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        scope.cancel()

    def reset_all(self) -> None:
        """Connection reset mid-stream: RST to the sidecar, close upstream."""
        for pair in list(self._pairs):
            self.stats.resets += 1
            _reset(pair.client)
            pair.scope.cancel()


def _reset(stream: trio.SocketStream) -> None:
    # SO_LINGER with a zero timeout turns close() into a TCP RST.
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()
