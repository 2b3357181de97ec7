"""Scheduler passes per 20 ms frame on the hot path: counted, so a regression fails.

The real `service.Sidecar` runs inside the test's trio run, between a real
websocket server (a thread) and a bot in another thread (blocking sockets, so
none of the bot's own work is counted). The bot writes 48 kHz frames of 20 ms
on a real-time schedule and in lockstep: frame k+1 only once the server holds
message k. A trio Instrument (bench.counted.Counts, what `make bench` counts
with too) counts scheduler passes (`after_io_wait`) and task steps over N
frames after a warm-up. Nothing here is timed: only counted.

Design targets: uplink only, one pass per frame (the uplink task reads the
frame, resamples, encodes and writes the websocket frame itself); duplex, with
the server echoing every message back as bot_output, about three (the uplink,
trio-websocket's reader delivering the echo, the playout clock's tick). The
bounds leave room for an odd extra wake-up, not for a second pass per frame.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from support import WsServer, sidecar_args, tone, wait_until

from bench.counted import Counts, Created
from sidecar import cli, events, frames, service

WARMUP = 20
FRAMES = 200
FRAME_S = 0.020
RATE = 48000
STEP_TIMEOUT_S = 5.0
UPLINK_MAX = 1.5
DUPLEX_MAX = 3.5


class Lockstep:
    """What the server thread has received, for the bot thread to wait on."""

    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.received = 0
        self.cond = threading.Condition()

    def on_message(self, server: WsServer, conn: object, message: dict[str, Any]) -> None:
        if message.get("trigger") != "realtime_audio.mixed":
            return
        if self.echo:
            data = message["data"]
            server.send(
                json.dumps(
                    {
                        "trigger": "realtime_audio.bot_output",
                        "data": {"chunk": data["chunk"], "sample_rate": data["sample_rate"]},
                    }
                )
            )
        with self.cond:
            self.received += 1
            self.cond.notify_all()

    def wait_for(self, n: int) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.received >= n, STEP_TIMEOUT_S):
                raise TimeoutError(f"the server has {self.received} messages, not {n}")


@dataclass
class Window:
    passes: int
    steps: int
    frames: int
    events_created: int
    cancel_scopes: int
    played: int
    log_at: int


@dataclass
class Measured:
    frames: int
    passes: int
    steps: int
    events_created: int
    cancel_scopes: int
    played: int
    by_pass: Counter[str]

    @property
    def passes_per_frame(self) -> float:
        return self.passes / self.frames

    def explain(self) -> str:
        lines = [
            f"{self.passes} passes, {self.steps} task steps over {self.frames} frames "
            f"({self.passes_per_frame:.3f} passes/frame, {self.steps / self.frames:.3f} "
            f"steps/frame); {self.events_created} trio.Event and {self.cancel_scopes} "
            f"CancelScope created; {self.played} frames played. Passes by the tasks they "
            "stepped, per frame:"
        ]
        lines += [
            f"  {count / self.frames:6.3f}  {what or '(nothing)'}"
            for what, count in self.by_pass.most_common(12)
        ]
        return "\n".join(lines)


def _frames() -> list[bytes]:
    pcm = tone(440, (WARMUP + FRAMES) * FRAME_S, RATE, level=0.25)
    step = RATE * 20 // 1000 * 2
    return [frames.encode_audio(pcm[i : i + step], RATE) for i in range(0, len(pcm), step)]


FRAME_BYTES = 3 + RATE * 20 // 1000 * 2
"""One 20 ms AudioSocket frame at 48 kHz, as the sidecar writes them to audio-out."""


def _speaker(sock: socket.socket, got: list[int]) -> None:
    """The bot's speaker: reads audio-out (bytes into got[0]) until the sidecar hangs up."""
    try:
        while data := sock.recv(65536):
            got[0] += len(data)
    except OSError:
        pass


def _bot(
    path: Path,
    lockstep: Lockstep,
    counts: Counts,
    created: Created,
    heard: list[int],
    windows: list[Window],
) -> None:
    """Frames on a 20 ms schedule, each only after the server holds the one before.

    Touches nothing of the sidecar's: the counters are plain ints it reads, the frames
    are its own count (the lockstep makes the sidecar's the same), and what was played
    is what its speaker thread read."""
    sent = 0

    def mark() -> None:
        windows.append(
            Window(
                counts.passes,
                counts.steps,
                sent,
                created.events,
                created.cancel_scopes,
                heard[0] // FRAME_BYTES,
                len(counts.log or ()),
            )
        )

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bot:
        bot.connect(str(path))
        start = time.monotonic()
        for k, frame in enumerate(_frames()):
            if k == WARMUP:
                mark()
            delay = start + k * FRAME_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            bot.sendall(frame)
            lockstep.wait_for(k + 1)
            sent += 1
        mark()


async def _measure(tmp_path: Path, *, duplex: bool) -> Measured:
    lockstep = Lockstep(echo=duplex)
    counts = Counts()
    created = Created()
    windows: list[Window] = []
    with trio.fail_after(60), WsServer(on_message=lockstep.on_message) as server:
        args = sidecar_args(
            server.url, tmp_path, "--ping-interval", "3600", "--ping-timeout", "60",
            stats_interval=3600,
        )  # fmt: skip
        config = cli.build_config(cli.parser().parse_args(["run", *args]))
        sidecar = service.Sidecar(config, events.EventLog(io.BytesIO()))
        speaker: socket.socket | None = None
        got = [0]
        async with trio.open_nursery() as nursery:
            await nursery.start(sidecar.run)
            await wait_until(lambda: sidecar.link.accepting_audio, 10, "connected")
            if duplex:
                speaker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                speaker.connect(str(tmp_path / "out.sock"))
                threading.Thread(target=_speaker, args=(speaker, got), daemon=True).start()
                await wait_until(lambda: sidecar.downlink._bot is not None, 10, "speaker")
            log = counts.record()
            trio.lowlevel.add_instrument(counts)
            created.install()
            try:
                await trio.to_thread.run_sync(
                    _bot,
                    tmp_path / "in.sock",
                    lockstep,
                    counts,
                    created,
                    got,
                    windows,
                    abandon_on_cancel=True,
                )
            finally:
                created.uninstall()
                trio.lowlevel.remove_instrument(counts)
            frames_in = sidecar.uplink.statistics().frames_in
            sidecar.stop("test done")
        if speaker is not None:
            speaker.close()
    a, b = windows
    # The sidecar read every frame the bot wrote: the lockstep held.
    assert frames_in == WARMUP + FRAMES
    return Measured(
        frames=b.frames - a.frames,
        passes=b.passes - a.passes,
        steps=b.steps - a.steps,
        events_created=b.events_created - a.events_created,
        cancel_scopes=b.cancel_scopes - a.cancel_scopes,
        played=b.played - a.played,
        by_pass=Counter(" + ".join(p) for p in log[a.log_at : b.log_at]),
    )


async def test_uplink_one_pass_per_frame(tmp_path: Path) -> None:
    measured = await _measure(tmp_path, duplex=False)
    print(measured.explain())
    assert measured.frames == FRAMES
    assert measured.passes_per_frame <= UPLINK_MAX, measured.explain()


async def test_duplex_passes_per_frame(tmp_path: Path) -> None:
    measured = await _measure(tmp_path, duplex=True)
    print(measured.explain())
    assert measured.frames == FRAMES
    # The echo really played: the clock's ticks are part of what is counted.
    assert measured.played >= FRAMES - 5
    assert measured.passes_per_frame <= DUPLEX_MAX, measured.explain()
