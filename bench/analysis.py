"""Figures from what the harness recorded (pure functions, no I/O).

Uplink latency: frame k's first sample is output sample k * out_per_frame of
the stream (every contender's converter is time-aligned, checked by
`bench.fidelity`, and none drops audio once connected); the message carrying
it is found from the cumulative sample counts the server saw. Its latency is
that message's arrival minus the bot's write of frame k.

Downlink: frames reach the bot in bursts, one per utterance, separated by the
server's pauses. Each burst is matched to the utterance sent last before its
first frame. Latency is that first frame's arrival minus the utterance's first
send; jitter is every later frame's deviation from the ideal schedule anchored
at the first (start + samples before it / rate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np

from bench.harness import Utterance

BOT_RATE: Final = 48000
# Frames of one utterance arrive at most a piece apart (100 ms for the naive
# baseline); the server pauses 300 ms between utterances.
GROUP_GAP_S: Final = 0.150


@dataclass(frozen=True, slots=True)
class Dist:
    n: int
    min: float
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    @staticmethod
    def of(values: Sequence[float]) -> Dist:
        if not values:
            nan = math.nan
            return Dist(0, nan, nan, nan, nan, nan, nan)
        a = np.asarray(values, dtype=float)
        p50, p95, p99 = (float(v) for v in np.percentile(a, [50, 95, 99]))
        return Dist(len(a), float(a.min()), p50, p95, p99, float(a.max()), float(a.mean()))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def uplink_latencies_ms(
    writes: Sequence[float],
    received_t: Sequence[float],
    received_n: Sequence[int],
    out_per_frame: int,
    *,
    skipped_frames: int = 0,
    window: tuple[float, float] = (-math.inf, math.inf),
) -> list[float]:
    """Latency of every frame written inside `window` whose first sample was delivered.

    `skipped_frames`: frames the process dropped before its first message (the naive
    baseline drops audio until its lazy connect completes).
    """
    if not received_n:
        return []
    ends = np.cumsum(np.asarray(received_n, dtype=np.int64))
    starts = ends - np.asarray(received_n, dtype=np.int64)
    w = np.asarray(writes, dtype=float)
    k = np.nonzero((w >= window[0]) & (w <= window[1]))[0]
    k = k[k >= skipped_frames]
    first = (k - skipped_frames) * out_per_frame
    m = np.searchsorted(starts, first, side="right") - 1
    ok = (m >= 0) & (first < ends[np.clip(m, 0, len(ends) - 1)])
    t = np.asarray(received_t, dtype=float)
    latency = (t[m[ok]] - w[k[ok]]) * 1000.0
    return [float(v) for v in latency]


@dataclass(slots=True)
class Downlink:
    utterances: int
    matched: int
    latency_burst_ms: Dist
    latency_stream_ms: Dist
    jitter_ms: Dist
    """|deviation| of every frame from its place on the utterance's 20 ms grid, the grid
    anchored at the utterance's median frame."""
    late_frames: int
    """Frames more than one 20 ms frame behind their ideal time."""
    snr_db: Dist
    """Per utterance: what the bot heard against the same converter run offline on the
    whole utterance. Any streaming artefact (a flush mid-stream, a lost or repeated
    sample, a click) lowers it; a perfect stream reads SNR_CAP_DB."""
    samples_expected: int
    samples_delivered: int
    frames: int

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("latency_burst_ms", "latency_stream_ms", "jitter_ms", "snr_db"):
            out[key] = getattr(self, key).to_json()
        return out


def downlink(
    utterances: Sequence[Utterance],
    arrival_t: Sequence[float],
    arrival_n: Sequence[int],
    window: tuple[float, float],
    late_s: float = 0.020,
    audio: Sequence[bytes] = (),
    reference: bytes = b"",
) -> tuple[Downlink, dict[str, list[float]], list[float]]:
    """The downlink figures for utterances sent inside `window`, plus the raw samples (ms)
    for plots: latencies by utterance kind, and jitter. With each frame's `audio` and the
    `reference` every utterance should sound like, also the per-utterance SNR."""
    t = np.asarray(arrival_t, dtype=float)
    n = np.asarray(arrival_n, dtype=np.int64)
    groups: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(t) + 1):
        if i == len(t) or t[i] - t[i - 1] > GROUP_GAP_S:
            if i > start:
                groups.append((start, i))
            start = i
    # Matched against every utterance, so audio of one sent after the window is not
    # mistaken for the tail of the last one inside it.
    sends = [u.sent for u in utterances]
    by_utterance: dict[int, list[tuple[int, int]]] = {}
    for g in groups:
        u = int(np.searchsorted(sends, t[g[0]], side="right")) - 1
        if u >= 0 and window[0] <= sends[u] <= window[1]:
            by_utterance.setdefault(u, []).append(g)
    latency: dict[str, list[float]] = {"burst": [], "stream": []}
    jitter: list[float] = []
    snr: list[float] = []
    late = 0
    delivered = 0
    frames = 0
    for u, parts in sorted(by_utterance.items()):
        idx = np.concatenate([np.arange(a, b) for a, b in parts])
        times = t[idx]
        before = np.concatenate([[0], np.cumsum(n[idx])[:-1]])
        offset = times - before / BOT_RATE
        # The grid is anchored at the median frame, not the first: a first frame the
        # bench's own loop read late would otherwise shift every other frame with it.
        deviation = offset - np.median(offset)
        latency.setdefault(utterances[u].kind, []).append((times[0] - sends[u]) * 1000)
        jitter.extend(float(abs(d)) * 1000 for d in deviation)
        late += int(np.count_nonzero(deviation > late_s))
        delivered += int(n[idx].sum())
        frames += len(idx)
        if audio and reference:
            snr.append(snr_db(b"".join(audio[i] for i in idx), reference))
    sent = [u for u in utterances if window[0] <= u.sent <= window[1]]
    result = Downlink(
        utterances=len(sent),
        matched=len(by_utterance),
        latency_burst_ms=Dist.of(latency["burst"]),
        latency_stream_ms=Dist.of(latency["stream"]),
        jitter_ms=Dist.of(jitter),
        late_frames=late,
        snr_db=Dist.of(snr),
        samples_expected=sum(u.samples for u in sent),
        samples_delivered=delivered,
        frames=frames,
    )
    return result, latency, jitter


SNR_CAP_DB: Final = 200.0


def snr_db(got_pcm: bytes, reference_pcm: bytes) -> float:
    """Reference power over the power of (got - reference), over the reference's length;
    audio missing from `got` counts as silence, padding after it is ignored."""
    ref = np.frombuffer(reference_pcm, dtype="<i2").astype(np.float64)
    got = np.zeros(len(ref))
    head = np.frombuffer(got_pcm, dtype="<i2")[: len(ref)]
    got[: len(head)] = head
    noise = float(np.sum((got - ref) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        return SNR_CAP_DB
    return min(SNR_CAP_DB, 10 * math.log10(signal / noise))


def growth_mib_per_hour(samples: Sequence[tuple[float, int]], skip_fraction: float = 0.25) -> float:
    """Slope of a straight line through RSS samples after the warm-up, in MiB per hour."""
    if len(samples) < 3:
        return math.nan
    t0 = samples[0][0]
    span = samples[-1][0] - t0
    tail = [(t, rss) for t, rss in samples if t - t0 >= skip_fraction * span]
    if len(tail) < 3:
        tail = list(samples)
    x = np.asarray([t for t, _ in tail])
    y = np.asarray([rss for _, rss in tail], dtype=float) / (1 << 20)
    slope = float(np.polyfit(x - x[0], y, 1)[0])
    return slope * 3600
