"""What the bench does with the processes: trials, start-up runs, the scale test.

A trial is one process of one contender, taken through phases without a
restart, as a bot would use it: idle (connected, no audio), uplink only at
real time, duplex (the server talks back), then flat-out uplink. CPU is
read per phase; the default configuration's duplex phase is the memory soak.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from bench import twilio
from bench.analysis import Dist, downlink, growth_mib_per_hour, uplink_latencies_ms
from bench.converters import offline
from bench.harness import (
    BOT_RATE,
    FRAME_MS,
    IMPLS,
    BenchServer,
    CpuMeter,
    Impl,
    Lane,
    Proc,
    Script,
    now,
    running,
)
from bench.plan import Plan

MIB: Final = 1 << 20
SCRIPT: Final = Script()
# After the last utterance is sent: enough for it to play out everywhere.
PLAYOUT_DRAIN_S: Final = 1.2
# Flat-out, closed loop: most audio in flight, well under the sidecar's 2 s live queue.
FLAT_WINDOW_S: Final = 0.5
# Flat-out, open loop: one burst written at once.
FLAT_BURST_S: Final = 8.0

Progress = Callable[[str], None]


def _rounded(values: list[float], digits: int = 4) -> list[float]:
    return [round(v, digits) for v in values]


@dataclass(slots=True)
class Phase:
    seconds: float = 0.0
    cpu_pct: float = math.nan
    harness_cpu_pct: float = math.nan
    uplink_latency_ms: Dist = field(default_factory=lambda: Dist.of([]))

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"uplink_latency_ms": self.uplink_latency_ms.to_json()}


@dataclass(slots=True)
class Flat:
    """Closed loop: as fast as the process delivers, at most FLAT_WINDOW_S in flight.
    Open loop: a whole burst written at once, as a bot replaying a file would."""

    audio_s: float = 0.0
    wall_s: float = math.nan
    x_realtime: float = math.nan
    delivered: float = math.nan
    cpu_pct: float = math.nan
    complete: bool = False
    burst_audio_s: float = 0.0
    burst_x_realtime: float = math.nan
    """Open loop: audio seconds the process took off the socket per wall second."""
    burst_delivered: float = math.nan


@dataclass(slots=True)
class TrialResult:
    impl: str
    label: str
    quality: str | None
    sample_rate: int
    startup_ms: float
    exit_code: int | None
    rss_ready_mib: float
    rss_end_mib: float = math.nan
    peak_rss_mib: float = math.nan
    """VmHWM at the end of the duplex phase (the soak, for the default)."""
    peak_rss_after_flat_mib: float = math.nan
    uss_end_mib: float = math.nan
    """Unique set size after the duplex phase: memory no other process shares."""
    rss_samples: list[tuple[float, float]] = field(default_factory=list)
    growth_mib_per_hour: float = math.nan
    idle: Phase | None = None
    uplink: Phase = field(default_factory=Phase)
    duplex: Phase = field(default_factory=Phase)
    downlink: dict[str, Any] = field(default_factory=dict)
    underruns: int | None = None
    """The process's own count (the sidecar's definition), where it keeps one."""
    utterances_sent: int = 0
    """Over the whole trial, which the process's own counts also cover."""
    dropped: dict[str, int] = field(default_factory=dict)
    uplink_samples_missing: int = 0
    """After the real-time phases: written, less what reached the server, less what the
    converter may legitimately still hold back."""
    flat: Flat | None = None
    final_stats: dict[str, Any] = field(default_factory=dict)
    stderr_tail: str = ""
    raw: dict[str, list[float]] = field(default_factory=dict)
    """Samples (ms) for the plots: uplink, duplex_uplink (latency), jitter."""
    raw_downlink: dict[str, list[float]] = field(default_factory=dict)
    """Downlink latency samples (ms) by utterance kind."""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["idle"] = self.idle.to_json() if self.idle else None
        out["uplink"] = self.uplink.to_json()
        out["duplex"] = self.duplex.to_json()
        return out


