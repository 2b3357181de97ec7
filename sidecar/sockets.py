"""Unix sockets for the bot: a private listening socket, or an inherited fd,
and what both bot sockets do alike: accept, refuse, tell a departed peer;
and a stream that reads the way a real-time bot writes (`WaitFirstStream`)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import trio

from sidecar import frames

PROBE_TIMEOUT_S = 1.0
ACCEPT_RETRY_S = 0.1
# Bound on telling a bot why its connection ends: a bot that does not read
# must not hold the task that serves (or refuses) it.
REFUSE_TIMEOUT_S = 1.0
# Linux only; elsewhere a peer that hung up is told apart only once nothing
# it sent is left unread.
_POLLRDHUP: int = getattr(select, "POLLRDHUP", 0)

log = logging.getLogger("sidecar.sockets")

S = TypeVar("S", bound=trio.abc.Stream)

# trio's default for `receive_some()` without a size.
_DEFAULT_RECEIVE_SIZE = 65536


class SocketPathError(Exception):
    """The socket path cannot be used; the message says why."""


def _check_path(path: Path) -> bool:
    """True when a stale socket file must be replaced; raises if the path is unusable."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise SocketPathError(f"{path} is a symbolic link; refusing to use or remove it")
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketPathError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # A live listener with a full backlog makes connect() wait; that is "in use" too.
    probe.settimeout(PROBE_TIMEOUT_S)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        return True
    except TimeoutError:
        pass
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return True
        raise SocketPathError(f"{path}: cannot probe existing socket: {_why(exc)}") from None
    finally:
        probe.close()
    raise SocketPathError(f"{path} is in use by another running process")


def _why(exc: OSError) -> str:
    # Some errors (an AF_UNIX path that is too long) carry no strerror.
    return exc.strerror or str(exc)


@contextlib.asynccontextmanager
async def open_unix_listener(path: Path, backlog: int = 4) -> AsyncIterator[trio.SocketListener]:
    """Listen on `path` with mode 0600; the file is removed when the block exits."""
    if _check_path(path):
        path.unlink()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask makes the socket private from the moment it exists, not after a
    # chmod that leaves a window open to other local users.
    old_umask = os.umask(0o177)
    try:
        await sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise SocketPathError(f"{path}: cannot listen: {_why(exc)}") from None
    finally:
        os.umask(old_umask)
    identity = path.lstat().st_ino
    try:
        sock.listen(backlog)
        yield trio.SocketListener(sock)
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            # Only remove what is still ours: a successor may have replaced it.
            if path.lstat().st_ino == identity:
                path.unlink()


def adopt_fd(fd: int) -> trio.SocketStream:
    """Wrap an inherited, connected stream socket (one end of a socketpair)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise SocketPathError(f"fd {fd} is not a usable socket: {_why(exc)}") from None
    problem = None
    if sock.type != socket.SOCK_STREAM:
        problem = "is not a stream socket"
    elif sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        problem = "is a listening socket; pass one end of a connected pair (socketpair)"
    if problem is not None:
        # The fd belongs to the parent's arrangement; leave it open.
        sock.detach()
        raise SocketPathError(f"fd {fd} {problem}")
    sock.setblocking(False)
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


async def serve_unix_listener(
    listener: trio.abc.Listener[S],
    handler: Callable[[S], Awaitable[object]],
    *,
    name: str,
) -> NoReturn:
    """Accept connections for ever, each served by `handler` in its own task.

    A failed accept (out of file descriptors or memory; Linux reports EMFILE
    even with nobody waiting) is retried: the connections already served
    matter more than a new one, which waits in the kernel's queue meanwhile.
    """
    async with trio.open_nursery() as nursery:
        failing = False
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if not failing:
                    # Once per run of failures: the retry would repeat it 10 times a second.
                    log.warning(
                        "%s: cannot accept a connection: %s (retrying every %s s)",
                        name,
                        _why(exc),
                        ACCEPT_RETRY_S,
                    )
                    failing = True
                await trio.sleep(ACCEPT_RETRY_S)
                continue
            if failing:
                log.info("%s: accepting connections again", name)
                failing = False
            nursery.start_soon(handler, stream)


async def refuse(stream: trio.abc.SendStream, code: int, message: str) -> None:
    """Tell the bot why its connection is closed: an AudioSocket error frame.

    Best effort and bounded: the bot may not read, or may be gone already.
    """
    with (
        trio.move_on_after(REFUSE_TIMEOUT_S),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await stream.send_all(frames.encode_error(code, message))


# What trio's SocketStream makes of these: the socket was closed under us.
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})


class WaitFirstStream(trio.abc.HalfCloseableStream):
    """A connected socket stream whose `receive_some` waits for data, then reads.

    trio's `SocketStream` tries the read first and waits only when it fails. A
    bot writing in real time has sent nothing when the reader comes back, so
    that read fails every time: a wasted syscall and an exception per frame.
    Waiting first keeps trio's semantics: `receive_some` is a checkpoint (the
    wait is one even when data is ready), a close by another task ends the
    wait with `ClosedResourceError`, the end of the stream is ``b""``, and
    socket errors are `BrokenResourceError`. Sending and closing are the
    wrapped stream's.
    """

    __slots__ = ("_stream", "socket")

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.socket = stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = _DEFAULT_RECEIVE_SIZE
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        sock = self.socket
        while True:
            if sock.fileno() < 0:
                raise trio.ClosedResourceError("this socket was already closed")
            await trio.lowlevel.wait_readable(sock)
            try:
                # The socket is non-blocking (trio's); a read is a recv with no flags.
                return os.read(sock.fileno(), max_bytes)
            except BlockingIOError:
                # Readable was a false alarm (another reader, or a spurious wake).
                continue
            except OSError as exc:
                if exc.errno in _CLOSED_ERRNOS:
                    raise trio.ClosedResourceError("this socket was already closed") from None
                raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


def wait_first(stream: S) -> S | WaitFirstStream:
    """`stream` reading as `WaitFirstStream` does when it is a socket stream."""
    if isinstance(stream, trio.SocketStream):
        return WaitFirstStream(stream)
    return stream


def peer_hung_up(stream: trio.abc.Stream) -> bool:
    """The peer has closed the connection or shut down its sending side.

    It will send nothing more, though what it sent before may still be unread:
    the task reading the stream is about to see the end. A non-blocking probe
    that never consumes anything.
    """
    if not isinstance(stream, (trio.SocketStream, WaitFirstStream)):
        return False
    fd = stream.socket.fileno()
    if fd < 0:
        return True
    if _POLLRDHUP:
        poller = select.poll()
        poller.register(fd, _POLLRDHUP)
        gone = _POLLRDHUP | select.POLLHUP | select.POLLERR
        return any(mask & gone for _, mask in poller.poll(0))
    probe = socket.socket(fileno=fd)
    try:
        return probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        # The descriptor belongs to the stream: only the wrapper goes.
        probe.detach()
