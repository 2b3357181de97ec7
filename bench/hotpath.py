"""Issue #12's measurements: scheduler passes per frame, CPU before and now, CPU per chunk.

`counts`: the default sidecar run by `bench.counted` (the same process with a
trio Instrument), driven like a trial: uplink only at real time, then duplex
(the server talks 70% of the time). The bench asks for a snapshot of the
counters (SIGUSR1) at each phase's edges; a phase's figures are the
differences, divided by the frames the sidecar itself read from the bot in
it. Counted, not sampled: the same run gives the same integers but for the
phase edges (a frame more or less) and the periodic work (stats every
`stats_interval_s`, a ping every 10 s) that a phase's edges cut differently.

`before_and_now`: the default sidecar as it was at the commit of
bench/before.json (its `sidecar/` from `git archive` into the work directory,
no checkout) and as it is, alternated, plain processes through the same uplink
and duplex phases, and the old one counted once too: CPU ratios and passes
from one run, which the machine's speed on the day cannot skew.

`chunk`: the plain default sidecar with `--chunk-ms` 20, 40, 100, uplink only
at real time: its CPU and latency (the bot still writes 20 ms frames).

`peers`: the default sidecar, soxr-stream and naive + libsamplerate, one
fresh process at a time, alternated round by round through the same uplink and
duplex phases: issue #20's CPU ratios against soxr-stream, each taken within a
round so that the machine's drift between trials (other tenants, the clock)
cancels, and what the fixed resampler costs a process that does nothing else.

`fill`: the default sidecar with `--fill-silence` off and on, uplink only at
real time (a bot that never pauses): the fill's timer runs only in gaps, so
CPU and uplink latency must match.
"""

from __future__ import annotations

import asyncio
import collections
import io
import math
import os
import subprocess
import tarfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final, cast

from bench import counted
from bench.analysis import Dist, uplink_latencies_ms
from bench.harness import FRAME_MS, IMPLS, REPO, BenchServer, CpuMeter, Impl, Proc, now, running
from bench.plan import Plan
from bench.scenarios import SCRIPT, Progress
from sidecar.config import Config

CHUNK_MS: Final = (20, 40, 100)
DEFAULT_CHUNK_MS: Final = cast(int, {f.name: f.default for f in fields(Config)}["chunk_ms"])
TOP: Final = 12
# The peers section's contenders; the first is the one judged, the second its yardstick.
PEERS: Final = ("sidecar-medium", "soxr-stream", "naive-src")
SNAPSHOT_TIMEOUT_S: Final = 5.0


@dataclass(slots=True)
class CountedPhase:
    """One phase of the counted sidecar, every figure per frame the sidecar read."""

    seconds: float
    frames_in: int
    passes: int
    empty_passes: int
    steps: int
    events_created: int
    cancel_scopes_created: int
    messages_out: int
    messages_in: int
    frames_played: int
    cpu_pct: float
    """With the instrument on (it costs a little per step): not the trials' figure."""
    top_steps: list[tuple[str, float]] = field(default_factory=list)
    """Task steps by `task @ where it resumed`, per frame."""
    top_passes: list[tuple[str, float]] = field(default_factory=list)
    """Passes by the tasks each one stepped, per frame."""

    def per_frame(self, value: int) -> float:
        return value / self.frames_in if self.frames_in else math.nan

    @property
    def passes_per_frame(self) -> float:
        return self.per_frame(self.passes)

    @property
    def steps_per_frame(self) -> float:
        return self.per_frame(self.steps)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {
            "passes_per_frame": self.passes_per_frame,
            "steps_per_frame": self.steps_per_frame,
            "empty_passes_per_frame": self.per_frame(self.empty_passes),
            "events_per_frame": self.per_frame(self.events_created),
            "cancel_scopes_per_frame": self.per_frame(self.cancel_scopes_created),
            "messages_out_per_frame": self.per_frame(self.messages_out),
            "messages_in_per_frame": self.per_frame(self.messages_in),
            "played_per_frame": self.per_frame(self.frames_played),
        }


def _top(after: dict[str, int], before: dict[str, int], frames: int) -> list[tuple[str, float]]:
    diff = collections.Counter(after)
    diff.subtract(before)
    rows = [(k, v / frames) for k, v in diff.most_common() if v > 0]
    return rows[:TOP] if frames else []