async def trial(
    server: BenchServer,
    workdir: Path,
    impl: Impl,
    plan: Plan,
    *,
    phase_s: float,
    duplex_s: float,
    idle: bool,
    flat: bool,
    progress: Progress,
) -> TrialResult:
    lane = server.add(impl.lane(impl.key, workdir, keep_audio=True))
    proc = Proc(impl, impl.argv(server.url(lane), lane, plan.stats_interval_s))
    async with running([proc]):
        await proc.start()
        startup = await proc.ready(30)
        result = TrialResult(
            impl=impl.key,
            label=impl.label,
            quality=impl.quality,
            sample_rate=lane.sample_rate,
            startup_ms=startup * 1000,
            exit_code=None,
            rss_ready_mib=proc.rss() / MIB,
        )
        if impl.eager:
            await asyncio.wait_for(lane.connected.wait(), 15)
        async with asyncio.timeout(10):
            await lane.connect_bot()
        await asyncio.sleep(0.3)
        meter = CpuMeter([proc], include_self=True)

        if idle:
            progress(f"{impl.key}: idle {plan.idle_s:g} s")
            meter.start()
            await asyncio.sleep(plan.idle_s)
            wall, (cpu,), own = meter.read()
            result.idle = Phase(wall, cpu, own)

        progress(f"{impl.key}: uplink at real time {phase_s:g} s")
        stop_play = asyncio.Event()
        player = asyncio.create_task(lane.play(stop_play))
        await asyncio.sleep(plan.warmup_s)
        meter.start()
        up_start = now()
        await asyncio.sleep(phase_s)
        wall, (cpu,), own = meter.read()
        up_window = (up_start, now())
        result.uplink = Phase(wall, cpu, own)

        what = "duplex + soak" if duplex_s > phase_s else "duplex"
        progress(f"{impl.key}: {what} {duplex_s:g} s")
        stop_talk = asyncio.Event()
        talker = asyncio.create_task(lane.talk(stop_talk, SCRIPT))
        await asyncio.sleep(plan.warmup_s)
        meter.start()
        dx_start = now()
        samples = [(0.0, proc.rss())]
        while (left := duplex_s - (now() - dx_start)) > 0:
            await asyncio.sleep(min(plan.rss_interval_s, left))
            samples.append((now() - dx_start, proc.rss()))
        wall, (cpu,), own = meter.read()
        dx_window = (dx_start, now())
        result.duplex = Phase(wall, cpu, own)
        result.rss_end_mib = proc.rss() / MIB
        result.peak_rss_mib = proc.peak_rss() / MIB
        result.uss_end_mib = proc.uss() / MIB
        result.rss_samples = [(round(t, 2), round(rss / MIB, 3)) for t, rss in samples]
        result.growth_mib_per_hour = growth_mib_per_hour(samples)
        stop_talk.set()
        await talker
        await asyncio.sleep(PLAYOUT_DRAIN_S)
        stop_play.set()
        await player
        await lane.quiet(0.5, 10)
        written = len(lane.writes)
        received = lane.samples_received

        if flat:
            progress(f"{impl.key}: flat-out {plan.flat_audio_s:g} s of audio")
            result.flat = await _flat_out(lane, proc, plan.flat_audio_s)
            result.peak_rss_after_flat_mib = proc.peak_rss() / MIB
        await lane.quiet(0.3, 5)
        result.exit_code = await proc.stop()
        await lane.quiet(0.3, 3)
        await lane.close()

    stats = proc.last("stats") or {}
    result.final_stats = stats
    if result.exit_code != 0:
        result.stderr_tail = proc.tail()
    skipped = int(stats.get("dropped_before_connect", 0))
    per_frame = lane.sample_rate * FRAME_MS // 1000
    result.uplink_samples_missing = max(
        0, (written - skipped) * per_frame - received - impl.holdback_samples(lane.sample_rate)
    )
    up = uplink_latencies_ms(
        lane.writes, lane.received_t, lane.received_n, per_frame,
        skipped_frames=skipped, window=up_window,
    )  # fmt: skip
    dx_up = uplink_latencies_ms(
        lane.writes, lane.received_t, lane.received_n, per_frame,
        skipped_frames=skipped, window=dx_window,
    )  # fmt: skip
    result.uplink.uplink_latency_ms = Dist.of(up)
    result.duplex.uplink_latency_ms = Dist.of(dx_up)
    if impl.protocol == "twilio":
        reference = offline(impl.converter, twilio.heard(SCRIPT), twilio.RATE, BOT_RATE)
    else:
        reference = offline(impl.converter, SCRIPT.pcm(), SCRIPT.rate, BOT_RATE)
    down, down_latency, jitter = downlink(
        lane.utterances, lane.arrival_t, lane.arrival_n, dx_window,
        audio=lane.arrival_pcm, reference=reference,
    )  # fmt: skip
    result.raw_downlink = {kind: _rounded(v) for kind, v in down_latency.items()}
    result.utterances_sent = len(lane.utterances)
    result.downlink = down.to_json()
    if impl.stats_underruns or "underruns" in stats:
        result.underruns = int(stats.get("underruns", 0))
    dropped = stats.get("dropped", {})
    result.dropped = (
        {str(k): int(v) for k, v in dropped.items()} if isinstance(dropped, dict) else {}
    )
    result.raw = {
        "uplink": _rounded(up),
        "duplex_uplink": _rounded(dx_up),
        "jitter": _rounded(jitter),
    }
    return result


