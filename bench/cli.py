"""`python -m bench [--quick]`: run everything, print the summary, write results and docs."""

from __future__ import annotations

import argparse
import asyncio
import compileall
import datetime
import json
import math
import sys
import tempfile
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from bench import fidelity, floor, machine, plots, report, scenarios, targets
from bench.harness import IMPLS, REPO, BenchServer
from bench.plan import FULL, QUICK, Plan
from bench.retention import KEEP_RESULTS, prune

SECTIONS: Final = (
    "fidelity",
    "floor",
    "startup",
    "trials",
    "counts",
    "before",
    "peers",
    "chunks",
    "fill",
    "scale",
    "participants",
    "profile",
)
DEFAULT_SECTIONS: Final = SECTIONS[:-1]
STARTUP_IMPLS: Final = ("sidecar-medium", "naive", "soxr-stream")
# The default configuration runs first: its duplex phase is the soak.
TRIAL_ORDER: Final = (
    "sidecar-medium",
    "naive",
    "soxr-stream",
    "sidecar-fastest",
    "sidecar-best",
    "sidecar-twilio",
)
# Other dialects: the default's uplink and duplex phases, no idle or flat-out phase.
DIALECT_TRIALS: Final = ("sidecar-twilio",)
DEFAULT: Final = "sidecar-medium"
PROFILE_S: Final = 30.0
# Issue #12's "before": the CPU of the last full run before the fast path, pinned here
# (bench/before.json) so that neither a quick run nor the next full run moves it.
BEFORE_FILE: Final = REPO / "bench" / "before.json"

T = TypeVar("T")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark audio-sidecar against the naive and soxr-stream baselines.",
    )
    p.add_argument("--quick", action="store_true", help="short phases: about three minutes")
    p.add_argument("--soak", type=float, metavar="S", help="seconds of the default's duplex soak")
    p.add_argument(
        "--only",
        metavar="LIST",
        help=f"comma-separated sections to run ({','.join(SECTIONS)}); results go to a "
        "dated *-partial.json only: latest.json and docs/ are left alone",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help=f"also profile the default sidecar, {PROFILE_S:g} s each with py-spy (if "
        "installed) and cProfile; adds about a minute and a half",
    )
    p.add_argument("--no-docs", action="store_true", help="leave docs/ untouched")
    p.add_argument(
        "--results", type=Path, default=REPO / "bench" / "results", help="results directory"
    )
    p.add_argument("--docs", type=Path, default=REPO / "docs", help="docs directory")
    return p


