"""Shared harness for end-to-end tests.

- WsServer: a real websocket server built on the `websockets` package (not our
  client library, so interop is what is tested), threaded, recording every
  message and scriptable from the test.
- SidecarProcess: the real `python -m sidecar run` subprocess, its JSON-lines
  events parsed as they arrive.
- Bot helpers: real Unix sockets, AudioSocket frames, paced like a bot.
- Signal helpers: tones, dominant frequency, level.
"""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from sidecar import frames

REPO = Path(__file__).resolve().parent.parent
Json = dict[str, Any]

# -- waiting -------------------------------------------------------------------


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll a condition shared with another thread or process."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


# -- the websocket server --------------------------------------------------------


@dataclass
class Connection:
    ws: ServerConnection
    request_headers: Headers
    received: list[Json] = field(default_factory=list)
    raw: list[str | bytes] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)
    close_code: int | None = None


Reply = Callable[["WsServer", Connection, Json], None]
RequestHook = Callable[[ServerConnection, Request], Response | None]


class WsServer:
    """websockets' threaded server on 127.0.0.1, port 0.

    `on_message(server, conn, message)` runs in the connection's thread for
    every JSON message received; `process_request` may reject handshakes.
    """

    def __init__(
        self,
        on_message: Reply | None = None,
        process_request: RequestHook | None = None,
        ssl_context: Any = None,
    ) -> None:
        self.on_message = on_message
        self._process_request = process_request
        self._ssl = ssl_context
        self.connections: list[Connection] = []
        self.handshakes = 0
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.socket.getsockname()[1])

    @property
    def url(self) -> str:
        scheme = "wss" if self._ssl is not None else "ws"
        host = "localhost" if self._ssl is not None else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}/audio"

    def start(self, port: int = 0) -> WsServer:
        self._server = serve(
            self._handle,
            "127.0.0.1",
            port,
            process_request=self._request,
            ssl=self._ssl,
            max_size=None,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> WsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _request(self, ws: ServerConnection, request: Request) -> Response | None:
        with self._lock:
            self.handshakes += 1
        if self._process_request is not None:
            return self._process_request(ws, request)
        return None

    def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        conn = Connection(ws, ws.request.headers)
        with self._lock:
            self.connections.append(conn)
        try:
            for raw in ws:
                conn.raw.append(raw)
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                conn.received.append(message)
                if self.on_message is not None:
                    self.on_message(self, conn, message)
        except Exception:  # a dropped connection ends the handler, however it drops
            pass
        finally:
            conn.close_code = ws.close_code
            conn.closed.set()

    # -- views for assertions --------------------------------------------------

    @property
    def current(self) -> Connection:
        with self._lock:
            return self.connections[-1]

    def messages(self, trigger: str | None = None) -> list[Json]:
        with self._lock:
            conns = list(self.connections)
        return [
            m for c in conns for m in list(c.received) if trigger is None or m["trigger"] == trigger
        ]

    def audio(self, trigger: str = "realtime_audio.mixed") -> bytes:
        return b"".join(base64.b64decode(m["data"]["chunk"]) for m in self.messages(trigger))

    def send(self, message: Json | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        self.current.ws.send(text)


def bot_output(pcm: bytes, rate: int) -> Json:
    return {
        "trigger": "realtime_audio.bot_output",
        "data": {"chunk": base64.b64encode(pcm).decode(), "sample_rate": rate},
    }


# -- the sidecar process -----------------------------------------------------------


class SidecarProcess:
    """`python -m sidecar run ...` with its events parsed as they arrive."""

    def __init__(
        self, args: list[str], pass_fds: tuple[int, ...] = (), env: dict[str, str] | None = None
    ) -> None:
        self.args = args
        self.pass_fds = pass_fds
        self.env = env or {}
        self.events: list[Json] = []
        self.stderr = b""
        # A bytearray: appending to bytes copied all of it per read (quadratic).
        self.stdout = bytearray()
        self.process: trio.Process | None = None
        self._changed = trio.Event()

    async def start(self, nursery: trio.Nursery, wait_ready: bool = True) -> SidecarProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self.process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "sidecar", "run", *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=self.pass_fds,
            cwd=REPO,
            env=env,
        )
        nursery.start_soon(self._read_stdout)
        nursery.start_soon(self._read_stderr)
        if wait_ready:
            await self.wait_event("ready", timeout=15)
        return self

    async def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        buf = b""
        async for data in self.process.stdout:
            self.stdout += data
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    self.events.append(json.loads(line))
            self._changed.set()
            self._changed = trio.Event()

    async def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for data in self.process.stderr:
            self.stderr += data

    def named(self, name: str) -> list[Json]:
        return [e for e in self.events if e["event"] == name]

    async def wait_event(
        self, name: str, predicate: Callable[[Json], bool] | None = None, timeout: float = 10.0
    ) -> Json:
        with trio.fail_after(timeout):
            while True:
                for event in self.events:
                    if event["event"] == name and (predicate is None or predicate(event)):
                        return event
                if self.process is not None and self.process.returncode is not None:
                    await trio.sleep(0.05)  # let the readers drain the last lines
                    for event in self.events:
                        if event["event"] == name and (predicate is None or predicate(event)):
                            return event
                    raise AssertionError(
                        f"sidecar exited ({self.process.returncode}) before {name!r}; "
                        f"stderr: {self.stderr.decode(errors='replace')}"
                    )
                await self._changed.wait()

    async def stats(self, predicate: Callable[[Json], bool], timeout: float = 10.0) -> Json:
        return await self.wait_event("stats", predicate, timeout)

    async def wait(self, timeout: float = 10.0) -> int:
        assert self.process is not None
        with trio.fail_after(timeout):
            return await self.process.wait()

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        code = await self.wait(timeout)
        await trio.sleep(0.05)
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()


@asynccontextmanager
async def open_sidecar(
    args: list[str], pass_fds: tuple[int, ...] = (), wait_ready: bool = True
) -> AsyncIterator[SidecarProcess]:
    """A sidecar that is always killed and reaped, whatever the test does."""
    async with trio.open_nursery() as nursery:
        sidecar = SidecarProcess(args, pass_fds)
        try:
            await sidecar.start(nursery, wait_ready=wait_ready)
            yield sidecar
        finally:
            sidecar.kill()
            if sidecar.process is not None:
                with trio.move_on_after(5) as scope:
                    scope.shield = True
                    await sidecar.process.wait()
            nursery.cancel_scope.cancel()


@dataclass
class BotLoop:
    """A sidecar with a bot on both of its sockets."""

    sidecar: SidecarProcess
    speaker: Speaker
    bot: trio.SocketStream


@asynccontextmanager
async def open_bot_loop(
    url: str, tmp: Path, *extra: str, env: dict[str, str] | None = None
) -> AsyncIterator[BotLoop]:
    """The real sidecar on `url`, its speaker read from the start; SIGTERM after."""
    async with trio.open_nursery() as nursery:
        sidecar = await SidecarProcess(sidecar_args(url, tmp, *extra), env=env).start(nursery)
        await sidecar.wait_event("connected", timeout=20)
        speaker = Speaker(await trio.open_unix_socket(str(tmp / "out.sock")))
        nursery.start_soon(speaker.serve)
        await sidecar.wait_event("bot_connected", lambda e: e["socket"] == "out")
        bot = await trio.open_unix_socket(str(tmp / "in.sock"))
        yield BotLoop(sidecar, speaker, bot)
        assert await sidecar.stop() == 0
        nursery.cancel_scope.cancel()


def sidecar_args(url: str, tmp: Path, *extra: str, stats_interval: float = 0.2) -> list[str]:
    """The flags of a test's sidecar. The silence fill is off unless the test
    names it: most tests count exactly the audio their bot wrote."""
    fill = () if "--fill-silence" in extra else ("--fill-silence", "off")
    return [
        "--url",
        url,
        "--audio-in",
        str(tmp / "in.sock"),
        "--audio-out",
        str(tmp / "out.sock"),
        "--stats-interval",
        str(stats_interval),
        "--bot-id",
        "bot_test",
        *extra,
        *fill,
    ]


# -- the bot ---------------------------------------------------------------------------


def tone(freq: float, seconds: float, rate: int = 48000, level: float = 0.5) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * level * 32767).round().astype("<i2").tobytes()


