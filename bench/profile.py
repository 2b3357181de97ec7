"""`--profile`: where the default sidecar's CPU goes at real time.

Two runs of the default sidecar, each driven in duplex at real time by the
same bot and server as the trials: one sampled by py-spy (attached; ranks
functions by self time, the frame on top of the stack, and by inclusive time,
and shares CPU out by package), one under cProfile on a CPU clock
(`bench.cpu_profile`), which counts calls per 20 ms frame: how many wake-ups,
checkpoints, sends and copies each frame costs. Raw outputs are kept beside
the results. No latency is taken from profiled runs.
"""

from __future__ import annotations

import asyncio
import collections
import os
import pstats
import re
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from bench.harness import IMPLS, BenchServer, CpuMeter, Impl, Lane, Proc, running
from bench.plan import Plan
from bench.scenarios import SCRIPT, Progress

RATE_HZ: Final = 250
TOP: Final = 25
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


@dataclass(slots=True)
class Sampled:
    """py-spy: where the CPU went, by share of the samples taken while the process ran."""

    samples: int
    raw_file: str
    self_top: list[tuple[str, float]] = field(default_factory=list)
    inclusive_top: list[tuple[str, float]] = field(default_factory=list)
    packages: list[tuple[str, float]] = field(default_factory=list)


@dataclass(slots=True)
class Counted:
    """cProfile on a CPU clock: calls and CPU per 20 ms frame of duplex audio."""

    frames: int
    cpu_pct: float
    """CPU of the profiled run, % of one core (the profiler's overhead included)."""
    stats_file: str
    functions: list[dict[str, Any]] = field(default_factory=list)
    """Top functions by self CPU: name, calls_per_frame, self_us_per_frame, cum_us_per_frame."""


@dataclass(slots=True)
class Profile:
    seconds: float
    sampled: Sampled | None
    counted: Counted | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _package(path: str) -> str:
    """py-spy already shortens paths to the import path: `trio/_core/_run.py`."""
    if path.startswith("sidecar/"):
        return path.removesuffix(".py")
    head = path.split("/", 1)[0]
    if head.startswith("<") or "/" not in path:
        return "python (stdlib, builtins)"
    return head


def _name(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    if match is None:
        return frame, frame
    return f"{match['func']} ({match['file']})", match["file"]


def summarise_samples(raw: str, raw_file: str) -> Sampled:
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_name(f) for f in stack.split(";")]
        leaf, leaf_path = frames[-1]
        self_time[leaf] += count
        packages[_package(leaf_path)] += count
        for name in {name for name, _ in frames}:
            inclusive[name] += count
    share = 100.0 / total if total else 0.0
    return Sampled(
        samples=total,
        raw_file=raw_file,
        self_top=[(k, round(v * share, 2)) for k, v in self_time.most_common(TOP)],
        inclusive_top=[(k, round(v * share, 2)) for k, v in inclusive.most_common(TOP)],
        packages=[(k, round(v * share, 2)) for k, v in packages.most_common(TOP)],
    )


