"""A real Pipecat bot as the server of the Twilio or Vonage dialect.

    python tests/interop/pipecat_server.py --serializer twilio|vonage --mode echo|interrupt --port 0

Pipecat 1.14 (`pipecat-ai[websocket]`, FastAPI and uvicorn) serving one
websocket route, `/ws`, with Pipecat's own `FastAPIWebsocketTransport` and
its `TwilioFrameSerializer` or `VonageFrameSerializer`: what a user who built
a phone bot on Pipecat runs. The first stdout line is the websocket URL
(port 0 picks a free port); then one JSON object per line:

- `{"event": "call", ...}` once a connection's handshake is read: for Twilio,
  what Pipecat's own runner parsed from `connected` + `start` (stream and
  call ids, custom parameters); for Vonage, the rate and the headers of
  `websocket:connected`;
- `{"event": "interrupted"}` when the interrupt mode cuts its reply;
- `{"event": "reply_after_clear", "samples": N, "rate": R}` for each piece of
  the cut reply (440 Hz) that Pipecat still sends *after* its own `clear`:
  its output task races its interruption, and under load one or two 20 ms
  pieces lose, so a client can only judge its clear against what really came
  after it on the wire;
- `{"event": "hangup"}` when the client goes away.

Modes:

- `echo`: the caller's audio is played straight back (input -> output);
- `interrupt`: on the caller's first audio the bot starts a long reply (a
  440 Hz tone, `--reply-s`), interrupts itself after `--interrupt-after-s`
  with Pipecat's own barge-in (`broadcast_interruption()`, an
  `InterruptionFrame`, on which the serializer sends `clear`), then says a
  short second reply (880 Hz, `--after-s`), so a client can check that the
  audio before the clear stops and the audio after it plays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import sys
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.serializers.vonage import VonageFrameSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner

TWILIO_RATE = 8000
VONAGE_RATES = (8000, 16000)


def emit(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


def tone(freq: float, seconds: float, rate: int, level: float = 0.3) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * level * 32767).round().astype("<i2").tobytes()


REPLY_HZ = 440.0
AFTER_HZ = 880.0


class LateReplyWatch:
    """Reports audio of the cut reply serialized after the `clear`: the order
    the serializer sees is the order on the wire."""

    def __init__(self) -> None:
        self._cleared = False

    def saw(self, frame: Frame) -> None:
        if isinstance(frame, InterruptionFrame):
            self._cleared = True
        elif self._cleared and isinstance(frame, OutputAudioRawFrame) and frame.audio:
            x = np.frombuffer(frame.audio, dtype="<i2").astype(np.float64)
            spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
            spectrum[0] = 0
            hz = float(np.argmax(spectrum)) * frame.sample_rate / len(x)
            if abs(hz - REPLY_HZ) < abs(hz - AFTER_HZ):
                emit(
                    {
                        "event": "reply_after_clear",
                        "samples": len(x),
                        "rate": frame.sample_rate,
                    }
                )


class Watched(FrameSerializer):
    """Put before a Pipecat serializer: it sees every frame first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watch = LateReplyWatch()

    async def serialize(self, frame: Frame) -> str | bytes | None:
        self._watch.saw(frame)
        # Only ever used before a concrete serializer (below): super() is it.
        return await super().serialize(frame)  # type: ignore[safe-super]


class WatchedTwilio(Watched, TwilioFrameSerializer):
    pass


class WatchedVonage(Watched, VonageFrameSerializer):
    pass


class Echo(FrameProcessor):
    """The caller's audio, played back."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(
                OutputAudioRawFrame(frame.audio, frame.sample_rate, frame.num_channels)
            )
        else:
            await self.push_frame(frame, direction)


class SelfInterruptingReply(FrameProcessor):
    """A reply cut short by the bot's own barge-in, then a second one."""

    def __init__(self, rate: int, reply_s: float, interrupt_after_s: float, after_s: float) -> None:
        super().__init__()
        self._rate = rate
        self._reply_s = reply_s
        self._interrupt_after_s = interrupt_after_s
        self._after_s = after_s
        self._started = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            if not self._started:
                self._started = True
                # Its own task: broadcast_interruption() resets this processor's
                # frame-processing task, which must not be the one calling it.
                self.create_task(self._speak())
            return  # the caller is heard, not echoed
        await self.push_frame(frame, direction)

    async def _speak(self) -> None:
        await self.push_frame(
            OutputAudioRawFrame(tone(REPLY_HZ, self._reply_s, self._rate), self._rate, 1)
        )
        await asyncio.sleep(self._interrupt_after_s)
        await self.broadcast_interruption()  # type: ignore[no-untyped-call]  # Pipecat's hint gap
        emit({"event": "interrupted"})
        await self.push_frame(
            OutputAudioRawFrame(tone(AFTER_HZ, self._after_s, self._rate), self._rate, 1)
        )


