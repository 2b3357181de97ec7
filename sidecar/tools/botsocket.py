"""The bot's end of the sidecar's Unix sockets, with failures explained."""

from __future__ import annotations

import errno
from pathlib import Path

import trio

from sidecar import frames


class BotSocketError(Exception):
    """Cannot use the sidecar's socket; the message says why and what to check."""


async def connect(path: Path, flag: str) -> trio.SocketStream:
    """Connect to the socket a sidecar listens on (`flag` names its option)."""
    try:
        return await trio.open_unix_socket(str(path))
    except FileNotFoundError:
        raise BotSocketError(
            f"no socket at {path}: is the sidecar running with {flag} {path}?"
        ) from None
    except ConnectionRefusedError:
        raise BotSocketError(
            f"nothing is listening on {path}: a stale socket file from a sidecar that stopped?"
        ) from None
    except PermissionError:
        raise BotSocketError(
            f"permission denied on {path}: the sidecar's sockets are private (mode 0600) to "
            "the user running it; run this tool as that user"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ENOTSOCK:
            raise BotSocketError(f"{path} is not a socket") from None
        raise BotSocketError(f"cannot connect to {path}: {exc.strerror or exc}") from None


def describe_error_frame(frame: frames.ErrorFrame) -> str:
    try:
        name = frames.ErrorCode(frame.code).name
    except ValueError:
        name = f"code {frame.code}"
    return f"{frame.text or 'no details'} ({name})"