async def _flat_out(lane: Lane, proc: Proc, audio_s: float) -> Flat:
    per_frame = lane.sample_rate * FRAME_MS // 1000
    # Converters may hold back output until more input arrives (soxr: ~70 ms, blockwise).
    slack = lane.sample_rate // 10
    result = Flat(audio_s=audio_s)
    await lane.quiet(0.3, 10)
    frames = round(audio_s * 1000 / FRAME_MS)
    before = lane.samples_received
    meter = CpuMeter([proc])
    meter.start()
    start = now()
    await lane.flood(frames, window=round(FLAT_WINDOW_S * 1000 / FRAME_MS), slack=slack)
    expected = frames * per_frame
    result.complete = await lane.received_at_least(
        before + expected - slack, quiet_s=2.0, give_up_s=120
    )
    _, (result.cpu_pct,), _ = meter.read()
    result.wall_s = (lane.received_t[-1] if lane.received_t else now()) - start
    delivered_s = (lane.samples_received - before) / lane.sample_rate
    result.x_realtime = delivered_s / result.wall_s if result.wall_s > 0 else math.nan
    result.delivered = (lane.samples_received - before) / expected

    await lane.quiet(0.3, 10)
    burst = round(FLAT_BURST_S * 1000 / FRAME_MS)
    before = lane.samples_received
    start = now()
    await lane.flood(burst)
    wrote = now() - start
    await lane.quiet(1.0, 60)
    result.burst_audio_s = FLAT_BURST_S
    result.burst_x_realtime = FLAT_BURST_S / wrote if wrote > 0 else math.nan
    result.burst_delivered = (lane.samples_received - before) / (burst * per_frame)
    return result


# -- start-up ------------------------------------------------------------------------------


@dataclass(slots=True)
class Startup:
    impl: str
    label: str
    samples_ms: list[float]
    rss_ready_mib: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms) if self.samples_ms else math.nan

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {
            "median_ms": self.median_ms,
            "max_ms": max(self.samples_ms, default=math.nan),
        }


async def startup(
    server: BenchServer, workdir: Path, impl: Impl, runs: int, progress: Progress
) -> Startup:
    progress(f"{impl.key}: start-up x{runs}")
    result = Startup(impl.key, impl.label, [], [])
    for i in range(runs):
        lane = server.add(Lane(f"start-{impl.key}-{i}", workdir))
        proc = Proc(impl, impl.argv(server.url(lane), lane, 5.0))
        async with running([proc]):
            await proc.start()
            result.samples_ms.append(await proc.ready(30) * 1000)
            result.rss_ready_mib.append(proc.rss() / MIB)
            await proc.stop()
        # Let the machine settle between runs so they do not overlap.
        await asyncio.sleep(0.2)
    return result


# -- scale -----------------------------------------------------------------------------------


@dataclass(slots=True)
class ScaleResult:
    n: int
    seconds: float
    startup_median_ms: float
    startup_max_ms: float
    cpu_total_pct: float
    """All sidecars together, % of one core (the machine has os.cpu_count() cores)."""
    cpu_per_sidecar_pct: float
    harness_cpu_pct: float
    uplink_latency_ms: Dist
    downlink: dict[str, Any]
    underruns: int
    utterances_sent: int
    """Over the whole run, which the sidecars' own counts also cover."""
    dropped_samples: int
    dropped: dict[str, int]
    uplink_samples_missing: int
    exit_codes: list[int | None]

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"uplink_latency_ms": self.uplink_latency_ms.to_json()}


