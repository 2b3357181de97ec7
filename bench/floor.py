"""The floor: the sidecar's own per-frame work, in-process, with no I/O or scheduling.

Uplink, per 20 ms frame: AudioSocket decode, resample (48 kHz -> the server
rate), chunk, and encode the `realtime_audio.mixed` JSON (base64) text, using
the same sans-I/O objects the sidecar runs. Downlink, per 20 ms of bot output:
decode the `realtime_audio.bot_output` JSON, resample to 48 kHz into the
playout, take one frame and encode it as AudioSocket. Everything else the
process spends (syscalls, trio's scheduler, the websocket protocol) is
overhead measured against this.
"""

from __future__ import annotations

import base64
import gc
import json
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np

from sidecar import frames, messages
from sidecar.capture import CaptureStream
from sidecar.resample import Quality
from sidecar.voice import Voice

FRAME_MS: Final = 20
BOT_RATE: Final = 48000
QUALITIES: Final[tuple[Quality, ...]] = ("fastest", "medium", "best")


@dataclass(frozen=True, slots=True)
class FloorResult:
    quality: str
    sample_rate: int
    uplink_us_per_frame: float
    downlink_us_per_frame: float

    @property
    def uplink_cpu_pct(self) -> float:
        return self.uplink_us_per_frame / (FRAME_MS * 1000) * 100

    @property
    def duplex_cpu_pct(self) -> float:
        return (self.uplink_us_per_frame + self.downlink_us_per_frame) / (FRAME_MS * 1000) * 100

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {
            "uplink_cpu_pct": self.uplink_cpu_pct,
            "duplex_cpu_pct": self.duplex_cpu_pct,
        }


def speech_like(seconds: float, rate: int, seed: int = 3) -> bytes:
    """Noise shaped like speech's spectrum; the converters' cost does not depend on it, but
    base64 and JSON see realistic bytes."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum /= 1 + (freqs / 500.0) ** 2
    x = np.fft.irfft(spectrum, n)
    x *= 0.3 / float(np.max(np.abs(x)))
    return (x * 32767).astype("<i2").tobytes()


def _uplink(quality: Quality, rate: int, encoded: list[bytes]) -> float:
    decoder = frames.FrameDecoder()
    capture = CaptureStream(rate, FRAME_MS, quality)
    clock_ms = time.time() * 1000
    sink = 0
    start = time.perf_counter()
    for data in encoded:
        decoder.feed(data)
        for event in decoder:
            assert isinstance(event, frames.Audio)
            clock_ms += FRAME_MS
            for chunk in capture.push(event, clock_ms):
                message = messages.MixedAudio(
                    bot_id="bot_bench",
                    data=messages.MixedData(
                        chunk=chunk.pcm,
                        sample_rate=rate,  # type: ignore[arg-type]
                        timestamp_ms=chunk.timestamp_ms,
                    ),
                )
                # msgspec's UTF-8 bytes are what the link frames (Utf8Text): no str.
                sink += len(messages.encode(message))
    elapsed = time.perf_counter() - start
    assert sink > 0
    return elapsed / len(encoded) * 1e6


def _downlink(quality: Quality, rate: int, texts: list[str]) -> float:
    voice = Voice(BOT_RATE, FRAME_MS, 60000, 40, quality)
    sink = 0
    start = time.perf_counter()
    for text in texts:
        message = messages.decode_server_message(text)
        assert isinstance(message, messages.BotOutput)
        voice.audio(message.data.chunk, message.data.sample_rate)
        tick = voice.tick()
        if tick.frame is not None:
            sink += len(frames.encode_audio(tick.frame, BOT_RATE))
    elapsed = time.perf_counter() - start
    assert sink > 0
    return elapsed / len(texts) * 1e6


def measure(
    quality: Quality, rate: int = 16000, seconds: float = 20.0, repeats: int = 3
) -> FloorResult:
    """Best of `repeats` passes over `seconds` of audio (the machine may be busy)."""
    pcm = speech_like(seconds, BOT_RATE)
    step = BOT_RATE * FRAME_MS // 1000 * 2
    encoded = [frames.encode_audio(pcm[i : i + step], BOT_RATE) for i in range(0, len(pcm), step)]
    down_pcm = speech_like(seconds, rate, seed=4)
    down_step = rate * FRAME_MS // 1000 * 2
    texts = [
        json.dumps(
            {
                "trigger": "realtime_audio.bot_output",
                "data": {
                    "chunk": base64.b64encode(down_pcm[i : i + down_step]).decode(),
                    "sample_rate": rate,
                },
            }
        )
        for i in range(0, len(down_pcm), down_step)
    ]
    up = down = math.inf
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            up = min(up, _uplink(quality, rate, encoded))
            down = min(down, _downlink(quality, rate, texts))
    finally:
        if gc_was_enabled:
            gc.enable()
    return FloorResult(quality, rate, up, down)
