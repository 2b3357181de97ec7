"""Sequence-tagged test audio and the accounting invariant.

The bot sends 16 kHz audio to a sidecar that sends 16 kHz (the resampler is a
passthrough), each sample carrying its own index modulo 2**16. The server's
received messages are unwrapped back to absolute indices (the message
timestamp resolves the wrap), so any gap, duplicate or reordering is visible
sample by sample.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

RATE = 16000
KIND_16K = 0x12
WRAP = 1 << 16


def tagged(start: int, count: int) -> bytes:
    idx = np.arange(start, start + count, dtype=np.int64)
    return ((idx % WRAP) - (WRAP // 2)).astype("<i2").tobytes()


@dataclass
class Delivery:
    ranges: list[tuple[int, int]]  # [start, end) in arrival order

    @property
    def received(self) -> int:
        return sum(end - start for start, end in self.ranges)

    def unique(self) -> int:
        covered = np.zeros(max((e for _, e in self.ranges), default=0), dtype=bool)
        for start, end in self.ranges:
            covered[start:end] = True
        return int(covered.sum())

    def in_order(self) -> bool:
        return all(a[1] <= b[0] for a, b in zip(self.ranges, self.ranges[1:], strict=False))


def unwrap(messages: list[dict[str, Any]], t0_ms: float) -> Delivery:
    """Absolute sample ranges of each message, in arrival order.

    `t0_ms` is the capture time of sample 0 (the first message's timestamp).
    """
    ranges = []
    for message in messages:
        pcm = np.frombuffer(base64.b64decode(message["data"]["chunk"]), dtype="<i2")
        if not len(pcm):
            continue
        values = (pcm.astype(np.int64) + WRAP // 2) % WRAP
        # Within a message the audio is contiguous: it must count up by one.
        steps = np.diff(values) % WRAP
        if len(steps) and not np.all(steps == 1):
            raise AssertionError(f"message at {message['data']['timestamp_ms']} is not contiguous")
        guess = (message["data"]["timestamp_ms"] - t0_ms) * RATE / 1000
        first = int(values[0])
        start = first + WRAP * round((guess - first) / WRAP)
        ranges.append((start, start + len(pcm)))
    return Delivery(ranges)


def uplink_dropped(stats: dict[str, Any]) -> int:
    return sum(n for reason, n in stats["dropped"].items() if reason.startswith("uplink_"))
