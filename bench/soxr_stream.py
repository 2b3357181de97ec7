"""The soxr-stream baseline process: the neighbouring practice, same sockets.

`python -m bench.soxr_stream --url ws://... --audio-in PATH --audio-out PATH`

What Pipecat-style transports do: one stateful `soxr.ResampleStream` per
direction at very high quality (int16 in and out), an asyncio `websockets`
client connected at start, `json.dumps` + base64 per message through a queue
and a sender task, and a playout clock that writes 20 ms frames on an
absolute schedule, flushing the resampler once the server has gone quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
import soxr
from websockets.asyncio.client import ClientConnection, connect

from bench import baseline

QUALITY: Final = "VHQ"
FRAME_MS: Final = 20
# Quiet time after which the resampler's held-back tail is flushed into the playout.
FLUSH_AFTER_S: Final = 0.060
MAX_LATE_PERIODS: Final = 3


def _stream(in_rate: int, out_rate: int) -> soxr.ResampleStream:
    return soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=QUALITY)


class SoxrSidecar:
    def __init__(self, url: str, bot_id: str, sample_rate: int) -> None:
        self.url = url
        self.bot_id = bot_id
        self.sample_rate = sample_rate
        self.outgoing: asyncio.Queue[str] = asyncio.Queue()
        self.ws: ClientConnection | None = None
        self.connected = asyncio.Event()
        self.playout = bytearray()
        self.down: soxr.ResampleStream | None = None
        self.down_rate = 0
        self.pending = False
        self.last_in = 0.0
        self.wake = asyncio.Event()
        self.bot: asyncio.StreamWriter | None = None
        self.frames_in = 0
        self.messages_out = 0
        self.messages_in = 0
        self.frames_out = 0
        self.underruns = 0
        self.dropped_no_bot = 0

    # -- up -------------------------------------------------------------------------

    async def on_audio_in(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up = _stream(baseline.BOT_RATE, self.sample_rate)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                kind, length = baseline.HEADER.unpack(
                    await reader.readexactly(baseline.HEADER.size)
                )
                payload = await reader.readexactly(length)
                if baseline.KIND_RATES.get(kind) != baseline.BOT_RATE:
                    continue
                self.frames_in += 1
                out = up.resample_chunk(np.frombuffer(payload, dtype="<i2"))
                if len(out):
                    self.outgoing.put_nowait(self.encode(out.tobytes()))
        writer.close()

    def encode(self, pcm: bytes) -> str:
        return json.dumps(
            {
                "bot_id": self.bot_id,
                "trigger": "realtime_audio.mixed",
                "data": {
                    "chunk": base64.b64encode(pcm).decode("ascii"),
                    "sample_rate": self.sample_rate,
                    "timestamp_ms": int(time.time() * 1000),
                },
            }
        )

    async def serve_sender(self, ws: ClientConnection) -> None:
        while True:
            await ws.send(await self.outgoing.get())
            self.outgoing.task_done()
            self.messages_out += 1

    # -- down -----------------------------------------------------------------------

    async def serve_receiver(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        async for raw in ws:
            self.messages_in += 1
            message = json.loads(raw)
            if message.get("trigger") != "realtime_audio.bot_output":
                continue
            data = message["data"]
            rate = int(data["sample_rate"])
            if self.down is None or rate != self.down_rate:
                self.playout += self.flush()
                self.down, self.down_rate = _stream(rate, baseline.BOT_RATE), rate
            pcm = np.frombuffer(base64.b64decode(data["chunk"]), dtype="<i2")
            self.playout += self.down.resample_chunk(pcm).tobytes()
            self.pending = True
            self.last_in = loop.time()
            self.wake.set()

    def flush(self) -> bytes:
        if self.down is None or not self.pending:
            return b""
        self.pending = False
        tail = self.down.resample_chunk(np.zeros(0, dtype="<i2"), last=True).tobytes()
        self.down = _stream(self.down_rate, baseline.BOT_RATE)
        return bytes(tail)

    async def serve_clock(self) -> None:
        loop = asyncio.get_running_loop()
        period = FRAME_MS / 1000
        frame = baseline.BOT_RATE * FRAME_MS // 1000 * 2
        deadline = loop.time()
        playing = False
        while True:
            if not self.playout and not self.pending:
                playing = False
                self.wake.clear()
                await self.wake.wait()
                deadline = loop.time()
            if (
                len(self.playout) < frame
                and self.pending
                and loop.time() - self.last_in > FLUSH_AFTER_S
            ):
                self.playout += self.flush()
            if len(self.playout) >= frame:
                self.write(bytes(self.playout[:frame]))
                del self.playout[:frame]
                playing = True
            elif self.playout and not self.pending:
                self.write(bytes(self.playout) + bytes(frame - len(self.playout)))
                self.playout.clear()
            elif playing:
                self.underruns += 1
                playing = False
            deadline += period
            now = loop.time()
            if now - deadline > MAX_LATE_PERIODS * period:
                deadline = now
            await asyncio.sleep(max(0.0, deadline - now))

    def write(self, pcm: bytes) -> None:
        if self.bot is None or self.bot.is_closing():
            self.dropped_no_bot += 1
            return
        self.bot.write(baseline.encode_audio(pcm))
        self.frames_out += 1

    async def on_audio_out(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.bot = writer
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass
        self.bot = None
        writer.close()

    # -- lifecycle ---------------------------------------------------------------------

    async def serve_link(self) -> None:
        async with connect(self.url, max_size=None) as ws:
            self.ws = ws
            self.connected.set()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.serve_sender(ws))
                tasks.create_task(self.serve_receiver(ws))

    def stats(self) -> dict[str, int]:
        return {
            "frames_in": self.frames_in,
            "messages_out": self.messages_out,
            "messages_in": self.messages_in,
            "frames_out": self.frames_out,
            "underruns": self.underruns,
            "dropped_no_bot": self.dropped_no_bot,
            "queued": self.outgoing.qsize(),
        }


async def run(args: argparse.Namespace) -> int:
    sidecar = SoxrSidecar(args.url, args.bot_id, args.sample_rate)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    paths: tuple[Path, Path] = (args.audio_in, args.audio_out)
    for path in paths:
        path.unlink(missing_ok=True)
    audio_in = await asyncio.start_unix_server(sidecar.on_audio_in, path=str(paths[0]))
    audio_out = await asyncio.start_unix_server(sidecar.on_audio_out, path=str(paths[1]))
    for path in paths:
        os.chmod(path, 0o600)
    tasks = [
        asyncio.create_task(sidecar.serve_link()),
        asyncio.create_task(sidecar.serve_clock()),
    ]
    baseline.emit("ready", pid=os.getpid(), impl="soxr-stream")
    interval: float = args.stats_interval
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if not stop.is_set():
            baseline.emit("stats", **sidecar.stats())
    # Graceful: what is queued goes out before the close.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            await sidecar.outgoing.join()
    for task in tasks:
        task.cancel()
    for server in (audio_in, audio_out):
        server.close()
    if sidecar.ws is not None:
        await sidecar.ws.close()
    for path in paths:
        path.unlink(missing_ok=True)
    baseline.emit("stats", **sidecar.stats())
    baseline.emit("stopped", reason="signal", exit_code=0)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = baseline.parser("bench.soxr_stream", __doc__ or "").parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
