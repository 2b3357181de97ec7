#!/usr/bin/env python3
"""A minimal meeting bot that runs audio-sidecar as its child process.

Standard library only, so it can be copied into any bot. It:

1. creates two Unix socketpairs, one for the bot's audio going up (audio-in)
   and one for the server's answers coming down (audio-out);
2. spawns `audio-sidecar run` with the far ends inherited as file
   descriptors (`--audio-in-fd`, `--audio-out-fd`), so no socket files, paths
   or permissions are involved;
3. reads the sidecar's JSON-lines events from its stdout;
4. streams a tone as 20 ms AudioSocket frames at real-time pace, ends the
   stream with a terminate frame, and reads back whatever the server says
   (bot output) from audio-out;
5. exits cleanly by closing the sidecar's stdin (`--exit-on-stdin-eof`).

Try it against the echo server, from the repository root:

    .venv/bin/audio-sidecar serve --echo &        # listens on ws://127.0.0.1:8765/
    .venv/bin/python examples/python_bot/bot.py --url ws://127.0.0.1:8765/

The sidecar is started as `<this python> -m sidecar`; set SIDECAR_CMD (for
example to `audio-sidecar`) to start it another way.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import socket
import struct
import subprocess
import sys
import threading
import time

RATE = 48000
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000
# AudioSocket frame kinds (1-byte kind, 2-byte big-endian length, payload).
KIND_TERMINATE = 0x00
KIND_AUDIO_48K = 0x16
KIND_ERROR = 0xFF
AUDIO_KINDS = range(0x10, 0x19)  # 8 kHz ... 192 kHz; the sidecar sends 0x16 (48 kHz)


def frame(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BH", kind, len(payload)) + payload


def tone(freq: float, seconds: float, level: float = 0.3) -> bytes:
    n = round(seconds * RATE)
    samples = (round(level * 32767 * math.sin(2 * math.pi * freq * i / RATE)) for i in range(n))
    return struct.pack(f"<{n}h", *samples)


class Speaker(threading.Thread):
    """Reads audio-out: the frames the bot should play into the meeting."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.samples = 0
        self.frames = 0
        self.last_frame_at = 0.0
        self.errors: list[str] = []

    def run(self) -> None:
        buffer = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            while len(buffer) >= 3:
                kind, length = struct.unpack_from(">BH", buffer)
                if len(buffer) < 3 + length:
                    break
                payload, buffer = buffer[3 : 3 + length], buffer[3 + length :]
                if kind in AUDIO_KINDS:
                    # A real bot would hand `payload` (s16le mono) to the meeting here.
                    self.samples += len(payload) // 2
                    self.frames += 1
                    self.last_frame_at = time.monotonic()
                elif kind == KIND_ERROR:
                    self.errors.append(payload[1:].decode("utf-8", "replace"))


class Events(threading.Thread):
    """Reads the sidecar's stdout: one JSON object per line."""

    def __init__(self, stream: object) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.seen: list[str] = []
        self.last_stats: dict[str, object] = {}
        self.connected = threading.Event()
        self.stopped: dict[str, object] = {}

    def run(self) -> None:
        for line in self.stream:  # type: ignore[attr-defined]
            event = json.loads(line)
            name = event["event"]
            self.seen.append(name)
            if name == "stats":
                self.last_stats = event
            else:
                print(f"bot: sidecar event {name}: " + json.dumps(event), flush=True)
            if name == "connected":
                self.connected.set()
            elif name == "stopped":
                self.stopped = event


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("SIDECAR_URL"), help="ws:// or wss://")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the tone")
    parser.add_argument("--freq", type=float, default=440.0, help="tone frequency (Hz)")
    args = parser.parse_args()
    if not args.url:
        parser.error("give --url or set SIDECAR_URL")

    mic, mic_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    speaker_sock, speaker_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # SIDECAR_CMD overrides how the sidecar is started, e.g. "audio-sidecar".
    base = shlex.split(os.environ.get("SIDECAR_CMD", "")) or [sys.executable, "-m", "sidecar"]
    command = [
        *base,
        "run",
        "--url",
        args.url,
        "--audio-in-fd",
        str(mic_child.fileno()),
        "--audio-out-fd",
        str(speaker_child.fileno()),
        "--exit-on-stdin-eof",
        "--stats-interval",
        "1",
    ]
    sidecar = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        pass_fds=(mic_child.fileno(), speaker_child.fileno()),
        text=True,
    )
    # The child has its own copies; ours would keep the sockets open after it exits.
    mic_child.close()
    speaker_child.close()

    events = Events(sidecar.stdout)
    events.start()
    speaker = Speaker(speaker_sock)
    speaker.start()
    if not events.connected.wait(timeout=20):
        print("bot: the sidecar did not connect to the server", file=sys.stderr)
        sidecar.terminate()
        return 1

    pcm = tone(args.freq, args.seconds)
    step = FRAME_SAMPLES * 2
    start = time.monotonic()
    for n, offset in enumerate(range(0, len(pcm), step)):
        # An absolute schedule: sleep overshoot never accumulates.
        time.sleep(max(0.0, start + n * FRAME_MS / 1000 - time.monotonic()))
        mic.sendall(frame(KIND_AUDIO_48K, pcm[offset : offset + step]))
    mic.sendall(frame(KIND_TERMINATE))
    sent = len(pcm) // 2
    print(f"bot: sent {args.seconds:g} s of a {args.freq:g} Hz tone", flush=True)

    # Let the server's answer finish: wait until audio-out has been quiet for a while.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if speaker.frames and time.monotonic() - speaker.last_frame_at > 0.5:
            break

    sidecar.stdin.close()  # type: ignore[union-attr]
    code = sidecar.wait(timeout=15)
    events.join(timeout=5)
    mic.close()
    speaker_sock.close()
    for error in speaker.errors:
        print(f"bot: the sidecar reported an error on audio-out: {error}", file=sys.stderr)
    stats = events.last_stats
    print(
        f"bot: sidecar stats: {stats.get('messages_out')} messages out, "
        f"{stats.get('messages_in')} in, dropped {stats.get('dropped')}",
        flush=True,
    )
    print(
        f"done: sent {sent} samples, received {speaker.samples} samples of bot output, "
        f"sidecar exited with {code}",
        flush=True,
    )
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
