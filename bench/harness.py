"""The test bot, the websocket server and the process under test, on one asyncio loop.

A `Lane` is one stream end to end: the bot's two Unix sockets (frames written
on an absolute real-time schedule, frames read and timestamped) and the
server's side of that process's websocket connection (messages timestamped
on arrival, scripted `bot_output` sent). Every timestamp is `loop.time()`
(CLOCK_MONOTONIC), so bot and server times compare directly; the analysis
lives in `bench.analysis`.

The server is the `websockets` package's asyncio server, with compression
off so every contender speaks the same wire format.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import psutil
from websockets.asyncio.server import Server, ServerConnection, serve

from bench import baseline, twilio
from bench.converters import ConverterName
from sidecar.resample import Quality, Resampler

REPO: Final = Path(__file__).resolve().parent.parent
BOT_RATE: Final = 48000
FRAME_MS: Final = 20
FRAME_S: Final = FRAME_MS / 1000
FRAME_SAMPLES: Final = BOT_RATE * FRAME_MS // 1000
# Above this much unsent data the bot waits for the process to read (flat-out mode).
WRITE_HIGH_WATER: Final = 1 << 16
STDERR_KEEP: Final = 1 << 16

Json = dict[str, Any]


def now() -> float:
    return asyncio.get_running_loop().time()


async def sleep_until(deadline: float) -> None:
    delay = deadline - now()
    if delay > 0:
        await asyncio.sleep(delay)


def _tone_pcm(freqs: Sequence[float], seconds: float, rate: int, level: float) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * f * t) for f in freqs) * (level / len(freqs))
    return (np.asarray(x) * 32767).round().astype("<i2").tobytes()


def uplink_frames() -> list[bytes]:
    """One second of the bot's audio (two tones, -12 dBFS), as 50 AudioSocket frames."""
    pcm = _tone_pcm((300.0, 1100.0), 1.0, BOT_RATE, 0.25)
    step = FRAME_SAMPLES * 2
    return [baseline.encode_audio(pcm[i : i + step]) for i in range(0, len(pcm), step)]


@dataclass(frozen=True, slots=True)
class Script:
    """What the server says: alternately one burst message and a real-time stream."""

    utterance_ms: int = 700
    period_s: float = 1.0
    rate: int = 16000

    @property
    def bot_samples(self) -> int:
        return BOT_RATE * self.utterance_ms // 1000

    def pcm(self) -> bytes:
        """Every utterance says the same: a 440 Hz tone at -12 dBFS."""
        return _tone_pcm((440.0,), self.utterance_ms / 1000, self.rate, 0.25)

    def texts(self) -> tuple[str, list[str]]:
        pcm = self.pcm()
        step = self.rate * FRAME_MS // 1000 * 2
        burst = _bot_output(pcm, self.rate)
        stream = [_bot_output(pcm[i : i + step], self.rate) for i in range(0, len(pcm), step)]
        return burst, stream


def _bot_output(pcm: bytes, rate: int) -> str:
    return json.dumps(
        {
            "trigger": "realtime_audio.bot_output",
            "data": {"chunk": base64.b64encode(pcm).decode("ascii"), "sample_rate": rate},
        }
    )


@dataclass(frozen=True, slots=True)
class Utterance:
    kind: str
    sent: float
    """When its first message was handed to the websocket."""
    samples: int
    """Its length at the bot's rate."""


@dataclass(slots=True)
class Arrivals:
    """One uplink stream at the server: when each message arrived and how many samples."""

    t: list[float] = field(default_factory=list)
    n: list[int] = field(default_factory=list)
    samples: int = 0

    def add(self, t: float, n: int) -> None:
        self.t.append(t)
        self.n.append(n)
        self.samples += n


