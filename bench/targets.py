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