async def twilio_handshake(websocket: WebSocket) -> tuple[FrameSerializer, int] | None:
    # Pipecat's own runner reads the first two messages (connected, start).
    transport_type, call_data = await parse_telephony_websocket(websocket)
    if transport_type != "twilio":
        emit({"event": "refused", "detected": transport_type})
        return None
    emit(
        {
            "event": "call",
            "serializer": "twilio",
            "stream_sid": call_data["stream_id"],
            "call_sid": call_data["call_id"],
            "custom_parameters": call_data.body,
        }
    )
    serializer = WatchedTwilio(
        stream_sid=call_data["stream_id"],
        call_sid=call_data["call_id"],
        # By default it wants Twilio credentials and hangs up through Twilio's
        # REST API at the end of the call.
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    return serializer, TWILIO_RATE


async def vonage_handshake(websocket: WebSocket) -> tuple[FrameSerializer, int] | None:
    # The serializer only logs websocket:connected; the bot reads it itself to
    # learn the rate the call was set up with, as a Vonage bot has to.
    first = json.loads(await websocket.receive_text())
    found = re.fullmatch(r"audio/l16;rate=(\d+)", str(first.get("content-type")))
    rate = int(found.group(1)) if found else 0
    if first.get("event") != "websocket:connected" or rate not in VONAGE_RATES:
        emit({"event": "refused", "first": first})
        return None
    headers = {k: v for k, v in first.items() if k not in ("event", "content-type")}
    emit({"event": "call", "serializer": "vonage", "rate": rate, "headers": headers})
    params = VonageFrameSerializer.InputParams(vonage_sample_rate=rate)
    return WatchedVonage(params), rate


def make_app(args: argparse.Namespace) -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def serve_call(websocket: WebSocket) -> None:
        await websocket.accept()
        handshake = twilio_handshake if args.serializer == "twilio" else vonage_handshake
        found = await handshake(websocket)
        if found is None:
            await websocket.close(code=1008)
            return
        serializer, rate = found
        transport = FastAPIWebsocketTransport(
            websocket=websocket,
            params=FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                serializer=serializer,
                # Vonage takes exactly 20 ms per binary frame; Twilio any size.
                fixed_audio_packet_size=rate // 50 * 2 if args.serializer == "vonage" else None,
            ),
        )
        processor: FrameProcessor = (
            Echo()
            if args.mode == "echo"
            else SelfInterruptingReply(rate, args.reply_s, args.interrupt_after_s, args.after_s)
        )
        worker = PipelineWorker(
            Pipeline([transport.input(), processor, transport.output()]),
            params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate),
            enable_rtvi=False,
            idle_timeout_secs=None,
        )
        runner = WorkerRunner(handle_sigint=False)

        @transport.event_handler("on_client_disconnected")  # type: ignore[untyped-decorator]
        async def hangup(transport: FastAPIWebsocketTransport, client: WebSocket) -> None:
            emit({"event": "hangup"})
            await runner.cancel()

        await runner.run(worker)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serializer", choices=["twilio", "vonage"], required=True)
    parser.add_argument("--mode", choices=["echo", "interrupt"], default="echo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reply-s", type=float, default=4.0)
    parser.add_argument("--interrupt-after-s", type=float, default=1.0)
    parser.add_argument("--after-s", type=float, default=0.4)
    parser.add_argument(
        "--log-level", default="WARNING", help="Pipecat's (loguru) level, on stderr"
    )
    args = parser.parse_args(argv)

    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    # Bound here, so port 0 gives a port known before the first line is printed.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(64)  # connections made right after the URL is printed wait in the backlog
    host, port = sock.getsockname()[:2]
    print(f"ws://{host}:{port}/ws", flush=True)
    config = uvicorn.Config(make_app(args), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
