"""The issue's targets, judged against one run's results.

Each verdict is True (met), False (missed) or None (this run cannot tell, e.g.
a quick run's soak is too short to extrapolate growth per hour).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Final

DEFAULT: Final = "sidecar-medium"
DEFAULT_PAIR: Final = "48k->16k"
# "At the 16-bit floor": within this much of an ideal converter's THD+N.
FLOOR_MARGIN_DB: Final = 1.0
# A growth figure needs at least this long a soak to mean anything.
MIN_SOAK_S: Final = 600.0
# Issue #12's goals.
PASSES_UPLINK_MAX: Final = 1.05
PASSES_DUPLEX_MAX: Final = 2.6
CPU_VS_BEFORE_MAX: Final = 0.70
SCALE_40_P99_MS: Final = 5.0
SOXR: Final = "soxr-stream"
# Issue #20's goals, against soxr-stream alternated in one run (the peers section).
PEER_MAX: Final = {"uplink": 0.85, "duplex": 1.0}
NAIVE_SRC: Final = "naive-src"


@dataclass(frozen=True, slots=True)
class Verdict:
    key: str
    target: str
    measured: str
    met: bool | None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def mark(self) -> str:
        return {True: "met", False: "MISSED", None: "n/a"}[self.met]


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _ok(condition: bool, *values: float) -> bool | None:
    if any(math.isnan(v) for v in values):
        return None
    return condition


def evaluate(results: dict[str, Any]) -> list[Verdict]:
    out: list[Verdict] = []
    trial = results.get("trials", {}).get(DEFAULT)
    floor = {f["quality"]: f for f in results.get("floor", [])}
    fidelity = {(f["converter"], f["pair"]): f for f in results.get("fidelity", [])}

    if trial is not None:
        up = trial["uplink"]["uplink_latency_ms"]
        dx = trial["duplex"]["uplink_latency_ms"]
        p99, dx_p99 = _num(up["p99"]), _num(dx["p99"])
        out.append(
            Verdict(
                "uplink_latency",
                "uplink p99 added latency < 2 ms",
                f"uplink only: p99 {p99:.2f} ms (p50 {_num(up['p50']):.2f}, n={up['n']}); "
                f"during duplex: p99 {dx_p99:.2f} ms (p50 {_num(dx['p50']):.2f}, n={dx['n']})",
                _ok(p99 < 2.0 and dx_p99 < 2.0, p99, dx_p99),
                "judged on the worse of the two",
            )
        )
        down = trial["downlink"]
        jitter = _num(down["jitter_ms"]["p99"])
        underruns = trial.get("underruns")
        missing = down["samples_expected"] - down["samples_delivered"]
        sent = trial.get("utterances_sent") or 0
        per = f" ({underruns / sent:.2f} per utterance sent)" if sent and underruns else ""
        out.append(
            Verdict(
                "downlink_jitter",
                "downlink pacing jitter p99 < 2 ms, no underruns",
                f"jitter p99 {jitter:.2f} ms; underruns (sidecar stats) {underruns}{per}; "
                f"frames the bot got over 20 ms late {down['late_frames']}; "
                f"samples missing {missing}",
                _ok(jitter < 2.0 and underruns == 0 and missing <= 0, jitter),
            )
        )

    ours = fidelity.get(("medium", DEFAULT_PAIR))
    naive = fidelity.get(("naive", DEFAULT_PAIR))
    if ours is not None:
        worst = _num(ours["worst_rejection_db"])
        thd, ideal = _num(ours["thd_n_db"]), _num(ours["ideal_thd_n_db"])
        naive_text = (
            f"; naive alias rejection {_num(naive['rejection_db']):.1f} dB" if naive else ""
        )
        out.append(
            Verdict(
                "fidelity",
                "alias rejection >= 100 dB, THD+N at the 16-bit floor",
                f"alias rejection {worst:.1f} dB worst case ({_num(ours['rejection_db']):.1f} dB "
                f"at {ours['rejection_tone_hz']} Hz); THD+N {thd:.1f} dB vs ideal {ideal:.1f} dB"
                + naive_text,
                _ok(worst >= 100 and thd <= ideal + FLOOR_MARGIN_DB, worst, thd, ideal),
                f"48 kHz -> 16 kHz, medium; floor = ideal converter + {FLOOR_MARGIN_DB:g} dB",
            )
        )

    if trial is not None and "medium" in floor:
        up_cpu = _num(trial["uplink"]["cpu_pct"])
        dx_cpu = _num(trial["duplex"]["cpu_pct"])
        idle = _num((trial.get("idle") or {}).get("cpu_pct"))
        floor_up = _num(floor["medium"]["uplink_cpu_pct"])
        bound = 2 * floor_up + idle
        out.append(
            Verdict(
                "cpu_uplink",
                "uplink-only CPU <= 2.5% of a core and <= 2 x floor + idle",
                f"{up_cpu:.2f}% (floor {floor_up:.2f}%, idle {idle:.2f}%, "
                f"2 x floor + idle = {bound:.2f}%)",
                _ok(up_cpu <= 2.5 and up_cpu <= bound, up_cpu, bound),
            )
        )
        out.append(
            Verdict(
                "cpu_duplex",
                "duplex CPU <= 5% of a core",
                f"{dx_cpu:.2f}% (floor {_num(floor['medium']['duplex_cpu_pct']):.2f}%)",
                _ok(dx_cpu <= 5.0, dx_cpu),
                "the server talks 70% of the time (700 ms of every second)",
            )
        )

    if trial is not None:
        peak = _num(trial["peak_rss_mib"])
        growth = _num(trial["growth_mib_per_hour"])
        soak = _num(trial["duplex"]["seconds"])
        long_enough = soak >= MIN_SOAK_S * 0.98
        met: bool | None
        if peak >= 60:
            met = False
        elif not long_enough:
            met = None
        else:
            met = _ok(growth < 1.0, growth)
        out.append(
            Verdict(
                "memory",
                "RSS < 60 MiB, growth < 1 MiB per hour",
                f"peak {peak:.1f} MiB after a {soak:.0f} s soak; growth {growth:+.2f} MiB/h",
                met,
                "" if long_enough else f"growth needs a soak of {MIN_SOAK_S:.0f} s (full run)",
            )
        )

    out += _hot_path(results)

    startup = results.get("startup", {}).get(DEFAULT)
    if startup is not None:
        median = _num(startup["median_ms"])
        out.append(
            Verdict(
                "startup",
                "ready in < 500 ms",
                f"median {median:.0f} ms, max {_num(startup['max_ms']):.0f} ms "
                f"over {len(startup['samples_ms'])} starts",
                _ok(median < 500, median),
            )
        )

    scale = {s["n"]: s for s in results.get("scale", [])}
    if 20 in scale:
        s = scale[20]
        problems = s["dropped_samples"] + s["underruns"] + s["uplink_samples_missing"]
        out.append(
            Verdict(
                "scale",
                "20 concurrent sidecars on this machine: no drops or underruns",
                f"drops {s['dropped_samples']} samples, uplink missing "
                f"{s['uplink_samples_missing']}, underruns (stats) {s['underruns']} for "
                f"{s.get('utterances_sent', 0)} utterances sent, frames the bots got over "
                f"20 ms late {s['downlink']['late_frames']}, uplink p99 "
                f"{_num(s['uplink_latency_ms']['p99']):.1f} ms, "
                f"CPU {_num(s['cpu_total_pct']):.0f}% of one core",
                problems == 0,
            )
        )
    elif scale:
        n = max(scale)
        out.append(
            Verdict(
                "scale",
                "20 concurrent sidecars on this machine: no drops or underruns",
                f"only N={n} measured in this run",
                None,
                "the full run measures N = 10, 20, 40",
            )
        )
    if 40 in scale:
        s = scale[40]
        p99 = _num(s["uplink_latency_ms"]["p99"])
        drops = s["dropped_samples"] + s["uplink_samples_missing"]
        out.append(
            Verdict(
                "scale_40",
                "40 duplex sidecars on this machine at real time: no drops, no underruns, "
                f"uplink p99 < {SCALE_40_P99_MS:g} ms",
                f"drops {drops} samples, underruns (stats) {s['underruns']} for "
                f"{s.get('utterances_sent', 0)} utterances sent, uplink p99 {p99:.1f} ms, "
                f"frames the bots got over 20 ms late {s['downlink']['late_frames']}, "
                f"CPU {_num(s['cpu_total_pct']):.0f}% of one core",
                _ok(drops == 0 and s["underruns"] == 0 and p99 < SCALE_40_P99_MS, p99),
            )
        )
    elif scale:
        out.append(
            Verdict(
                "scale_40",
                "40 duplex sidecars on this machine at real time: no drops, no underruns, "
                f"uplink p99 < {SCALE_40_P99_MS:g} ms",
                f"N=40 not measured in this run (N = {', '.join(str(n) for n in sorted(scale))})",
                None,
                "the full run measures N = 10, 20, 40",
            )
        )
    streams = results.get("participants")
    if streams is not None:
        n = streams["participants"]
        lost = streams["dropped_samples"] + streams["uplink_samples_missing"]
        complete = streams["streams_at_server"] == n and streams["joined"] == n
        out.append(
            Verdict(
                "participants",
                f"{n} participant streams plus the mixed one in one sidecar: every stream "
                "delivered, no drops",
                f"{streams['streams_at_server']}/{n} streams at the server, lost {lost} "
                f"samples, CPU {_num(streams['cpu_pct']):.1f}% of one core, uplink p99 "
                f"{_num(streams['participant_latency_ms']['p99']):.2f} ms",
                complete and lost == 0,
            )
        )
    return out


def passes_summary(runs: list[dict[str, Any]], phase: str) -> tuple[float, str]:
    """(the worst run's passes per frame, a description of every run's)."""
    phases = [r[phase] for r in runs if r.get(phase) and r[phase].get("frames_in")]
    if not phases:
        return math.nan, "not counted"
    worst = max(_num(p["passes_per_frame"]) for p in phases)
    each = ", ".join(
        f"{_num(p['passes_per_frame']):.3f} ({p['passes']}/{p['frames_in']})" for p in phases
    )
    steps = ", ".join(f"{_num(p['steps_per_frame']):.3f}" for p in phases)
    runs_text = "1 run" if len(phases) == 1 else f"{len(phases)} runs"
    return worst, f"{each} passes per frame ({runs_text}); task steps per frame {steps}"


def _hot_path(results: dict[str, Any]) -> list[Verdict]:
    """Issue #12: scheduler passes per frame, and CPU against soxr-stream and before."""
    out: list[Verdict] = []
    runs = results.get("counts") or []
    if runs:
        for phase, bound, what in (
            ("uplink", PASSES_UPLINK_MAX, "uplink"),
            ("duplex", PASSES_DUPLEX_MAX, "duplex"),
        ):
            worst, text = passes_summary(runs, phase)
            out.append(
                Verdict(
                    f"passes_{phase}",
                    f"scheduler passes per frame: {what} <= {bound:g}",
                    text,
                    _ok(worst <= bound, worst),
                    "judged on the worst run; bench.counted, frames the sidecar read",
                )
            )
    trials = results.get("trials", {})
    ours, soxr = trials.get(DEFAULT), trials.get(SOXR)
    if ours is not None and soxr is not None:
        for phase in ("uplink", "duplex"):
            mine, theirs = _num(ours[phase]["cpu_pct"]), _num(soxr[phase]["cpu_pct"])
            ratio = mine / theirs if theirs > 0 else math.nan
            out.append(
                Verdict(
                    f"cpu_{phase}_vs_soxr",
                    f"{'uplink-only' if phase == 'uplink' else 'duplex'} CPU below soxr-stream's",
                    f"{mine:.2f}% vs {theirs:.2f}%: {ratio:.2f}x",
                    _ok(ratio < 1.0, ratio),
                )
            )
    before = results.get("before")
    if ours is not None and before:
        up, dx = _num(ours["uplink"]["cpu_pct"]), _num(ours["duplex"]["cpu_pct"])
        b_up = _num(before.get("sidecar_uplink_cpu_pct"))
        b_dx = _num(before.get("sidecar_duplex_cpu_pct"))
        ratio = up / b_up if b_up > 0 else math.nan
        dx_ratio = dx / b_dx if b_dx > 0 else math.nan
        out.append(
            Verdict(
                "cpu_vs_before",
                f"uplink-only CPU <= {CPU_VS_BEFORE_MAX:.2f} x before",
                f"{up:.2f}% vs {b_up:.2f}% before: {ratio:.2f}x (duplex {dx:.2f}% vs "
                f"{b_dx:.2f}%: {dx_ratio:.2f}x)" + _yardsticks(results, before),
                _ok(ratio <= CPU_VS_BEFORE_MAX, ratio),
                f"before = the full run of {before.get('date')} at {before.get('commit')}",
            )
        )
    compared = results.get("before_now")
    if compared:
        means = {}
        for code in ("before", "now"):
            for phase in ("uplink", "duplex"):
                values = [
                    _num(p[f"{phase}_cpu_pct"]) for p in compared["pairs"] if p["code"] == code
                ]
                means[code, phase] = sum(values) / len(values) if values else math.nan
        ratio, dx_ratio = _num(compared["uplink_ratio"]), _num(compared["duplex_ratio"])
        n = sum(1 for p in compared["pairs"] if p["code"] == "now")
        out.append(
            Verdict(
                "cpu_vs_before_same_run",
                f"uplink-only CPU <= {CPU_VS_BEFORE_MAX:.2f} x before, both measured in this run",
                f"{means['now', 'uplink']:.2f}% vs {means['before', 'uplink']:.2f}% for "
                f"{compared['commit']}'s code: {ratio:.2f}x (duplex {means['now', 'duplex']:.2f}%"
                f" vs {means['before', 'duplex']:.2f}%: {dx_ratio:.2f}x)",
                _ok(ratio <= CPU_VS_BEFORE_MAX, ratio),
                f"{n} {'process' if n == 1 else 'processes'} of each, alternated, "
                f"{_num(compared['seconds']):g} s a phase",
            )
        )
    out += _peers(results)
    return out