class Run:
    def __init__(self, plan: Plan, results_dir: Path, working_name: str) -> None:
        self.plan = plan
        self.started = time.monotonic()
        self.results_dir = results_dir
        self.working_name = working_name
        self.results: dict[str, Any] = {
            "meta": machine.describe(REPO),
            "plan": plan.to_json(),
            "complete": False,
        }

    def progress(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)

    def save(self, name: str | None = None) -> Path:
        """Written after every section, so an interrupted run still leaves its numbers."""
        name = name or self.working_name
        self.results["elapsed_s"] = time.monotonic() - self.started
        self.results_dir.mkdir(parents=True, exist_ok=True)
        path = self.results_dir / name
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(
            json.dumps(self.results, separators=(",", ":"), default=_json_default) + "\n"
        )
        tmp.replace(path)
        return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _finite(value: Any) -> Any:
    """JSON has no NaN: None in its place, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _sync_sections(run: Run, wanted: set[str]) -> None:
    plan = run.plan
    if "fidelity" in wanted:
        run.progress("fidelity: every converter and rate")
        run.results["fidelity"] = [r.to_json() for r in fidelity.measure_all()]
        run.save()
    if "floor" in wanted:
        run.progress("floor: our per-frame work in-process")
        run.results["floor"] = [
            floor.measure(q, seconds=plan.floor_seconds).to_json() for q in floor.QUALITIES
        ]
        run.save()


async def _guarded(run: Run, what: str, work: Awaitable[T]) -> T | None:
    """One unit of work; a failure is recorded and the rest of the run goes on."""
    try:
        return await work
    except Exception as exc:  # any failure is reported, and the run goes on
        run.progress(f"{what} FAILED: {type(exc).__name__}: {exc}")
        run.results.setdefault("errors", []).append(
            {"what": what, "error": f"{type(exc).__name__}: {exc}"}
        )
        return None


async def _async_sections(run: Run, wanted: set[str]) -> None:
    plan = run.plan
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as tmp:
        workdir = Path(tmp)
        async with BenchServer().running() as server:
            if "startup" in wanted:
                run.results["startup"] = {}
                for key in STARTUP_IMPLS:
                    started = await _guarded(
                        run,
                        f"{key}: start-up",
                        scenarios.startup(
                            server, workdir, IMPLS[key], plan.startup_runs, run.progress
                        ),
                    )
                    if started is not None:
                        run.results["startup"][key] = started.to_json()
                run.save()
            if "trials" in wanted:
                run.results["trials"] = {}
                for key in TRIAL_ORDER:
                    impl = IMPLS[key]
                    dialect = key in DIALECT_TRIALS
                    other_quality = key.startswith("sidecar-") and key != DEFAULT and not dialect
                    phase = plan.other_qualities_s if other_quality else plan.uplink_s
                    duplex = (
                        plan.soak_s
                        if key == DEFAULT
                        else (plan.other_qualities_s if other_quality else plan.duplex_s)
                    )
                    work = scenarios.trial(
                        server, workdir, impl, plan, phase_s=phase, duplex_s=duplex,
                        idle=not (other_quality or dialect),
                        flat=not (dialect or (plan.quick and other_quality)),
                        progress=run.progress,
                    )  # fmt: skip
                    result = await _guarded(run, f"{key}: trial", work)
                    if result is not None:
                        run.results["trials"][key] = result.to_json()
                    run.save()
            if "counts" in wanted:
                from bench import hotpath

                run.results["counts"] = []
                for i in range(plan.count_runs):
                    counted_run = await _guarded(
                        run,
                        f"counts #{i + 1}",
                        hotpath.counts(server, workdir, plan, i, run.progress),
                    )
                    if counted_run is not None:
                        run.results["counts"].append(counted_run.to_json())
                    run.save()
            before = run.results.get("before") or {}
            if "before" in wanted and before.get("commit"):
                from bench import hotpath

                compared = await _guarded(
                    run,
                    f"before/now ({before['commit']})",
                    hotpath.before_and_now(server, workdir, plan, before["commit"], run.progress),
                )
                if compared is not None:
                    run.results["before_now"] = compared
                run.save()
            if "peers" in wanted:
                from bench import hotpath

                peered = await _guarded(
                    run, "peers", hotpath.peers(server, workdir, plan, run.progress)
                )
                if peered is not None:
                    run.results["peers"] = peered
                run.save()
            if "chunks" in wanted:
                from bench import hotpath

                run.results["chunks"] = []
                for ms in hotpath.CHUNK_MS:
                    row = await _guarded(
                        run,
                        f"--chunk-ms {ms}",
                        hotpath.chunk(server, workdir, plan, ms, run.progress),
                    )
                    if row is not None:
                        run.results["chunks"].append(row.to_json())
                    run.save()
            if "fill" in wanted:
                from bench import hotpath

                run.results["fill"] = []
                for _ in range(plan.count_runs):
                    for on in (False, True):
                        state = "on" if on else "off"
                        got = await _guarded(
                            run,
                            f"--fill-silence {state}",
                            hotpath.fill(server, workdir, plan, on, run.progress),
                        )
                        if got is not None:
                            run.results["fill"].append(got)
                        run.save()
            if "scale" in wanted:
                run.results["scale"] = []
                for n in plan.scale_ns:
                    scaled = await _guarded(
                        run, f"scale N={n}", scenarios.scale(server, workdir, n, plan, run.progress)
                    )
                    if scaled is not None:
                        run.results["scale"].append(scaled.to_json())
                    run.save()
            if "participants" in wanted:
                from bench.participants import participants

                streams = await _guarded(
                    run, "participants", participants(server, workdir, plan, run.progress)
                )
                if streams is not None:
                    run.results["participants"] = streams.to_json()
                run.save()
            if "profile" in wanted:
                from bench import profile as profiling

                found = await _guarded(
                    run,
                    "profile",
                    profiling.profile(
                        server, workdir, plan, PROFILE_S, run.results_dir, run.progress
                    ),
                )
                if found is not None:
                    run.results["profile"] = found.to_json()
                run.save()


def read_before(results_dir: Path) -> dict[str, Any] | None:
    """Issue #12's reference CPU figures: bench/before.json; without it, what the
    results directory's latest.json carries or, a full run itself, is."""
    if BEFORE_FILE.exists():
        pinned: dict[str, Any] = json.loads(BEFORE_FILE.read_text())
        return pinned
    latest = results_dir / "latest.json"
    try:
        last: dict[str, Any] = json.loads(latest.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(last.get("before"), dict):
        carried: dict[str, Any] = last["before"]
        return carried
    trials = last.get("trials") or {}
    if not last.get("complete") or last.get("plan", {}).get("quick") or DEFAULT not in trials:
        return None
    return {
        "source": f"{latest.name} at the start of this run",
        "date": last["meta"]["date"],
        "commit": last["meta"]["commit"],
        "sidecar_uplink_cpu_pct": trials[DEFAULT]["uplink"]["cpu_pct"],
        "sidecar_duplex_cpu_pct": trials[DEFAULT]["duplex"]["cpu_pct"],
    }


def compile_bytecode() -> None:
    """Compile the contenders' modules first, as `pip install` does. A checkout
    run with PYTHONDONTWRITEBYTECODE (as this workplace sets it) would compile
    every module afresh at every start: about 200 ms of ready time here that no
    installed sidecar pays, and more for us (30 modules) than for a one-file
    baseline."""
    for package in ("sidecar", "bench"):
        compileall.compile_dir(REPO / package, quiet=1)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    compile_bytecode()
    plan = QUICK if args.quick else FULL
    if args.soak is not None:
        plan = plan.with_soak(args.soak)
    partial = args.only is not None
    wanted = set(DEFAULT_SECTIONS if args.only is None else args.only.split(","))
    if args.profile:
        wanted.add("profile")
    unknown = wanted - set(SECTIONS)
    if unknown:
        parser().error(f"unknown sections: {', '.join(sorted(unknown))}")
    before = read_before(args.results)
    run = Run(plan, args.results, "partial.tmp" if partial else "latest.json")
    if before is not None:
        run.results["before"] = before
    run.progress(
        f"{'quick' if plan.quick else 'full'} run on {machine.summary_line(run.results['meta'])}"
    )
    _sync_sections(run, wanted)
    asyncio.run(_async_sections(run, wanted))

    run.results["targets"] = [v.to_json() for v in targets.evaluate(run.results)]
    run.results["complete"] = True
    run.results = _finite(run.results)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    dated = f"{stamp}{'-quick' if plan.quick else ''}{'-partial' if partial else ''}.json"
    run.save(dated)
    if partial:
        (run.results_dir / run.working_name).unlink(missing_ok=True)
    else:
        run.save()
    for old in prune(run.results_dir, dated):
        run.progress(f"removed {old.name} (older than the newest {KEEP_RESULTS} of its kind)")
    if not (args.no_docs or partial):
        figures = plots.draw_all(run.results, args.docs / "img")
        text = report.markdown(run.results, figures, dated)
        (args.docs / "PERFORMANCE.md").write_text(text)
        run.progress(f"wrote {args.docs / 'PERFORMANCE.md'} and {len(figures)} figures")
    run.results["elapsed_s"] = time.monotonic() - run.started
    print(report.summary_text(run.results))
    return 1 if run.results.get("errors") else 0