def phase(a: counted.Snapshot, b: counted.Snapshot, cpu_pct: float) -> CountedPhase:
    frames = b.frames_in - a.frames_in
    return CountedPhase(
        seconds=b.t - a.t,
        frames_in=frames,
        passes=b.passes - a.passes,
        empty_passes=b.empty_passes - a.empty_passes,
        steps=b.steps - a.steps,
        events_created=b.events_created - a.events_created,
        cancel_scopes_created=b.cancel_scopes_created - a.cancel_scopes_created,
        messages_out=b.messages_out - a.messages_out,
        messages_in=b.messages_in - a.messages_in,
        frames_played=b.frames_played - a.frames_played,
        cpu_pct=cpu_pct,
        top_steps=_top(b.by_step, a.by_step, frames),
        top_passes=_top(b.by_pass, a.by_pass, frames),
    )


async def _snapshot(proc: Proc, path: Path) -> counted.Snapshot:
    """Ask the counted process for its counters; wait for the line it appends."""
    have = len(counted.read(path))
    os.kill(proc.pid, counted.SNAPSHOT_SIGNAL)
    deadline = now() + SNAPSHOT_TIMEOUT_S
    while now() < deadline:
        await asyncio.sleep(0.01)
        snaps = counted.read(path)
        if len(snaps) > have:
            return snaps[-1]
    raise RuntimeError(f"no counts snapshot within {SNAPSHOT_TIMEOUT_S:g} s: {proc.tail()}")


@dataclass(slots=True)
class CountsRun:
    uplink: CountedPhase
    duplex: CountedPhase
    exit_code: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "uplink": self.uplink.to_json(),
            "duplex": self.duplex.to_json(),
            "exit_code": self.exit_code,
        }


async def counts(
    server: BenchServer,
    workdir: Path,
    plan: Plan,
    run: int,
    progress: Progress,
    impl: Impl | None = None,
) -> CountsRun:
    """One counted process (the default sidecar; `impl`: another commit's, say)."""
    impl = impl or IMPLS["sidecar-counted"]
    name = f"{impl.key}-{run}"
    lane = server.add(impl.lane(name, workdir))
    path = workdir / f"{name}.jsonl"
    path.unlink(missing_ok=True)
    proc = Proc(
        impl, impl.argv(server.url(lane), lane, plan.stats_interval_s), env={counted.ENV: str(path)}
    )
    async with running([proc]):
        await proc.start()
        await proc.ready(30)
        await asyncio.wait_for(lane.connected.wait(), 15)
        async with asyncio.timeout(10):
            await lane.connect_bot()
        await asyncio.sleep(0.3)
        meter = CpuMeter([proc])

        progress(f"{name}: uplink at real time {plan.uplink_s:g} s, counted")
        stop_play = asyncio.Event()
        player = asyncio.create_task(lane.play(stop_play))
        await asyncio.sleep(plan.warmup_s)
        a = await _snapshot(proc, path)
        meter.start()
        await asyncio.sleep(plan.uplink_s)
        b = await _snapshot(proc, path)
        _, (up_cpu,), _ = meter.read()

        progress(f"{name}: duplex {plan.duplex_s:g} s, counted")
        stop_talk = asyncio.Event()
        talker = asyncio.create_task(lane.talk(stop_talk, SCRIPT))
        await asyncio.sleep(plan.warmup_s)
        c = await _snapshot(proc, path)
        meter.start()
        await asyncio.sleep(plan.duplex_s)
        d = await _snapshot(proc, path)
        _, (dx_cpu,), _ = meter.read()
        stop_talk.set()
        await talker
        stop_play.set()
        await player
        code = await proc.stop()
        await lane.close()
    return CountsRun(phase(a, b, up_cpu), phase(c, d, dx_cpu), code)


@dataclass(slots=True)
class ChunkRow:
    chunk_ms: int
    seconds: float
    cpu_pct: float
    frames: int
    messages: int
    uplink_latency_ms: Dist
    exit_code: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"uplink_latency_ms": self.uplink_latency_ms.to_json()}


