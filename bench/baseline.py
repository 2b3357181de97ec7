"""What the baseline processes share with each other and with the sidecar's interface.

Both baselines take the subset of `audio-sidecar run` flags the bench uses,
listen on the same two Unix sockets (AudioSocket frames), and print the same
kind of JSON-lines events (`ready`, `stats`, `stopped`) so the harness drives
all three the same way. The framing here is deliberately minimal and
independent of sidecar.frames: a baseline must not borrow our code paths.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any, Final

HEADER: Final = struct.Struct(">BH")
KIND_RATES: Final = {
    0x10: 8000,
    0x11: 12000,
    0x12: 16000,
    0x13: 24000,
    0x14: 32000,
    0x15: 44100,
    0x16: 48000,
    0x17: 96000,
    0x18: 192000,
}
RATE_KINDS: Final = {rate: kind for kind, rate in KIND_RATES.items()}
KIND_TERMINATE: Final = 0x00
KIND_UUID: Final = 0x01
BOT_RATE: Final = 48000
MAX_PAYLOAD: Final = 0xFFFF


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--url", required=True)
    p.add_argument("--audio-in", required=True, type=Path)
    p.add_argument("--audio-out", required=True, type=Path)
    p.add_argument("--sample-rate", type=int, choices=(8000, 16000, 24000), default=16000)
    p.add_argument("--bot-id", default="bot_bench")
    p.add_argument("--stats-interval", type=float, default=5.0)
    return p


def emit(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "ts_ms": int(time.time() * 1000), **fields})
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass


def encode_audio(pcm: bytes, rate: int = BOT_RATE) -> bytes:
    return HEADER.pack(RATE_KINDS[rate], len(pcm)) + pcm


def encode_uuid(uuid: bytes) -> bytes:
    """The frame that opens a participant's connection: its 16-byte UUID."""
    return HEADER.pack(KIND_UUID, len(uuid)) + uuid


def listen(path: Path) -> socket.socket:
    """A private (0600) listening Unix socket; a stale file from a dead run is replaced."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(1)
    return sock


class FrameBuffer:
    """Splits a byte stream into (kind, payload) frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        start = 0
        while len(self._buf) - start >= HEADER.size:
            kind, length = HEADER.unpack_from(self._buf, start)
            end = start + HEADER.size + length
            if end > len(self._buf):
                break
            out.append((kind, bytes(self._buf[start + HEADER.size : end])))
            start = end
        del self._buf[:start]
        return out