def _median(values: list[float]) -> float:
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _peers(results: dict[str, Any]) -> list[Verdict]:
    """Issue #20: the default sidecar's CPU against soxr-stream's, round by round."""
    peers = results.get("peers")
    if not peers:
        return []
    out: list[Verdict] = []
    ratios = peers.get("ratios", {})
    for phase, bound in PEER_MAX.items():
        ours = [_num(r) for r in ratios.get(DEFAULT, {}).get(phase, [])]
        lean = [_num(r) for r in ratios.get(NAIVE_SRC, {}).get(phase, [])]
        ratio, lean_ratio = _median(ours), _median(lean)
        each = ", ".join(f"{r:.2f}" for r in ours)
        out.append(
            Verdict(
                f"cpu_{phase}_vs_soxr_alternated",
                f"{'uplink-only' if phase == 'uplink' else 'duplex'} CPU <= {bound:.2f} x "
                "soxr-stream's, alternated",
                f"{ratio:.2f}x (rounds: {each}); naive + libsamplerate (medium), "
                f"Attendee's design with our converter: {lean_ratio:.2f}x",
                _ok(ratio <= bound, ratio),
                f"median of {len(ours)} rounds, each contender one fresh process a round, "
                f"{_num(peers.get('seconds')):g} s a phase",
            )
        )
    return out


def _yardsticks(results: dict[str, Any], before: dict[str, Any]) -> str:
    """How fast the machine ran then and now, by work that did not change: the floor
    (our resample + encode in-process) and the soxr-stream baseline."""
    parts: list[str] = []
    floor = {f["quality"]: f for f in results.get("floor", [])}.get("medium")
    then = _num(before.get("floor_medium_uplink_us_per_frame"))
    if floor is not None and then > 0:
        now = _num(floor["uplink_us_per_frame"])
        parts.append(f"floor {now:.0f} vs {then:.0f} us/frame ({now / then:.2f}x)")
    soxr = results.get("trials", {}).get(SOXR)
    soxr_then = _num(before.get("soxr_uplink_cpu_pct"))
    if soxr is not None and soxr_then > 0:
        now = _num(soxr["uplink"]["cpu_pct"])
        parts.append(f"soxr-stream {now:.2f}% vs {soxr_then:.2f}% ({now / soxr_then:.2f}x)")
    if not parts:
        return ""
    return "; the machine, by work that did not change: " + ", ".join(parts)