async def chunk(
    server: BenchServer, workdir: Path, plan: Plan, chunk_ms: int, progress: Progress
) -> ChunkRow:
    base = IMPLS["sidecar-medium"]
    impl = replace(base, key=f"chunk-{chunk_ms}", extra=("--chunk-ms", str(chunk_ms)))
    progress(f"chunks: --chunk-ms {chunk_ms}, uplink at real time {plan.compare_s:g} s")
    return await uplink_row(server, workdir, plan, impl, chunk_ms)


async def fill(server: BenchServer, workdir: Path, plan: Plan, on: bool, progress: Progress) -> Any:
    """The default sidecar with --fill-silence on or off, the bot writing without a
    pause: the fill's timer must not run then, so CPU and uplink latency match."""
    state = "on" if on else "off"
    base = IMPLS["sidecar-medium"]
    impl = replace(base, key=f"fill-{state}", extra=("--fill-silence", state))
    progress(f"fill: --fill-silence {state}, uplink at real time {plan.compare_s:g} s")
    row = await uplink_row(server, workdir, plan, impl, DEFAULT_CHUNK_MS)
    return row.to_json() | {"fill": state}


async def uplink_row(
    server: BenchServer, workdir: Path, plan: Plan, impl: Impl, chunk_ms: int
) -> ChunkRow:
    """One process, the bot writing at real time for `plan.compare_s`: CPU, latency."""
    lane = server.add(impl.lane(impl.key, workdir))
    proc = Proc(impl, impl.argv(server.url(lane), lane, plan.stats_interval_s))
    async with running([proc]):
        await proc.start()
        await proc.ready(30)
        await asyncio.wait_for(lane.connected.wait(), 15)
        async with asyncio.timeout(10):
            await lane.connect_bot()
        await asyncio.sleep(0.3)
        stop = asyncio.Event()
        player = asyncio.create_task(lane.play(stop))
        await asyncio.sleep(plan.warmup_s)
        meter = CpuMeter([proc])
        meter.start()
        start, frames0, messages0 = now(), len(lane.writes), len(lane.received_t)
        await asyncio.sleep(plan.compare_s)
        wall, (cpu,), _ = meter.read()
        window = (start, now())
        frames, messages = len(lane.writes) - frames0, len(lane.received_t) - messages0
        stop.set()
        await player
        await lane.quiet(0.3, 5)
        code = await proc.stop()
        await lane.close()
    per_frame = lane.sample_rate * FRAME_MS // 1000
    latency = uplink_latencies_ms(
        lane.writes, lane.received_t, lane.received_n, per_frame, window=window
    )
    return ChunkRow(chunk_ms, wall, cpu, frames, messages, Dist.of(latency), code)


# -- the code before, beside this one -------------------------------------------------


def extract(commit: str, workdir: Path) -> Path:
    """`sidecar/` as it was at `commit` (git archive, no checkout), in a directory of
    its own: a process started there imports that code as `sidecar`."""
    out = workdir / f"before-{commit}"
    if not (out / "sidecar").is_dir():
        tar = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit, "sidecar"],
            check=True,
            capture_output=True,
        ).stdout
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            archive.extractall(out, filter="data")
    return out


def before_impls(commit: str, workdir: Path) -> tuple[Impl, Impl]:
    """(the default sidecar at `commit`, the same under bench.counted)."""
    where = extract(commit, workdir)
    plain = replace(
        IMPLS["sidecar-medium"],
        key="sidecar-before",
        label=f"sidecar, medium, at {commit} (before)",
        cwd=where,
    )
    return plain, replace(IMPLS["sidecar-counted"], key="counted-before", cwd=where)


@dataclass(slots=True)
class CpuPair:
    """One process through uplink only and duplex at real time: its CPU in each."""

    code: str
    """`before` or `now`."""
    uplink_cpu_pct: float
    duplex_cpu_pct: float
    uplink_latency_ms: Dist
    exit_code: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"uplink_latency_ms": self.uplink_latency_ms.to_json()}


