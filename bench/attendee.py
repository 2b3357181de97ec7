"""The naive baseline's signal path, written from CONTEXT.md section 1 (Attendee).

Pure functions, shared by the `bench.naive` process and the fidelity
measurements: stateless `audioop.ratecv` per chunk (its filter state is thrown
away every call), sample repetition when upsampling, and `json.dumps` with
base64 for every message.
"""

from __future__ import annotations

import base64
import json
import time
import warnings

import numpy as np

with warnings.catch_warnings():
    # Deprecated since 3.11 and gone in 3.13 (audioop-lts brings it back there);
    # the baseline is defined by this exact function, so it stays.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def downsample(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """One chunk through ratecv with fresh state, as Attendee does for every chunk."""
    out, _state = audioop.ratecv(pcm, 2, 1, in_rate, out_rate, None)
    return out


def upsample(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """Sample repetition (`np.repeat`): Attendee's path from the server's rate to the bot's."""
    if out_rate % in_rate:
        raise ValueError(f"sample repetition needs an integer ratio, got {in_rate} -> {out_rate}")
    samples = np.frombuffer(pcm, dtype="<i2")
    return np.repeat(samples, out_rate // in_rate).tobytes()


def convert(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    if in_rate == out_rate:
        return pcm
    if out_rate < in_rate:
        return downsample(pcm, in_rate, out_rate)
    return upsample(pcm, in_rate, out_rate)


def encode_mixed(bot_id: str, pcm: bytes, rate: int) -> str:
    """`timestamp_ms` is wall-clock at send time, as in Attendee."""
    return json.dumps(
        {
            "bot_id": bot_id,
            "trigger": "realtime_audio.mixed",
            "data": {
                "chunk": base64.b64encode(pcm).decode("ascii"),
                "sample_rate": rate,
                "timestamp_ms": int(time.time() * 1000),
            },
        }
    )