def frame_stream(pcm: bytes, rate: int = 48000, frame_ms: int = 20) -> Iterator[bytes]:
    step = rate * frame_ms // 1000 * 2
    for i in range(0, len(pcm), step):
        yield frames.encode_audio(pcm[i : i + step], rate)


async def play(
    stream: trio.abc.SendStream,
    pcm: bytes,
    rate: int = 48000,
    frame_ms: int = 20,
    realtime: bool = True,
) -> None:
    """Write `pcm` as AudioSocket frames, paced like a bot (absolute schedule)."""
    start = trio.current_time()
    for n, frame in enumerate(frame_stream(pcm, rate, frame_ms)):
        if realtime:
            await trio.sleep_until(start + n * frame_ms / 1000)
        await stream.send_all(frame)


class Speaker:
    """The bot's side of audio-out: reads frames and timestamps their arrival."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.decoder = frames.FrameDecoder()
        self.frames: list[frames.Frame | frames.FrameError] = []
        self.arrivals: list[float] = []
        self.eof = False

    async def serve(self) -> None:
        while True:
            data = await self.stream.receive_some(65536)
            if not data:
                self.eof = True
                return
            self.decoder.feed(bytes(data))
            for event in self.decoder:
                self.frames.append(event)
                self.arrivals.append(trio.current_time())

    @property
    def pcm(self) -> bytes:
        return b"".join(f.pcm for f in self.frames if isinstance(f, frames.Audio))

    @property
    def audio_frames(self) -> list[frames.Audio]:
        return [f for f in self.frames if isinstance(f, frames.Audio)]


async def read_frames(stream: trio.abc.ReceiveStream) -> list[frames.Frame | frames.FrameError]:
    """Everything the sidecar writes until it closes the connection."""
    decoder = frames.FrameDecoder()
    out: list[frames.Frame | frames.FrameError] = []
    while data := await stream.receive_some(65536):
        decoder.feed(bytes(data))
        out.extend(decoder)
    return out


# -- signal analysis ----------------------------------------------------------------------


def samples(pcm: bytes) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def dominant_frequency(pcm: bytes, rate: int) -> float:
    x = samples(pcm)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[0] = 0
    return float(np.argmax(spectrum) * rate / len(x))


def tone_snr_db(pcm: bytes, rate: int, freq: float, edge_s: float = 0.04) -> float:
    """The best-fitting sinusoid at `freq` is the signal, all else (clicks,
    gaps, filter restarts) the noise; the stream's own start and end left out."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    edge = int(edge_s * rate)
    x = x[edge : len(x) - edge]
    t = (np.arange(len(x)) + edge) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    fit, *_ = np.linalg.lstsq(basis, x, rcond=None)
    signal = basis @ fit
    noise = x - signal
    return float(10 * np.log10(np.dot(signal, signal) / np.dot(noise, noise)))


def level_db(pcm: bytes) -> float:
    x = samples(pcm)
    rms = math.sqrt(float(np.mean(x * x))) if len(x) else 0.0
    return 20 * math.log10(max(rms, 1e-9) / 32768)


@contextmanager
def socketpair_fds() -> Iterator[tuple[Any, Any]]:
    """A connected pair: (ours, theirs); `theirs` is passed to the sidecar."""
    import socket

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.close()