def _short(path: str) -> str:
    for marker in ("/site-packages/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return re.sub(r"^.*/lib/python3\.\d+/", "", path)


def summarise_counts(stats_path: Path, frames: int, cpu_pct: float) -> Counted:
    stats = pstats.Stats(str(stats_path))
    rows = []
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (path, line, func), (_cc, calls, self_s, cum_s, _callers) in table.items():
        name = f"{func} ({_short(path)}:{line})" if line else func
        rows.append(
            {
                "function": name,
                "calls_per_frame": round(calls / frames, 3),
                "self_us_per_frame": round(self_s / frames * 1e6, 2),
                "cum_us_per_frame": round(cum_s / frames * 1e6, 2),
            }
        )
    rows.sort(key=lambda r: -float(r["self_us_per_frame"]))
    return Counted(frames, cpu_pct, stats_path.name, rows[:TOP])


async def _drive(
    server: BenchServer,
    workdir: Path,
    plan: Plan,
    impl: Impl,
    seconds: float,
    during: Callable[[Proc], Awaitable[None]],
    lanes: dict[int, Lane] | None = None,
) -> tuple[Proc, float]:
    """Run `impl` in duplex at real time; `during` runs once the stream is warm.
    Returns the process (stopped) and its CPU % over `during`."""
    lane = server.add(Lane(f"profile-{impl.key}", workdir))
    proc = Proc(impl, impl.argv(server.url(lane), lane, plan.stats_interval_s))
    async with running([proc]):
        await proc.start()
        if lanes is not None:
            lanes[proc.pid] = lane
        await proc.ready(60)
        await asyncio.wait_for(lane.connected.wait(), 30)
        async with asyncio.timeout(10):
            await lane.connect_bot()
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(lane.play(stop)),
            asyncio.create_task(lane.talk(stop, SCRIPT)),
        ]
        await asyncio.sleep(plan.warmup_s)
        meter = CpuMeter([proc])
        meter.start()
        await during(proc)
        _, (cpu,), _ = meter.read()
        stop.set()
        await asyncio.gather(*tasks)
        await asyncio.sleep(0.5)
        await proc.stop(30)
        await lane.close()
    return proc, cpu


async def profile(
    server: BenchServer,
    workdir: Path,
    plan: Plan,
    seconds: float,
    out_dir: Path,
    progress: Progress,
) -> Profile:
    default = IMPLS["sidecar-medium"]
    sampled: Sampled | None = None
    spy = py_spy()
    if spy is None:
        progress("profile: py-spy is not installed (pip install py-spy); sampling skipped")
    else:
        progress(f"profile: py-spy on the default sidecar, duplex, {seconds:g} s")
        raw_path = out_dir / "profile-py-spy.txt"
        errors: list[str] = []

        async def record(proc: Proc) -> None:
            # Non-blocking: pausing the process per sample would make py-spy count the
            # event loop's epoll sleep as busy; the price is an occasional torn stack.
            recorder = await asyncio.create_subprocess_exec(
                spy, "record", "--pid", str(proc.pid), "--duration", str(round(seconds)),
                "--rate", str(RATE_HZ), "--format", "raw", "--nonblocking",
                "--output", str(raw_path),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await recorder.communicate()
            if recorder.returncode != 0:
                errors.append(err.decode(errors="replace").strip()[-300:])

        await _drive(server, workdir, plan, default, seconds, record)
        if errors or not raw_path.exists():
            progress(f"profile: py-spy failed: {errors}")
        else:
            sampled = summarise_samples(raw_path.read_text(), raw_path.name)

    progress(f"profile: cProfile (CPU clock) on the default sidecar, duplex, {seconds:g} s")
    stats_path = out_dir / "profile-cprofile.prof"
    stats_path.unlink(missing_ok=True)
    wrapped = replace(
        default,
        key="sidecar-medium-cprofile",
        command=("-m", "bench.cpu_profile", str(stats_path), "sidecar", "run"),
    )
    window: list[int] = []

    async def count(proc: Proc) -> None:
        # The profiler only runs between the two signals: no start-up or shutdown.
        lane = proc_lanes[proc.pid]
        first = len(lane.writes)
        os.kill(proc.pid, signal.SIGUSR1)
        await asyncio.sleep(seconds)
        os.kill(proc.pid, signal.SIGUSR2)
        window.append(len(lane.writes) - first)

    proc_lanes: dict[int, Lane] = {}
    proc, cpu = await _drive(server, workdir, plan, wrapped, seconds, count, proc_lanes)
    counted: Counted | None = None
    frames = window[0] if window else 0
    if stats_path.exists() and frames:
        counted = summarise_counts(stats_path, frames, cpu)
    else:
        progress(f"profile: cProfile produced nothing: {proc.tail()[-300:]}")
    return Profile(seconds, sampled, counted)
