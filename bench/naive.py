"""The naive baseline process: Attendee's approach (CONTEXT.md section 1), same sockets.

`python -m bench.naive --url ws://... --audio-in PATH --audio-out PATH`

Threads, as Attendee runs them: one reads the bot's frames, converts each with
`audioop.ratecv` (state thrown away per chunk) and queues `json.dumps` text on
an unbounded queue; a sender thread owns the synchronous `websockets` client,
which connects lazily when the first outgoing audio exists (audio produced
before that is dropped) and has no keepalive ping; a receiver thread turns
`bot_output` into 48 kHz by sample repetition and re-cuts it into 100 ms
pieces (a tail under 100 ms is dropped when the next message is more than
150 ms late); a player thread pushes the pieces to the bot about ten times
faster than real time. Only the measured path is here: no retries, no TLS.

`--converter libsamplerate` swaps `ratecv` and sample repetition for the
sidecar's own converter (`sidecar.resample.Resampler` at `medium`, stateful,
one per direction) and changes nothing else: Attendee's design with the
sidecar's fidelity, the cheapest process that filters as the sidecar does. The
bench sets it beside soxr-stream to show what the fixed resampler alone costs.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Final

from websockets.sync.client import ClientConnection, connect

from bench import attendee, baseline
from sidecar.resample import Resampler

CONVERTERS: Final = ("ratecv", "libsamplerate")

PIECE_MS: Final = 100
PUSH_SPEEDUP: Final = 10
TAIL_LATE_S: Final = 0.150


class Naive:
    def __init__(self, url: str, bot_id: str, sample_rate: int, converter: str = "ratecv") -> None:
        self.url = url
        self.converter = converter
        # One stateful converter per direction and rate pair (libsamplerate only).
        self._resamplers: dict[tuple[int, int], Resampler] = {}
        self.bot_id = bot_id
        self.sample_rate = sample_rate
        self.outgoing: queue.Queue[str | None] = queue.Queue()
        self.pieces: queue.Queue[bytes | None] = queue.Queue()
        self.want_connection = threading.Event()
        self.connected = threading.Event()
        self.stopping = threading.Event()
        self.ws: ClientConnection | None = None
        self.tail = b""
        self.last_output = 0.0
        self.frames_in = 0
        self.dropped_before_connect = 0
        self.messages_out = 0
        self.messages_in = 0
        self.pieces_out = 0
        self.tails_dropped = 0

    # -- the bot's audio, up ------------------------------------------------------

    def serve_audio_in(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        frames = baseline.FrameBuffer()
        with conn:
            while data := conn.recv(65536):
                for kind, payload in frames.feed(data):
                    rate = baseline.KIND_RATES.get(kind)
                    if rate is not None:
                        self.on_audio(payload, rate)

    def on_audio(self, pcm: bytes, rate: int) -> None:
        self.frames_in += 1
        if not self.connected.is_set():
            self.want_connection.set()
            self.dropped_before_connect += 1
            return
        out = self.convert(pcm, rate, self.sample_rate)
        self.outgoing.put(attendee.encode_mixed(self.bot_id, out, self.sample_rate))

    def convert(self, pcm: bytes, in_rate: int, out_rate: int) -> bytes:
        if self.converter == "ratecv":
            return attendee.convert(pcm, in_rate, out_rate)
        key = (in_rate, out_rate)
        resampler = self._resamplers.get(key)
        if resampler is None:
            resampler = self._resamplers[key] = Resampler(in_rate, out_rate, "medium")
        return resampler.process(pcm)

    def serve_sender(self) -> None:
        self.want_connection.wait()
        if self.stopping.is_set():
            return
        self.ws = connect(self.url, ping_interval=None, max_size=None)
        self.connected.set()
        threading.Thread(target=self.serve_receiver, args=(self.ws,), daemon=True).start()
        while (message := self.outgoing.get()) is not None:
            self.ws.send(message)
            self.messages_out += 1

    # -- the server's audio, down ---------------------------------------------------

    def serve_receiver(self, ws: ClientConnection) -> None:
        for raw in ws:
            self.messages_in += 1
            message = json.loads(raw)
            if message.get("trigger") == "realtime_audio.bot_output":
                data = message["data"]
                self.on_bot_output(base64.b64decode(data["chunk"]), int(data["sample_rate"]))

    def on_bot_output(self, pcm: bytes, rate: int) -> None:
        now = time.monotonic()
        if self.tail and now - self.last_output > TAIL_LATE_S:
            self.tail = b""
            self.tails_dropped += 1
        self.last_output = now
        audio = self.tail + self.convert(pcm, rate, baseline.BOT_RATE)
        piece = baseline.BOT_RATE * PIECE_MS // 1000 * 2
        whole = len(audio) - len(audio) % piece
        for i in range(0, whole, piece):
            self.pieces.put(audio[i : i + piece])
        self.tail = audio[whole:]

    def serve_player(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            while (piece := self.pieces.get()) is not None:
                conn.sendall(baseline.encode_audio(piece))
                self.pieces_out += 1
                time.sleep(PIECE_MS / 1000 / PUSH_SPEEDUP)

    # -- lifecycle ---------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        return {
            "frames_in": self.frames_in,
            "dropped_before_connect": self.dropped_before_connect,
            "messages_out": self.messages_out,
            "messages_in": self.messages_in,
            "pieces_out": self.pieces_out,
            "tails_dropped": self.tails_dropped,
            "queued": self.outgoing.qsize(),
        }

    def stop(self) -> None:
        self.stopping.set()
        self.want_connection.set()
        # Let queued audio go out, as a graceful Attendee shutdown would.
        self.outgoing.put(None)
        self.pieces.put(None)


def main(argv: Sequence[str] | None = None) -> int:
    p = baseline.parser("bench.naive", __doc__ or "")
    p.add_argument("--converter", choices=CONVERTERS, default=CONVERTERS[0])
    args = p.parse_args(argv)
    naive = Naive(args.url, args.bot_id, args.sample_rate, args.converter)
    audio_in = baseline.listen(args.audio_in)
    audio_out = baseline.listen(args.audio_out)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sender = threading.Thread(target=naive.serve_sender, daemon=True)
    for target, arg in ((naive.serve_audio_in, audio_in), (naive.serve_player, audio_out)):
        threading.Thread(target=target, args=(arg,), daemon=True).start()
    sender.start()
    name = "naive" if args.converter == "ratecv" else f"naive/{args.converter}"
    baseline.emit("ready", pid=os.getpid(), impl=name)
    while not stop.wait(args.stats_interval):
        baseline.emit("stats", **naive.stats())
    naive.stop()
    sender.join(timeout=3)
    if naive.ws is not None:
        naive.ws.close()
    for sock, path in ((audio_in, args.audio_in), (audio_out, args.audio_out)):
        sock.close()
        path.unlink(missing_ok=True)
    baseline.emit("stats", **naive.stats())
    baseline.emit("stopped", reason="signal", exit_code=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