async def scale(
    server: BenchServer, workdir: Path, n: int, plan: Plan, progress: Progress
) -> ScaleResult:
    impl = IMPLS["sidecar-medium"]
    lanes = [server.add(Lane(f"scale{n}-{i}", workdir)) for i in range(n)]
    procs = [Proc(impl, impl.argv(server.url(lane), lane, plan.stats_interval_s)) for lane in lanes]
    progress(f"scale: starting {n} sidecars")
    rng = random.Random(n)
    async with running(procs):
        await asyncio.gather(*(p.start() for p in procs))
        startups = await asyncio.gather(*(p.ready(120) for p in procs))
        await asyncio.gather(*(asyncio.wait_for(lane.connected.wait(), 60) for lane in lanes))
        async with asyncio.timeout(30):
            await asyncio.gather(*(lane.connect_bot() for lane in lanes))
        stop_play, stop_talk = asyncio.Event(), asyncio.Event()
        players = [
            asyncio.create_task(lane.play(stop_play, rng.uniform(0, FRAME_MS / 1000)))
            for lane in lanes
        ]
        talkers = [
            asyncio.create_task(lane.talk(stop_talk, SCRIPT, rng.uniform(0, SCRIPT.period_s)))
            for lane in lanes
        ]
        await asyncio.sleep(plan.warmup_s + SCRIPT.period_s)
        progress(f"scale: {n} sidecars duplex at real time {plan.scale_s:g} s")
        meter = CpuMeter(procs, include_self=True)
        meter.start()
        start = now()
        await asyncio.sleep(plan.scale_s)
        wall, cpus, own = meter.read()
        window = (start, now())
        stop_talk.set()
        await asyncio.gather(*talkers)
        await asyncio.sleep(PLAYOUT_DRAIN_S)
        stop_play.set()
        await asyncio.gather(*players)
        await asyncio.gather(*(lane.quiet(0.3, 5) for lane in lanes))
        codes = await asyncio.gather(*(p.stop(20) for p in procs))
        await asyncio.gather(*(lane.quiet(0.3, 3) for lane in lanes))
        await asyncio.gather(*(lane.close() for lane in lanes))

    per_frame = lanes[0].sample_rate * FRAME_MS // 1000
    latencies: list[float] = []
    burst: list[float] = []
    stream: list[float] = []
    jitter: list[float] = []
    underruns = dropped_total = missing = late = utterances = matched = 0
    dropped: dict[str, int] = {}
    for lane, proc in zip(lanes, procs, strict=True):
        latencies += uplink_latencies_ms(
            lane.writes, lane.received_t, lane.received_n, per_frame, window=window
        )
        down, lane_latency, lane_jitter = downlink(
            lane.utterances, lane.arrival_t, lane.arrival_n, window
        )
        burst += lane_latency["burst"]
        stream += lane_latency["stream"]
        jitter += lane_jitter
        late += down.late_frames
        utterances += down.utterances
        matched += down.matched
        stats = proc.last("stats") or {}
        underruns += int(stats.get("underruns", 0))
        for reason, count in (stats.get("dropped") or {}).items():
            dropped[reason] = dropped.get(reason, 0) + int(count)
            dropped_total += int(count)
        missing += max(0, len(lane.writes) * per_frame - lane.samples_received)
    return ScaleResult(
        n=n,
        seconds=wall,
        startup_median_ms=statistics.median(startups) * 1000,
        startup_max_ms=max(startups) * 1000,
        cpu_total_pct=sum(cpus),
        cpu_per_sidecar_pct=sum(cpus) / n,
        harness_cpu_pct=own,
        uplink_latency_ms=Dist.of(latencies),
        downlink={
            "utterances": utterances,
            "matched": matched,
            "latency_burst_ms": Dist.of(burst).to_json(),
            "latency_stream_ms": Dist.of(stream).to_json(),
            "jitter_ms": Dist.of(jitter).to_json(),
            "late_frames": late,
        },
        underruns=underruns,
        utterances_sent=sum(len(lane.utterances) for lane in lanes),
        dropped_samples=dropped_total,
        dropped=dropped,
        uplink_samples_missing=missing,
        exit_codes=list(codes),
    )