async def cpu_phases(
    server: BenchServer, workdir: Path, plan: Plan, impl: Impl, code: str, run: int,
    progress: Progress,
) -> CpuPair:  # fmt: skip
    lane = server.add(impl.lane(f"{code}-{run}", workdir))
    proc = Proc(impl, impl.argv(server.url(lane), lane, plan.stats_interval_s))
    progress(f"{code} #{run + 1}: uplink {plan.compare_s:g} s + duplex {plan.compare_s:g} s")
    async with running([proc]):
        await proc.start()
        await proc.ready(30)
        if impl.eager:
            await asyncio.wait_for(lane.connected.wait(), 15)
        async with asyncio.timeout(10):
            await lane.connect_bot()
        await asyncio.sleep(0.3)
        meter = CpuMeter([proc])
        stop_play = asyncio.Event()
        player = asyncio.create_task(lane.play(stop_play))
        # The naive design connects once audio exists.
        await asyncio.wait_for(lane.connected.wait(), 15)
        await asyncio.sleep(plan.warmup_s)
        meter.start()
        start = now()
        await asyncio.sleep(plan.compare_s)
        _, (up,), _ = meter.read()
        window = (start, now())
        stop_talk = asyncio.Event()
        talker = asyncio.create_task(lane.talk(stop_talk, SCRIPT))
        await asyncio.sleep(plan.warmup_s)
        meter.start()
        await asyncio.sleep(plan.compare_s)
        _, (dx,), _ = meter.read()
        stop_talk.set()
        await talker
        stop_play.set()
        await player
        exit_code = await proc.stop()
        await lane.close()
    per_frame = lane.sample_rate * FRAME_MS // 1000
    latency = uplink_latencies_ms(
        lane.writes, lane.received_t, lane.received_n, per_frame, window=window
    )
    return CpuPair(code, up, dx, Dist.of(latency), exit_code)


async def before_and_now(
    server: BenchServer, workdir: Path, plan: Plan, commit: str, progress: Progress
) -> dict[str, Any]:
    """The code at `commit` and this code, alternately, the same phases each: CPU
    ratios that the machine's speed on the day (other tenants, the clock) cannot skew."""
    plain, counted_impl = before_impls(commit, workdir)
    pairs: list[CpuPair] = []
    for run in range(plan.count_runs):
        for code, impl in (("before", plain), ("now", IMPLS["sidecar-medium"])):
            pairs.append(await cpu_phases(server, workdir, plan, impl, code, run, progress))
    found = await counts(server, workdir, plan, 0, progress, impl=counted_impl)

    def mean(code: str, key: str) -> float:
        values = [getattr(p, key) for p in pairs if p.code == code]
        return sum(values) / len(values) if values else math.nan

    ratios = {
        phase: mean("now", f"{phase}_cpu_pct") / mean("before", f"{phase}_cpu_pct")
        for phase in ("uplink", "duplex")
    }
    return {
        "commit": commit,
        "seconds": plan.compare_s,
        "pairs": [p.to_json() for p in pairs],
        "uplink_ratio": ratios["uplink"],
        "duplex_ratio": ratios["duplex"],
        "counts": found.to_json(),
    }


async def peers(
    server: BenchServer, workdir: Path, plan: Plan, progress: Progress
) -> dict[str, Any]:
    """Each contender of PEERS once a round, alternated, `plan.peer_rounds` rounds:
    per-round CPU ratios to soxr-stream, and their median."""
    rows: list[dict[str, Any]] = []
    for round_ in range(plan.peer_rounds):
        for key in PEERS:
            pair = await cpu_phases(server, workdir, plan, IMPLS[key], key, round_, progress)
            rows.append(pair.to_json() | {"round": round_, "label": IMPLS[key].label})

    def ratios(key: str, phase: str) -> list[float]:
        out = []
        for round_ in range(plan.peer_rounds):
            by = {r["code"]: r for r in rows if r["round"] == round_}
            mine, theirs = by.get(key), by.get(PEERS[1])
            if mine and theirs and theirs[f"{phase}_cpu_pct"] > 0:
                out.append(mine[f"{phase}_cpu_pct"] / theirs[f"{phase}_cpu_pct"])
        return out

    return {
        "seconds": plan.compare_s,
        "rounds": plan.peer_rounds,
        "runs": rows,
        "ratios": {
            key: {phase: ratios(key, phase) for phase in ("uplink", "duplex")}
            for key in (PEERS[0], PEERS[2])
        },
    }
