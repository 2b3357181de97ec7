"""One sidecar with `--per-participant`: 16 participant streams plus the mixed one.

Each participant is its own connection to the in-socket (its UUID frame, then
48 kHz frames on a real-time schedule, phases staggered), as a bot that
captures every speaker separately would run it. Both kinds of message share
one websocket connection. Measured: the process's CPU, and every stream's
uplink latency (bot write to server arrival) and completeness.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from bench.analysis import Dist, uplink_latencies_ms
from bench.harness import (
    FRAME_MS,
    IMPLS,
    Arrivals,
    BenchServer,
    CpuMeter,
    Lane,
    Participant,
    Proc,
    now,
    running,
)
from bench.plan import Plan
from bench.scenarios import Progress

PARTICIPANT_RATE: Final = 16000
DRAIN_S: Final = 0.5


@dataclass(slots=True)
class ParticipantsResult:
    participants: int
    """Participant streams, besides the mixed one."""
    seconds: float
    cpu_pct: float
    """The one sidecar process, % of one core."""
    cpu_per_stream_pct: float
    harness_cpu_pct: float
    mixed_latency_ms: Dist
    participant_latency_ms: Dist
    """Every participant stream's frames, pooled."""
    worst_stream_p99_ms: float
    joined: int
    """`participant_joined` events the sidecar reported."""
    streams_at_server: int
    """Distinct `participant_uuid`s the server received audio for."""
    dropped_samples: int
    uplink_samples_missing: int
    """Over every stream: samples written by the bot that never reached the server."""
    exit_code: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {
            "mixed_latency_ms": self.mixed_latency_ms.to_json(),
            "participant_latency_ms": self.participant_latency_ms.to_json(),
        }


def argv(server: BenchServer, lane: Lane, plan: Plan) -> list[str]:
    impl = IMPLS["sidecar-medium"]
    return [
        *impl.argv(server.url(lane), lane, plan.stats_interval_s),
        "--per-participant",
        "--per-participant-sample-rate",
        str(PARTICIPANT_RATE),
        "--max-participants",
        str(max(32, plan.participants_n)),
    ]


async def participants(
    server: BenchServer, workdir: Path, plan: Plan, progress: Progress
) -> ParticipantsResult:
    n = plan.participants_n
    lane = server.add(Lane(f"participants{n}", workdir))
    proc = Proc(IMPLS["sidecar-medium"], argv(server, lane, plan))
    rng = random.Random(n)
    people = [
        Participant(lane, uuid.UUID(int=rng.getrandbits(128), version=4).bytes) for _ in range(n)
    ]
    progress(f"participants: one sidecar, {n} participant streams plus the mixed one")
    async with running([proc]):
        await proc.start()
        await proc.ready(60)
        await asyncio.wait_for(lane.connected.wait(), 30)
        async with asyncio.timeout(30):
            await lane.connect_bot()
            await asyncio.gather(*(person.connect() for person in people))
        stop = asyncio.Event()
        players = [asyncio.create_task(lane.play(stop, rng.uniform(0, FRAME_MS / 1000)))]
        players += [
            asyncio.create_task(person.play(stop, rng.uniform(0, FRAME_MS / 1000)))
            for person in people
        ]
        await asyncio.sleep(plan.warmup_s)
        meter = CpuMeter([proc], include_self=True)
        meter.start()
        start = now()
        await asyncio.sleep(plan.participants_s)
        wall, (cpu,), own = meter.read()
        window = (start, now())
        stop.set()
        await asyncio.gather(*players)
        # Hanging up flushes each stream's resampler: the last samples are sent too.
        await asyncio.gather(*(person.close() for person in people))
        await lane.close()
        await asyncio.sleep(DRAIN_S)
        await lane.quiet(0.3, 5)
        code = await proc.stop(20)

    mixed_per_frame = lane.sample_rate * FRAME_MS // 1000
    per_frame = PARTICIPANT_RATE * FRAME_MS // 1000
    mixed = uplink_latencies_ms(
        lane.writes, lane.received_t, lane.received_n, mixed_per_frame, window=window
    )
    pooled: list[float] = []
    worst = 0.0
    missing = max(0, len(lane.writes) * mixed_per_frame - lane.samples_received)
    for person in people:
        got = lane.participants.get(str(uuid.UUID(bytes=person.uuid)), Arrivals())
        latencies = uplink_latencies_ms(person.writes, got.t, got.n, per_frame, window=window)
        pooled += latencies
        if latencies:
            worst = max(worst, Dist.of(latencies).p99)
        missing += max(0, len(person.writes) * per_frame - got.samples)
    stats = proc.last("stats") or {}
    dropped = sum(int(v) for v in (stats.get("dropped") or {}).values())
    return ParticipantsResult(
        participants=n,
        seconds=wall,
        cpu_pct=cpu,
        cpu_per_stream_pct=cpu / (n + 1),
        harness_cpu_pct=own,
        mixed_latency_ms=Dist.of(mixed),
        participant_latency_ms=Dist.of(pooled),
        worst_stream_p99_ms=worst,
        joined=sum(1 for e in proc.events if e.get("event") == "participant_joined"),
        streams_at_server=len(lane.participants),
        dropped_samples=dropped,
        uplink_samples_missing=missing,
        exit_code=code,
    )
