"""Unix sockets for the bot: a private listening socket, or an inherited fd."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import trio

PROBE_TIMEOUT_S = 1.0


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