def _chunk_samples(message: Json) -> int:
    chunk: str = message["data"]["chunk"]
    padding = len(chunk) - len(chunk.rstrip("="))
    return (len(chunk) * 3 // 4 - padding) // 2


class Lane:
    def __init__(
        self,
        name: str,
        workdir: Path,
        sample_rate: int = 16000,
        keep_audio: bool = False,
        protocol: str = "attendee",
    ) -> None:
        self.name = name
        self.keep_audio = keep_audio
        self.protocol = protocol
        """The dialect the server speaks: `attendee`, or `twilio` (bench.twilio)."""
        self.audio_in = workdir / f"{name}.in.sock"
        self.audio_out = workdir / f"{name}.out.sock"
        self.sample_rate = sample_rate
        self.frames = uplink_frames()
        # Uplink: when the bot wrote frame k; when each message arrived and how long it was.
        self.writes: list[float] = []
        self.mixed = Arrivals()
        """`realtime_audio.mixed` messages."""
        self.participants: dict[str, Arrivals] = {}
        """`realtime_audio.per_participant` messages, by `participant_uuid`."""
        self.other_messages: collections.Counter[str] = collections.Counter()
        self.bad_messages = 0
        # Downlink: what the server sent; when each frame reached the bot and how long.
        self.utterances: list[Utterance] = []
        self.arrival_t: list[float] = []
        self.arrival_n: list[int] = []
        self.arrival_pcm: list[bytes] = []
        """Each frame's audio, with `keep_audio`."""
        self.ws: ServerConnection | None = None
        self.connected = asyncio.Event()
        self.connections = 0
        self._message = asyncio.Event()
        self._bot: asyncio.StreamWriter | None = None
        self._speaker: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def path(self) -> str:
        return f"/lane/{self.name}"

    @property
    def received_t(self) -> list[float]:
        return self.mixed.t

    @property
    def received_n(self) -> list[int]:
        return self.mixed.n

    @property
    def samples_received(self) -> int:
        return self.mixed.samples

    # -- server side ------------------------------------------------------------

    async def serve(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.connections += 1
        self.connected.set()
        loop = asyncio.get_running_loop()
        parse = self._twilio if self.protocol == "twilio" else self._attendee
        with contextlib.suppress(Exception):
            async for raw in ws:
                t = loop.time()
                try:
                    parse(json.loads(raw), t)
                except (ValueError, KeyError, TypeError):
                    self.bad_messages += 1
        if self.ws is ws:
            self.ws = None
            self.connected.clear()

    def _attendee(self, message: Json, t: float) -> None:
        trigger = message.get("trigger")
        if trigger == "realtime_audio.mixed":
            self.mixed.add(t, _chunk_samples(message))
            self._message.set()
        elif trigger == "realtime_audio.per_participant":
            who = str(message["data"]["participant_uuid"])
            self.participants.setdefault(who, Arrivals()).add(t, _chunk_samples(message))
            self._message.set()
        else:
            self.other_messages[str(trigger)] += 1

    def _twilio(self, message: Json, t: float) -> None:
        samples = twilio.media_samples(message)
        if samples is None:
            self.other_messages[str(message.get("event"))] += 1
        else:
            self.mixed.add(t, samples)
            self._message.set()

    async def quiet(self, quiet_s: float, give_up_s: float) -> float:
        """Wait until no message has arrived for `quiet_s`; returns the last arrival."""
        deadline = now() + give_up_s
        while now() < deadline:
            self._message.clear()
            try:
                await asyncio.wait_for(self._message.wait(), quiet_s)
            except TimeoutError:
                break
        return self.received_t[-1] if self.received_t else now()

    async def received_at_least(self, samples: int, quiet_s: float, give_up_s: float) -> bool:
        """Wait for `samples` in total, or until the stream has been quiet for `quiet_s`."""
        deadline = now() + give_up_s
        while self.samples_received < samples and now() < deadline:
            self._message.clear()
            try:
                await asyncio.wait_for(self._message.wait(), quiet_s)
            except TimeoutError:
                return False
        return self.samples_received >= samples

    async def talk(self, stop: asyncio.Event, script: Script, offset: float = 0.0) -> None:
        """Utterances every `period_s` until `stop`; an utterance started is finished."""
        burst, stream = twilio.texts(script) if self.protocol == "twilio" else script.texts()
        start = now() + offset
        k = 0
        while not stop.is_set():
            at = start + k * script.period_s
            await _wait_until_or(stop, at)
            if stop.is_set():
                return
            ws = self.ws
            if ws is None:
                return
            if k % 2 == 0:
                self.utterances.append(Utterance("burst", now(), script.bot_samples))
                await ws.send(burst)
            else:
                for j, text in enumerate(stream):
                    await sleep_until(at + j * FRAME_S)
                    if j == 0:
                        self.utterances.append(Utterance("stream", now(), script.bot_samples))
                    await ws.send(text)
            k += 1

    # -- bot side -------------------------------------------------------------------

    async def connect_bot(self) -> None:
        """The speaker first, so no bot output is dropped for want of a reader."""
        reader, self._speaker = await _open_unix(self.audio_out)
        self._tasks.append(asyncio.create_task(self._listen(reader)))
        _, self._bot = await _open_unix(self.audio_in)

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        frames = baseline.FrameBuffer()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                t = loop.time()
                for kind, payload in frames.feed(data):
                    if kind in baseline.KIND_RATES:
                        self.arrival_t.append(t)
                        self.arrival_n.append(len(payload) // 2)
                        if self.keep_audio:
                            self.arrival_pcm.append(payload)

    async def play(self, stop: asyncio.Event, offset: float = 0.0) -> None:
        """Frames on an absolute 20 ms schedule until `stop`."""
        assert self._bot is not None
        await _play(self._bot, self.frames, self.writes, stop, offset)

    async def flood(self, frames: int, window: int | None = None, slack: int = 0) -> None:
        """`frames` frames as fast as the process takes them.

        With `window`, closed loop: frame i is written only once the server holds the
        output of frame i - window (less `slack` samples a converter may hold back), so
        a process that can keep up never has more than `window` frames in flight.
        """
        assert self._bot is not None
        bot = self._bot
        loop = asyncio.get_running_loop()
        per_frame = self.sample_rate * FRAME_MS // 1000
        base = self.samples_received
        for i in range(frames):
            if window is not None:
                target = base + (i - window) * per_frame - slack
                while self.samples_received < target:
                    self._message.clear()
                    await self._message.wait()
            self.writes.append(loop.time())
            bot.write(self.frames[len(self.writes) % len(self.frames)])
            if bot.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                await bot.drain()
        await bot.drain()

    async def close(self) -> None:
        for writer in (self._bot, self._speaker):
            if writer is not None:
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()
        self._bot = self._speaker = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()


class Participant:
    """One participant's connection to the in-socket: its UUID frame, then audio."""

    def __init__(self, lane: Lane, uuid: bytes) -> None:
        self.lane = lane
        self.uuid = uuid
        self.writes: list[float] = []
        """When the bot wrote frame k."""
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        _, self._writer = await _open_unix(self.lane.audio_in)
        self._writer.write(baseline.encode_uuid(self.uuid))

    async def play(self, stop: asyncio.Event, offset: float = 0.0) -> None:
        assert self._writer is not None
        await _play(self._writer, self.lane.frames, self.writes, stop, offset)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
            self._writer = None


async def _play(
    bot: asyncio.StreamWriter,
    frames: Sequence[bytes],
    writes: list[float],
    stop: asyncio.Event,
    offset: float,
) -> None:
    """Frames on an absolute 20 ms schedule until `stop`; `writes` gets each write's time."""
    loop = asyncio.get_running_loop()
    start = loop.time() + offset
    k = 0
    while not stop.is_set():
        await sleep_until(start + k * FRAME_S)
        writes.append(loop.time())
        bot.write(frames[len(writes) % len(frames)])
        if bot.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            await bot.drain()
        k += 1


async def _open_unix(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    # The process may still be setting up its listener right after `ready`.
    for _ in range(100):
        try:
            return await asyncio.open_unix_connection(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            await asyncio.sleep(0.02)
    return await asyncio.open_unix_connection(str(path))


async def _wait_until_or(event: asyncio.Event, deadline: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(0.0, deadline - now()))


class BenchServer:
    def __init__(self) -> None:
        self.lanes: dict[str, Lane] = {}
        self._server: Server | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BenchServer]:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, compression=None, max_size=None, max_queue=None
        )
        try:
            yield self
        finally:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(next(iter(self._server.sockets)).getsockname()[1])

    def url(self, lane: Lane) -> str:
        return f"ws://127.0.0.1:{self.port}{lane.path}"

    def add(self, lane: Lane) -> Lane:
        self.lanes[lane.path] = lane
        return lane

    async def _handle(self, ws: ServerConnection) -> None:
        lane = self.lanes.get(ws.request.path if ws.request else "")
        if lane is None:
            await ws.close(1008, "unknown lane")
            return
        await lane.serve(ws)


# -- the process under test ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Impl:
    key: str
    label: str
    command: tuple[str, ...]
    quality: Quality | None
    eager: bool
    """Connects to the server at start (the naive baseline waits for audio)."""
    stats_underruns: bool
    """Its stats count playout underruns the way the sidecar defines them."""
    converter: ConverterName
    protocol: str = "attendee"
    """`--protocol`; the bench's server speaks attendee and twilio (bench.twilio)."""
    sample_rate: int = 16000
    """Of the audio sent to the server (twilio: 8000, G.711 mu-law)."""
    extra: tuple[str, ...] = ()
    """More `audio-sidecar run` flags (`--chunk-ms 40`, say)."""
    cwd: Path | None = None
    """Where the process starts, so `-m sidecar` finds the code there (another
    commit's, bench.before); the bench's own modules stay on PYTHONPATH. Default:
    this repository."""

    def holdback_samples(self, rate: int) -> int:
        """Output its converter may still hold while input pauses (not a drop)."""
        if self.converter == "naive":
            return 0
        if self.converter == "soxr":
            return rate // 10  # soxr's stream works in blocks of up to ~70 ms
        held = math.ceil(Resampler(BOT_RATE, rate, self.converter).delay_ms * rate / 1000) + 1
        if self.protocol == "twilio":
            held += twilio.PACKET_SAMPLES  # the dialect cuts exact 20 ms packets
        return held

    def lane(self, name: str, workdir: Path, keep_audio: bool = False) -> Lane:
        """A lane whose server speaks this contender's dialect at its rate."""
        return Lane(
            name, workdir, sample_rate=self.sample_rate, keep_audio=keep_audio,
            protocol=self.protocol,
        )  # fmt: skip

    def argv(self, url: str, lane: Lane, stats_interval: float) -> list[str]:
        args = [
            *self.command,
            "--url",
            url,
            "--audio-in",
            str(lane.audio_in),
            "--audio-out",
            str(lane.audio_out),
            "--bot-id",
            "bot_bench",
            "--sample-rate",
            str(lane.sample_rate),
            "--stats-interval",
            str(stats_interval),
        ]
        if self.quality is not None:
            args += ["--quality", self.quality]
        if self.protocol != "attendee":
            args += ["--protocol", self.protocol]
        if self.fills and "--fill-silence" not in self.extra:
            # The contenders send nothing while the bot is quiet, and the
            # bench's phases end when the server hears nothing more: the fill
            # is measured on its own (bench.hotpath.fill).
            args += ["--fill-silence", "off"]
        return args + list(self.extra)

    @property
    def fills(self) -> bool:
        """This code's sidecar, which fills by default (another commit's may not know how)."""
        return self.command in (SIDECAR, COUNTED) and self.cwd is None


SIDECAR: Final = ("-m", "sidecar", "run")
COUNTED: Final = ("-m", "bench.counted", "run")
IMPLS: Final[dict[str, Impl]] = {
    impl.key: impl
    for impl in (
        Impl("sidecar-fastest", "sidecar, fastest", SIDECAR, "fastest", True, True, "fastest"),
        Impl(
            "sidecar-medium", "sidecar, medium (default)", SIDECAR, "medium", True, True, "medium"
        ),
        Impl("sidecar-best", "sidecar, best", SIDECAR, "best", True, True, "best"),
        Impl("naive", "naive (Attendee-style)", ("-m", "bench.naive"), None, False, False, "naive"),
        # Attendee's design with the sidecar's converter: what the fixed resampler costs.
        Impl(
            "naive-src",
            "naive + libsamplerate (medium)",
            ("-m", "bench.naive", "--converter", "libsamplerate"),
            None,
            False,
            False,
            "medium",
        ),
        Impl(
            "soxr-stream",
            "soxr-stream (VHQ)",
            ("-m", "bench.soxr_stream"),
            None,
            True,
            False,
            "soxr",
        ),
        Impl(
            "sidecar-twilio",
            "sidecar, medium, --protocol twilio",
            SIDECAR,
            "medium",
            True,
            True,
            "medium",
            protocol="twilio",
            sample_rate=twilio.RATE,
        ),
        # The default sidecar under bench.counted's scheduler counters (not timed).
        Impl(
            "sidecar-counted",
            "sidecar, medium (counted)",
            COUNTED,
            "medium",
            True,
            True,
            "medium",
        ),
    )
}


@dataclass
class Proc:
    impl: Impl
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    """Added to this process's environment."""
    events: list[Json] = field(default_factory=list)
    stderr: bytearray = field(default_factory=bytearray)
    spawned: float = 0.0
    ready_at: float | None = None
    returncode: int | None = None
    _process: asyncio.subprocess.Process | None = None
    _ps: Any = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> Proc:
        self.spawned = now()
        env = dict(self.env)
        if self.impl.cwd is not None:
            # Its cwd comes first on sys.path, so its `sidecar` wins; `bench` is ours.
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            )
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.impl.cwd or REPO,
            env={**os.environ, **env} if env else None,
        )
        self._ps = psutil.Process(self._process.pid)
        self._readers = [
            asyncio.create_task(self._read_events()),
            asyncio.create_task(self._read_stderr()),
        ]
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def _read_events(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        async for line in self._process.stdout:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    self.events.append(event)
                    if event.get("event") == "ready" and self.ready_at is None:
                        self.ready_at = now()
                        self._ready.set()

    async def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        while data := await self._process.stderr.read(65536):
            self.stderr += data
            del self.stderr[:-STDERR_KEEP]

    async def ready(self, limit_s: float) -> float:
        """Seconds from spawn to the `ready` event."""
        assert self._process is not None
        waiter = asyncio.create_task(self._ready.wait())
        exited = asyncio.create_task(self._process.wait())
        await asyncio.wait({waiter, exited}, timeout=limit_s, return_when="FIRST_COMPLETED")
        waiter.cancel()
        if self.ready_at is None:
            exited.cancel()
            raise RuntimeError(f"{self.impl.key} not ready within {limit_s:g} s: {self.tail()}")
        exited.cancel()
        return self.ready_at - self.spawned

    def tail(self) -> str:
        return self.stderr[-2000:].decode(errors="replace")

    def cpu_seconds(self) -> float:
        """On-CPU time of all its threads (`cpu_seconds_of`)."""
        return cpu_seconds_of(self.pid, self._ps)

    def rss(self) -> int:
        return int(self._ps.memory_info().rss)

    def uss(self) -> int:
        """Unique set size: what this process alone holds (shared libraries excluded)."""
        return int(self._ps.memory_full_info().uss)

    def peak_rss(self) -> int:
        """VmHWM: the resident set's high-water mark since start."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return self.rss()

    def last(self, name: str) -> Json | None:
        for event in reversed(self.events):
            if event.get("event") == name:
                return event
        return None

    async def stop(self, grace_s: float = 10.0) -> int:
        process = self._process
        assert process is not None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(process.wait(), grace_s)
        except TimeoutError:
            process.kill()
            code = await process.wait()
        for reader in self._readers:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(reader, 2.0)
        self.returncode = code
        return code

    def kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()


@contextlib.asynccontextmanager
async def running(procs: Sequence[Proc]) -> AsyncIterator[None]:
    """Whatever happens inside, no process outlives the block."""
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            if proc._process is not None and proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    proc.returncode = await asyncio.wait_for(proc._process.wait(), 5)


def cpu_seconds_of(pid: int, ps: Any) -> float:
    """The kernel's exact on-CPU time of a process's live threads, in seconds.

    Each thread's sum_exec_runtime (the first field of /proc/PID/task/TID/schedstat,
    in ns): the same time psutil's user + system report, which the kernel rounds to
    10 ms ticks, too coarse for a 3 s phase of a process using 5% of a core (one tick
    is 0.33%). A thread that exits between two readings takes its time with it (the
    sidecar's only short-lived threads write events, a few ms a minute); where there
    is no schedstat, psutil's figure.
    """
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tasks = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread is gone
    if tasks and total:
        return total / 1e9
    times = ps.cpu_times()
    return float(times.user + times.system)


class CpuMeter:
    """CPU seconds per wall second of a set of processes (this one included on request)."""

    def __init__(self, procs: Sequence[Proc], include_self: bool = False) -> None:
        self._procs = list(procs)
        self._self = psutil.Process() if include_self else None
        self._start = 0.0
        self._cpu: list[float] = []
        self._self_cpu = 0.0

    def _self_seconds(self) -> float:
        if self._self is None:
            return 0.0
        return cpu_seconds_of(self._self.pid, self._self)

    def start(self) -> None:
        self._start = now()
        self._cpu = [p.cpu_seconds() for p in self._procs]
        self._self_cpu = self._self_seconds()

    def read(self) -> tuple[float, list[float], float]:
        """(wall seconds, per-process % of one core, this process's % of one core)."""
        wall = now() - self._start
        if wall <= 0:
            return 0.0, [math.nan] * len(self._procs), math.nan
        pct = [
            (p.cpu_seconds() - c) / wall * 100 for p, c in zip(self._procs, self._cpu, strict=True)
        ]
        own = (self._self_seconds() - self._self_cpu) / wall * 100
        return wall, pct, own
