"""The summary table printed at the end of a run, and docs/PERFORMANCE.md."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

from bench.machine import summary_line

# Which converter each contender runs, for the fidelity columns.
CONVERTER_OF: Final = {
    "sidecar-fastest": "fastest",
    "sidecar-medium": "medium",
    "sidecar-best": "best",
    "naive": "naive",
    "soxr-stream": "soxr",
}
PAIR: Final = "48k->16k"
DEFAULT: Final = "sidecar-medium"
DIALECT: Final = "sidecar-twilio"
NAIVE_NOTE: Final = (
    "The naive baseline stays cheaper than the sidecar, by design: its blocking threads "
    "wake for about a fifth of what a trio wake-up costs, and it does no filtering "
    "(stateless `audioop.ratecv`: 0 dB alias rejection). Its CPU is the cost of the wrong "
    "answer, not a target."
)
# Shorter phases than this give an RSS slope that is mostly allocator noise.
MIN_GROWTH_S: Final = 120.0


def fmt(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and not spec.endswith("%"):
        return f"{value}{suffix}"
    text = f"{value:{spec}}"
    if text.startswith("-") and not text.strip("-0.%"):
        text = text[1:]  # no "-0.00"
    return text + suffix


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """Markdown table; `align` is one char per column (l or r), right by default."""
    marks = [("---:" if (align[i : i + 1] or "r") == "r" else ":---") for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _plain(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def _fidelity(results: dict[str, Any], converter: str, pair: str = PAIR) -> dict[str, Any]:
    for row in results.get("fidelity", []):
        if row["converter"] == converter and row["pair"] == pair:
            return dict(row)
    return {}


# -- the one summary table ------------------------------------------------------------

SUMMARY_HEADERS: Final = (
    "contender",
    "up p50",
    "up p99",
    "dx up p99",
    "down p50 burst/stream",
    "jitter p99",
    "underruns",
    "CPU idle",
    "CPU up",
    "CPU duplex",
    "flat xRT",
    "RSS peak",
    "ready",
    "alias rej",
    "conv delay",
)


def summary_rows(results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    for floor in results.get("floor", []):
        rows.append(
            [
                f"floor ({floor['quality']})",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                fmt(floor["uplink_cpu_pct"], ".2f", "%"),
                fmt(floor["duplex_cpu_pct"], ".2f", "%"),
                "-",
                "-",
                "-",
                "-",
                "-",
            ]
        )
    startup = results.get("startup", {})
    for impl, t in results.get("trials", {}).items():
        up, dx, down = t["uplink"], t["duplex"], t["downlink"]
        flat = t.get("flat") or {}
        conv = _fidelity(results, CONVERTER_OF.get(impl, ""))
        ready = startup.get(impl, {}).get("median_ms", t["startup_ms"])
        rows.append(
            [
                t["label"],
                fmt(up["uplink_latency_ms"]["p50"], ".2f", " ms"),
                fmt(up["uplink_latency_ms"]["p99"], ".2f", " ms"),
                fmt(dx["uplink_latency_ms"]["p99"], ".2f", " ms"),
                f"{fmt(down['latency_burst_ms']['p50'], '.1f')}/"
                f"{fmt(down['latency_stream_ms']['p50'], '.1f')} ms",
                fmt(down["jitter_ms"]["p99"], ".2f", " ms"),
                fmt(t.get("underruns")),
                fmt((t.get("idle") or {}).get("cpu_pct"), ".2f", "%"),
                fmt(up["cpu_pct"], ".2f", "%"),
                fmt(dx["cpu_pct"], ".2f", "%"),
                fmt(flat.get("x_realtime"), ".0f", "x"),
                fmt(t["peak_rss_mib"], ".1f", " MiB"),
                fmt(ready, ".0f", " ms"),
                fmt(conv.get("worst_rejection_db"), ".0f", " dB"),
                fmt(conv.get("delay_ms"), ".2f", " ms"),
            ]
        )
    return rows


def summary_text(results: dict[str, Any]) -> str:
    meta = results["meta"]
    parts = [
        f"audio-sidecar bench ({'quick' if results['plan']['quick'] else 'full'}), "
        f"{meta['date']}, {summary_line(meta)}",
        "",
        _plain(SUMMARY_HEADERS, summary_rows(results)),
    ]
    for s in sorted(results.get("scale", []), key=lambda s: s["n"]):
        parts.append(
            f"scale N={s['n']}: CPU {s['cpu_total_pct']:.0f}% of one core "
            f"(harness {s['harness_cpu_pct']:.0f}%), uplink p99 "
            f"{fmt(s['uplink_latency_ms']['p99'], '.1f')} ms, jitter p99 "
            f"{fmt(s['downlink']['jitter_ms']['p99'], '.1f')} ms, underruns {s['underruns']}, "
            f"drops {s['dropped_samples'] + s['uplink_samples_missing']} samples"
        )
    for i, r in enumerate(results.get("counts") or []):
        up, dx = r["uplink"], r["duplex"]
        parts.append(
            f"counts #{i + 1}: scheduler passes per frame uplink "
            f"{fmt(up['passes_per_frame'], '.3f')} (task steps {fmt(up['steps_per_frame'], '.3f')}"
            f"), duplex {fmt(dx['passes_per_frame'], '.3f')} (task steps "
            f"{fmt(dx['steps_per_frame'], '.3f')}); per frame in duplex: trio.Event "
            f"{fmt(dx['events_per_frame'], '.2f')}, CancelScope "
            f"{fmt(dx['cancel_scopes_per_frame'], '.2f')} (uplink "
            f"{fmt(up['events_per_frame'], '.2f')}, {fmt(up['cancel_scopes_per_frame'], '.2f')})"
        )
    compared = results.get("before_now")
    if compared:
        c = compared.get("counts") or {}
        parts.append(
            f"before ({compared['commit']}) vs now, same run: uplink CPU "
            f"{fmt(compared['uplink_ratio'], '.2f')}x, duplex "
            f"{fmt(compared['duplex_ratio'], '.2f')}x"
            + (
                f"; before's passes per frame uplink "
                f"{fmt(c['uplink']['passes_per_frame'], '.3f')}, duplex "
                f"{fmt(c['duplex']['passes_per_frame'], '.3f')}"
                if c
                else ""
            )
        )
    if results.get("chunks"):
        parts.append(
            "uplink-only CPU by --chunk-ms: "
            + ", ".join(
                f"{r['chunk_ms']} ms {fmt(r['cpu_pct'], '.2f')}%"
                for r in sorted(results["chunks"], key=lambda r: r["chunk_ms"])
            )
        )
    if results.get("fill"):
        by_state: dict[str, list[Any]] = {}
        for r in results["fill"]:
            by_state.setdefault(r["fill"], []).append(r)
        parts.append(
            "a bot writing without a pause, --fill-silence off/on: "
            + ", ".join(
                f"{state} CPU {fmt(sum(r['cpu_pct'] for r in rows) / len(rows), '.2f')}%, "
                f"uplink p99 {fmt(max(r['uplink_latency_ms']['p99'] for r in rows), '.1f')} ms"
                for state, rows in sorted(by_state.items(), reverse=True)
            )
        )
    if "naive" in results.get("trials", {}):
        parts.append(
            "naive: cheaper by design (blocking threads wake for about a fifth of a trio "
            "wake-up's cost; no filtering, 0 dB alias rejection)"
        )
    streams = results.get("participants")
    if streams:
        parts.append(
            f"participants: {streams['participants']} + mixed in one sidecar: CPU "
            f"{streams['cpu_pct']:.1f}% of one core ({streams['cpu_per_stream_pct']:.2f}% per "
            f"stream), uplink p99 {fmt(streams['participant_latency_ms']['p99'], '.2f')} ms "
            f"(mixed {fmt(streams['mixed_latency_ms']['p99'], '.2f')} ms), drops "
            f"{streams['dropped_samples'] + streams['uplink_samples_missing']} samples"
        )
    profile = results.get("profile")
    if profile and profile.get("counted"):
        counted = profile["counted"]
        parts.append(f"\nprofile (cProfile, per 20 ms frame, {counted['frames']} frames):")
        for row in counted["functions"][:12]:
            parts.append(
                f"  {row['calls_per_frame']:7.2f} calls {row['self_us_per_frame']:8.1f} us self "
                f"{row['cum_us_per_frame']:8.1f} us incl  {row['function']}"
            )
    if profile and profile.get("sampled"):
        top = ", ".join(f"{k} {v:.0f}%" for k, v in profile["sampled"]["packages"][:6])
        parts.append(f"profile (py-spy, share of busy samples by package): {top}")
    parts.append("")
    for v in results.get("targets", []):
        parts.append(f"[{_mark(v['met']):>6}] {v['target']}: {v['measured']}")
    for error in results.get("errors", []):
        parts.append(f"[ FAILED] {error['what']}: {error['error']}")
    parts.append(f"\nelapsed {results.get('elapsed_s', 0):.0f} s")
    return "\n".join(parts)


def _mark(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[met]


# -- docs/PERFORMANCE.md ----------------------------------------------------------------


def _figure(figures: dict[str, str], key: str, alt: str) -> str:
    name = figures.get(key)
    return f"![{alt}](img/{name})" if name else ""


def markdown(results: dict[str, Any], figures: dict[str, str], results_file: str) -> str:
    meta = results["meta"]
    plan = results["plan"]
    quick = plan["quick"]
    out: list[str] = []
    add = out.append
    add("# Performance")
    add("")
    add(
        f"Generated by `python -m bench{' --quick' if quick else ''}` "
        f"(`make {'bench-quick' if quick else 'bench'}`) on **{meta['date']}**; "
        "do not edit by hand, re-run the bench. Raw numbers: "
        f"[`bench/results/{results_file}`](../bench/results/{results_file})."
    )
    if quick:
        add("")
        add(
            "> **Quick run.** Phases last seconds, not minutes: percentiles rest on few "
            "samples, the soak is too short to extrapolate memory growth, and only N = 10 "
            "is tried for scale. Run `make bench` for the figures to quote."
        )
    add("")
    add(f"**Machine:** {summary_line(meta)}; {meta.get('physical_cores')} physical cores. ")
    pkgs = ", ".join(f"{k} {v}" for k, v in meta["packages"].items())
    add(
        f"Commit `{meta['commit'] or 'unknown'}`; load average at start "
        f"{', '.join(str(x) for x in meta['load_at_start'])}; {pkgs}. "
        f"The run took {results.get('elapsed_s', 0) / 60:.1f} minutes."
    )
    errors = results.get("errors", [])
    if errors:
        add("")
        add("> **Parts of this run failed** and are missing below:")
        for error in errors:
            add(f"> - {error['what']}: `{error['error']}`")
    add("")
    add("## Targets")
    add("")
    add("At the default settings (20 ms chunks, 16 kHz to the server, `--quality medium`).")
    add("")
    add(
        _table(
            ("target", "measured", "verdict"),
            [
                (
                    v["target"],
                    v["measured"] + (f" ({v['note']})" if v["note"] else ""),
                    f"**{_mark(v['met'])}**",
                )
                for v in results.get("targets", [])
            ],
            "llr",
        )
    )
    add("")
    add("## Summary")
    add("")
    add(
        "Contenders: **sidecar** (`audio-sidecar run`, per quality); **naive**, the "
        "approach CONTEXT.md describes for Attendee (stateless `audioop.ratecv` per chunk, "
        "sample repetition up, `json.dumps` + base64, a synchronous `websockets` client with "
        "a sender thread; `bench/naive.py`); **soxr-stream**, the neighbouring practice "
        "(stateful `soxr.ResampleStream` VHQ, asyncio `websockets` client; "
        "`bench/soxr_stream.py`); **floor**, our own resample + encode work per frame "
        "in-process with no I/O (`bench/floor.py`). All run as processes between the same "
        "bot and server, except the floor."
    )
    add("")
    add(_table(SUMMARY_HEADERS, summary_rows(results), "l"))
    add("")
    if "naive" in results.get("trials", {}):
        add(f"{NAIVE_NOTE}")
        add("")
    add(
        "up = uplink only at real time; dx = during duplex; down = server sends -> bot "
        "reads the first frame (burst: one 700 ms message; stream: 35 x 20 ms messages at "
        "real time); CPU in % of one core; flat xRT = closed-loop flat-out throughput in "
        "times real time; alias rej = worst-case alias rejection of the converter, 48 kHz -> "
        "16 kHz; conv delay = its algorithmic delay."
    )

    trials = results.get("trials", {})
    add("")
    add("## 1. Uplink added latency")
    add("")
    add(
        "From the bot writing a 20 ms frame to the server holding the message that carries "
        "that frame's first sample, at real-time pacing. Nothing is subtracted; the "
        "converter's algorithmic delay (how long it holds samples back) is shown beside. "
        "A sample held back rides in the next message, so it is not on the path of a "
        "frame's *first* sample unless the hold-back exceeds a frame."
    )
    add("")
    rows = []
    for impl, t in trials.items():
        up, dx = t["uplink"]["uplink_latency_ms"], t["duplex"]["uplink_latency_ms"]
        conv = _fidelity(results, CONVERTER_OF.get(impl, ""))
        rows.append(
            [
                t["label"],
                fmt(up["n"]),
                fmt(up["p50"]),
                fmt(up["p95"]),
                fmt(up["p99"]),
                fmt(up["max"]),
                fmt(dx["n"]),
                fmt(dx["p50"]),
                fmt(dx["p99"]),
                fmt(dx["max"]),
                fmt(conv.get("delay_ms")),
                fmt(conv.get("holdback_ms_max")),
            ]
        )
    add(
        _table(
            (
                "contender",
                "n",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "duplex n",
                "duplex p50",
                "duplex p99",
                "duplex max",
                "algorithmic delay ms",
                "max hold-back ms",
            ),
            rows,
            "l",
        )
    )
    add("")
    add(_figure(figures, "latency_uplink", "uplink latency CDF"))

    add("")
    add("## 2. Downlink: latency, pacing jitter, underruns")
    add("")
    add(
        "The server speaks one 700 ms utterance per second, alternately as one message "
        "(burst, like a TTS reply) and as 35 messages of 20 ms sent at real time "
        "(stream). Latency: the server sending an utterance's first message -> the bot "
        "reading its first frame; it includes any jitter buffer (the sidecar's "
        "`--jitter-ms` is 40). Jitter: each frame's arrival against the utterance's ideal "
        "20 ms schedule (|deviation|), the schedule anchored at the median frame so that one "
        "frame the bench's own event loop read late counts once; anchored at the first frame, "
        "as until 2026-11-25, a late first read shifted the whole utterance (that added about "
        "2 ms to the sidecar's p99). Late frames: more than 20 ms behind "
        "that schedule, as the bot saw them. Underruns: the process's own count where it "
        "keeps one, over the whole trial, beside the number of utterances sent in it. SNR: "
        "what the bot heard of each utterance against the same converter run offline on the "
        "whole utterance at once, so only streaming artefacts count (a resampler flushed "
        "mid-utterance, a lost or repeated sample); 200 dB means sample-exact."
    )
    add("")
    rows = []
    for t in trials.values():
        d = t["downlink"]
        rows.append(
            [
                t["label"],
                f"{d['matched']}/{d['utterances']}",
                fmt(d["latency_burst_ms"]["p50"]),
                fmt(d["latency_burst_ms"]["max"]),
                fmt(d["latency_stream_ms"]["p50"]),
                fmt(d["latency_stream_ms"]["max"]),
                fmt(d["jitter_ms"]["p50"]),
                fmt(d["jitter_ms"]["p99"]),
                fmt(d["jitter_ms"]["max"]),
                fmt(d["late_frames"]),
                f"{fmt(t.get('underruns'))} / {t.get('utterances_sent', '-')}",
                f"{fmt(d['snr_db']['min'], '.1f')} / {fmt(d['snr_db']['p50'], '.1f')}",
                f"{d['samples_delivered']}/{d['samples_expected']}",
            ]
        )
    add(
        _table(
            (
                "contender",
                "utterances",
                "burst p50 ms",
                "burst max",
                "stream p50 ms",
                "stream max",
                "jitter p50 ms",
                "jitter p99",
                "jitter max",
                "late frames",
                "underruns / utterances sent",
                "SNR vs offline min / median dB",
                "samples delivered/expected",
            ),
            rows,
            "l",
        )
    )
    add("")
    add(_figure(figures, "latency_downlink", "downlink latency and jitter"))

    add("")
    add("## 3. Fidelity per converter and rate")
    add("")
    add(
        "Each converter is fed 20 ms chunks as the processes feed it. THD+N: 997 Hz at "
        "-3 dBFS through the 16-bit path (s16le in and out), 20 Hz to 20 kHz or Nyquist; "
        "*ideal* is an exact band-limited resampling of the same quantized input, quantized "
        "once: the 16-bit floor. Alias rejection (down): a full-scale-minus-3-dB tone above "
        "the output Nyquist against its alias, at 1.25 x Nyquist (10 kHz for 16 kHz: "
        "CONTEXT.md's example) and worst case over a sweep up to 23.5 kHz. Image rejection "
        "(up): a tone against its worst image, at 1 kHz and worst over tones up to 0.9 x the "
        "input Nyquist. Rejection and passband use the float path where a converter has one "
        "(a 16-bit output cannot show anything below about -96 dB). Delay: hold-back plus "
        "alignment (all are time-aligned: alignment is 0)."
    )
    add("")
    rows = []
    for r in results.get("fidelity", []):
        rows.append(
            [
                r["pair"],
                r["label"],
                fmt(r["thd_n_db"], ".1f"),
                fmt(r["ideal_thd_n_db"], ".1f"),
                f"{fmt(r['rejection_db'], '.1f')} @ {r['rejection_tone_hz']}",
                f"{fmt(r['worst_rejection_db'], '.1f')} @ {r['worst_rejection_tone_hz']}",
                fmt(r["passband_01_hz"], ".0f"),
                fmt(r["passband_3_hz"], ".0f"),
                fmt(r["delay_ms"], ".3f"),
                fmt(r["holdback_ms_max"], ".2f"),
                fmt(r["reported_delay_ms"], ".3f"),
            ]
        )
    add(
        _table(
            (
                "pair",
                "converter",
                "THD+N dB",
                "ideal dB",
                "rejection dB @ Hz",
                "worst dB @ Hz",
                "-0.1 dB Hz",
                "-3 dB Hz",
                "delay ms",
                "max hold-back ms",
                "Resampler.delay_ms",
            ),
            rows,
            "ll",
        )
    )
    add("")
    add(_figure(figures, "response_down", "frequency response and aliasing, downsampling"))
    add("")
    add(_figure(figures, "response_up", "frequency response and imaging, upsampling"))

    add("")
    add("## 4. CPU per stream")
    add("")
    add(
        "The kernel's on-CPU time of the process's threads (sum_exec_runtime, "
        "/proc/PID/task/*/schedstat, in ns) over each phase, divided by wall time: % of one "
        "core. One process per stream, as a bot spawns it. "
        "Idle: bot and server connected, no audio (the process's wake-up cost). Duplex: the "
        "server talks 70% of the time. Floor: the same per-frame work as the sidecar "
        "(AudioSocket decode, resample, chunk, JSON + base64 encode; downlink: JSON decode, "
        "resample, playout, frame encode) timed in-process, best of three. Flat-out: frames "
        "as fast as the process delivers them, at most 0.5 s of audio in flight "
        "(closed loop); open loop: 8 s written at once, as a bot replaying a file would."
    )
    add("")
    rows = []
    for floor in results.get("floor", []):
        rows.append(
            [
                f"floor, {floor['quality']}",
                "-",
                fmt(floor["uplink_cpu_pct"]),
                fmt(floor["duplex_cpu_pct"]),
                f"{floor['uplink_us_per_frame']:.0f} + "
                f"{floor['downlink_us_per_frame']:.0f} us/frame",
                "-",
                "-",
                "-",
            ]
        )
    for t in trials.values():
        flat = t.get("flat") or {}
        rows.append(
            [
                t["label"],
                fmt((t.get("idle") or {}).get("cpu_pct")),
                fmt(t["uplink"]["cpu_pct"]),
                fmt(t["duplex"]["cpu_pct"]),
                "-",
                fmt(flat.get("x_realtime"), ".0f", "x"),
                fmt(flat.get("cpu_pct"), ".0f", "%"),
                fmt(flat.get("burst_delivered"), ".1%"),
            ]
        )
    add(
        _table(
            (
                "",
                "idle %",
                "uplink %",
                "duplex %",
                "floor detail",
                "flat-out",
                "flat-out CPU",
                "open-loop burst delivered",
            ),
            rows,
            "l",
        )
    )
    add("")
    add(_figure(figures, "cpu", "CPU per stream"))
    add("")
    add(_cpu_ratios_markdown(results))
    counts = results.get("counts")
    if counts:
        add("")
        add(_counts_markdown(counts, results))
    chunk_rows = results.get("chunks")
    if chunk_rows:
        add("")
        add(_chunks_markdown(chunk_rows, results, figures))
    if DIALECT in trials and DEFAULT in trials:
        add("")
        add(_dialects_markdown(trials))

    add("")
    add("## 8. Memory")
    add("")
    rows = []
    for t in trials.values():
        rows.append(
            [
                t["label"],
                fmt(t["rss_ready_mib"], ".1f"),
                fmt(t["rss_end_mib"], ".1f"),
                fmt(t["peak_rss_mib"], ".1f"),
                fmt(t["peak_rss_after_flat_mib"], ".1f"),
                fmt(t.get("uss_end_mib"), ".1f"),
                fmt(t["duplex"]["seconds"], ".0f"),
                fmt(
                    t["growth_mib_per_hour"] if t["duplex"]["seconds"] >= MIN_GROWTH_S else None,
                    "+.2f",
                ),
            ]
        )
    add(
        _table(
            (
                "contender",
                "RSS at ready MiB",
                "RSS after duplex",
                "peak (VmHWM)",
                "peak after flat-out",
                "USS after duplex",
                "duplex s",
                "growth MiB/h",
            ),
            rows,
            "l",
        )
    )
    add("")
    soak = trials.get("sidecar-medium", {}).get("duplex", {}).get("seconds", 0)
    add(
        f"The default sidecar's duplex phase is the soak ({soak:.0f} s here); growth is the "
        "slope of a straight line through its RSS samples after the first quarter, "
        f"extrapolated to an hour; phases shorter than {MIN_GROWTH_S:.0f} s get no growth "
        "figure. RSS counts the pages of shared libraries (numpy's OpenBLAS, libpython) "
        "that are resident, which depends on the page cache (a fresh install read about "
        "5 MiB more); USS is what the process alone holds, what each extra sidecar costs."
    )
    add("")
    add(_figure(figures, "memory", "RSS over the duplex phase"))

    add("")
    add("## 9. Start-up")
    add("")
    rows = [
        [
            s["label"],
            fmt(len(s["samples_ms"])),
            fmt(s["median_ms"], ".0f"),
            fmt(s["max_ms"], ".0f"),
            fmt(min(s["rss_ready_mib"], default=math.nan), ".1f"),
        ]
        for s in results.get("startup", {}).values()
    ]
    add(_table(("contender", "starts", "median ms", "max ms", "RSS at ready MiB"), rows, "l"))
    add("")
    add(
        "From spawning `python -m ...` to reading its `ready` line on stdout, with every"
        " contender's modules compiled to bytecode first, as `pip install` does"
        " (`bench.cli.compile_bytecode`)."
    )

    scale = sorted(results.get("scale", []), key=lambda s: s["n"])
    if scale:
        add("")
        add("## 10. Scale")
        add("")
        add(
            f"N default sidecars on this {meta['cores']}-core machine, each with its own bot "
            "and websocket connection, all in duplex at real time (phases staggered), the "
            "bench's bot and server for all of them in one more process. Drops: samples the "
            "sidecars' stats count as dropped plus uplink samples that never reached the "
            "server."
        )
        add("")
        rows = [
            [
                fmt(s["n"]),
                fmt(s["startup_median_ms"], ".0f"),
                fmt(s["startup_max_ms"], ".0f"),
                fmt(s["cpu_total_pct"], ".0f"),
                fmt(s["cpu_per_sidecar_pct"], ".2f"),
                fmt(s["harness_cpu_pct"], ".0f"),
                fmt(s["uplink_latency_ms"]["p50"]),
                fmt(s["uplink_latency_ms"]["p99"]),
                fmt(s["downlink"]["jitter_ms"]["p99"]),
                fmt(s["downlink"]["latency_stream_ms"]["p50"], ".1f"),
                f"{s['underruns']} / {s.get('utterances_sent', '-')}",
                fmt(s["downlink"]["late_frames"]),
                fmt(s["dropped_samples"] + s["uplink_samples_missing"]),
                "yes" if all(c == 0 for c in s["exit_codes"]) else "no",
            ]
            for s in scale
        ]
        add(
            _table(
                (
                    "N",
                    "ready median ms",
                    "ready max ms",
                    "CPU all %",
                    "CPU each %",
                    "harness CPU %",
                    "uplink p50 ms",
                    "uplink p99 ms",
                    "jitter p99 ms",
                    "stream latency p50 ms",
                    "underruns / utterances sent",
                    "late frames",
                    "drops (samples)",
                    "clean exits",
                ),
                rows,
            )
        )
        add("")
        add(_figure(figures, "scale", "scale"))

    streams = results.get("participants")
    if streams:
        add("")
        add(_participants_markdown(streams, results))

    profile = results.get("profile")
    if profile:
        add("")
        add("## Profile of the default sidecar")
        add("")
        add(_profile_markdown(profile))

    add("")
    add("## Method and caveats")
    add("")
    for line in CAVEATS:
        add(f"- {line}")
    add("")
    return "\n".join(out)


def _cpu_ratios_markdown(results: dict[str, Any]) -> str:
    trials = results.get("trials", {})
    lines = [
        "Issues #12's and #20's CPU goals, each a ratio of this run's default sidecar "
        "(uplink only at real time, and duplex) to the figure beside it:",
        "",
    ]
    by_key = {v["key"]: v for v in results.get("targets", [])}
    for key in (
        "cpu_uplink_vs_soxr_alternated",
        "cpu_duplex_vs_soxr_alternated",
        "cpu_uplink_vs_soxr",
        "cpu_duplex_vs_soxr",
        "cpu_vs_before",
        "cpu_vs_before_same_run",
    ):
        v = by_key.get(key)
        if v is not None:
            note = f" ({v['note']})" if v["note"] else ""
            lines.append(f"- {v['target']}: {v['measured']}{note}: **{_mark(v['met'])}**.")
    before = results.get("before")
    if before:
        lines.append(
            f"- Before: {fmt(before.get('sidecar_uplink_cpu_pct'), '.2f')}% uplink, "
            f"{fmt(before.get('sidecar_duplex_cpu_pct'), '.2f')}% duplex, from "
            f"{before.get('source', 'an earlier run')} (`bench/before.json`)."
        )
    compared = results.get("before_now")
    if compared:
        rows = [
            [
                f"{p['code']}{' (' + compared['commit'] + ')' if p['code'] == 'before' else ''}",
                fmt(p["uplink_cpu_pct"], ".2f"),
                fmt(p["duplex_cpu_pct"], ".2f"),
                fmt(p["uplink_latency_ms"]["p50"]),
                fmt(p["uplink_latency_ms"]["p99"]),
            ]
            for p in compared["pairs"]
        ]
        lines += [
            "",
            "Before and now in this run: the default sidecar as it was at "
            f"`{compared['commit']}` (its `sidecar/` from `git archive`, no checkout) and as it "
            "is, one fresh process at a time, alternated, each through "
            f"{fmt(compared['seconds'], 'g')} s of uplink only and {fmt(compared['seconds'], 'g')}"
            " s of duplex at real time: the machine's speed on the day (other tenants, the "
            "clock) cancels out of the ratio, which a figure from another day cannot promise.",
            "",
            _table(("code", "uplink %", "duplex %", "uplink p50 ms", "uplink p99 ms"), rows, "l"),
            "",
        ]
    peers = results.get("peers")
    if peers:
        rows = [
            [
                str(r["round"] + 1),
                r["label"],
                fmt(r["uplink_cpu_pct"], ".2f"),
                fmt(r["duplex_cpu_pct"], ".2f"),
                fmt(r["uplink_latency_ms"]["p50"]),
                fmt(r["uplink_latency_ms"]["p99"]),
            ]
            for r in peers["runs"]
        ]
        lines += [
            "",
            "Peers in this run (issue #20's ratios): the default sidecar, soxr-stream and "
            "*naive + libsamplerate* (`bench.naive --converter libsamplerate`: Attendee's "
            "threads and blocking `websockets` client with the sidecar's own converter at "
            "`medium`, one per direction, and nothing else changed) one fresh process at a "
            "time, alternated round by round, each through "
            f"{fmt(peers['seconds'], 'g')} s of uplink only and {fmt(peers['seconds'], 'g')} s "
            "of duplex at real time. Each round gives a ratio to that round's soxr-stream; "
            "the verdicts take the median. The trials' ratios above come from phases minutes "
            "apart, which the machine's drift can skew either way.",
            "",
            _table(
                ("round", "contender", "uplink %", "duplex %", "uplink p50 ms", "uplink p99 ms"),
                rows,
                "ll",
            ),
            "",
        ]
    naive = trials.get("naive")
    if naive:
        lines.append(
            f"- naive: {fmt(naive['uplink']['cpu_pct'], '.2f')}% uplink, "
            f"{fmt(naive['duplex']['cpu_pct'], '.2f')}% duplex. {NAIVE_NOTE}"
        )
    return "\n".join(lines)


def _counts_markdown(runs: list[dict[str, Any]], results: dict[str, Any]) -> str:
    by_key = {v["key"]: v for v in results.get("targets", [])}
    lines = [
        "## 5. Scheduler passes per frame",
        "",
        "The default sidecar, counted: `python -m bench.counted` is `audio-sidecar run` (the "
        "same config from `sidecar.cli`, the same `service.Sidecar`) under a trio "
        "Instrument, driven like a trial: uplink only at real time, then duplex (the "
        "server talking 70% of the time). A *pass* is one turn of trio's run loop (one "
        "epoll wait: `after_io_wait`); a *task step* is one task resumed "
        "(`before_task_step`); trio.Event and CancelScope objects are counted as they are "
        "constructed. Every figure is per 20 ms frame the sidecar read from the bot in the "
        "phase; stats every "
        f"{fmt(results['plan']['stats_interval_s'], 'g')} s and the 10 s ping are included, "
        "as in the trials. The counts are exact; runs differ only by a phase's edges. CPU "
        "here has the instrument on: the trials' figures are the ones to quote.",
        "",
    ]
    for key in ("passes_uplink", "passes_duplex"):
        v = by_key.get(key)
        if v is not None:
            lines.append(f"- {v['target']}: {v['measured']}: **{_mark(v['met'])}**.")
    lines.append("")
    rows = []
    labelled = [(f"#{i + 1}", r) for i, r in enumerate(runs)]
    compared = results.get("before_now") or {}
    if compared.get("counts"):
        labelled.append((f"before ({compared['commit']})", compared["counts"]))
    for label, r in labelled:
        for name in ("uplink", "duplex"):
            ph = r[name]
            rows.append(
                [
                    label,
                    name,
                    fmt(ph["frames_in"]),
                    fmt(ph["passes_per_frame"], ".3f"),
                    fmt(ph["steps_per_frame"], ".3f"),
                    fmt(ph["empty_passes_per_frame"], ".3f"),
                    fmt(ph["events_per_frame"], ".3f"),
                    fmt(ph["cancel_scopes_per_frame"], ".3f"),
                    fmt(ph["messages_out_per_frame"], ".2f"),
                    fmt(ph["messages_in_per_frame"], ".2f"),
                    fmt(ph["played_per_frame"], ".2f"),
                    fmt(ph["cpu_pct"], ".2f"),
                ]
            )
    lines.append(
        _table(
            (
                "run",
                "phase",
                "frames",
                "passes/frame",
                "task steps/frame",
                "empty passes/frame",
                "trio.Event/frame",
                "CancelScope/frame",
                "messages out/frame",
                "messages in/frame",
                "frames played/frame",
                "CPU % (instrumented)",
            ),
            rows,
            "ll",
        )
    )
    first = runs[0]
    for name in ("uplink", "duplex"):
        ph = first[name]
        lines += [
            "",
            f"Where the passes go, {name} (run #1): each pass by the tasks it stepped, per frame.",
            "",
            _table(
                ("tasks stepped in the pass", "per frame"),
                [(f"`{k}`", f"{v:.3f}") for k, v in ph["top_passes"]],
                "l",
            ),
        ]
    if compared.get("counts"):
        ph = compared["counts"]["uplink"]
        lines += [
            "",
            f"Before ({compared['commit']}), uplink: each pass by the tasks it stepped, per frame.",
            "",
            _table(
                ("tasks stepped in the pass", "per frame"),
                [(f"`{k}`", f"{v:.3f}") for k, v in ph["top_passes"]],
                "l",
            ),
        ]
    lines += [
        "",
        "Task steps in duplex (run #1) by task and where it resumed (its own innermost "
        "frame > the awaitable trio woke), per frame:",
        "",
        _table(
            ("task @ resumes in", "per frame"),
            [(f"`{k}`", f"{v:.3f}") for k, v in first["duplex"]["top_steps"]],
            "l",
        ),
    ]
    return "\n".join(lines)


def _chunks_markdown(
    rows: list[dict[str, Any]], results: dict[str, Any], figures: dict[str, str]
) -> str:
    ordered = sorted(rows, key=lambda r: r["chunk_ms"])
    base = next((r["cpu_pct"] for r in ordered if r["chunk_ms"] == 20), None)
    table_rows = []
    for r in ordered:
        per_s = r["messages"] / r["seconds"] if r["seconds"] else math.nan
        table_rows.append(
            [
                fmt(r["chunk_ms"]),
                fmt(per_s, ".1f"),
                fmt(r["cpu_pct"], ".2f"),
                fmt(r["cpu_pct"] / base if base else None, ".2f", "x"),
                fmt(r["uplink_latency_ms"]["p50"]),
                fmt(r["uplink_latency_ms"]["p99"]),
            ]
        )
    lines = [
        "## 6. CPU and message size",
        "",
        "The default sidecar with `--chunk-ms` 20, 40 and 100, uplink only at real time for "
        f"{fmt(results['plan']['compare_s'], 'g')} s each, one fresh process each; the bot "
        "still writes 20 ms frames, so every frame still wakes the sidecar once, and what "
        "falls is the per-message work (encode, websocket frame, send). Latency: a frame's "
        "first sample waits for the rest of its message.",
        "",
        _table(
            (
                "--chunk-ms",
                "messages/s",
                "uplink CPU %",
                "vs 20 ms",
                "uplink p50 ms",
                "uplink p99 ms",
            ),
            table_rows,
        ),
    ]
    figure = _figure(figures, "chunks", "CPU against --chunk-ms")
    if figure:
        lines += ["", figure]
    return "\n".join(lines)


def _dialects_markdown(trials: dict[str, Any]) -> str:
    rows = []
    for key, wire in (
        (DEFAULT, "JSON + base64 s16le, 16 kHz"),
        (DIALECT, "JSON + base64 G.711 mu-law, 8 kHz"),
    ):
        t = trials[key]
        up, dx, down = t["uplink"], t["duplex"], t["downlink"]
        rows.append(
            [
                t["label"],
                wire,
                fmt(up["uplink_latency_ms"]["n"]),
                fmt(up["uplink_latency_ms"]["p50"]),
                fmt(up["uplink_latency_ms"]["p99"]),
                fmt(dx["uplink_latency_ms"]["p99"]),
                fmt(up["cpu_pct"], ".2f"),
                fmt(dx["cpu_pct"], ".2f"),
                fmt(down["jitter_ms"]["p99"]),
                fmt(down["snr_db"]["min"], ".1f"),
                fmt(t.get("underruns")),
            ]
        )
    ours, theirs = trials[DEFAULT], trials[DIALECT]
    gap = _num(theirs["uplink"]["uplink_latency_ms"]["p50"]) - _num(
        ours["uplink"]["uplink_latency_ms"]["p50"]
    )
    lines = [
        "## 7. Dialects: Twilio beside Attendee",
        "",
        "The default sidecar with `--protocol twilio` against the bench's Twilio side "
        "(`bench/twilio.py`: it takes `connected` and `start`, times each `media` "
        "message's arrival, and talks back in `media` messages of mu-law), beside the "
        "Attendee default of the trials above; same bot, same phases (uplink only, then "
        "duplex), no idle or flat-out phase. SNR: what the bot heard against the "
        "utterance's mu-law decoded and resampled offline.",
        "",
        _table(
            (
                "contender",
                "wire",
                "n",
                "up p50 ms",
                "up p99 ms",
                "dx up p99 ms",
                "CPU up %",
                "CPU duplex %",
                "jitter p99 ms",
                "SNR min dB",
                "underruns",
            ),
            rows,
            "ll",
        ),
    ]
    # Exact 160-byte packets: unless a stream's first chunk is led with silence
    # (g711.Packetizer), every packet lacks the resampler's hold-back and waits
    # a whole frame for it, which shows here as about 20 ms.
    waits = gap > 10
    lines += [
        "",
        f"The Twilio uplink is {gap:.1f} ms {'later' if gap >= 0 else 'earlier'} at the median "
        "than Attendee's. Twilio's packets are exactly 160 bytes (20 ms): "
        + (
            "a frame's first sample waits in the packetizer for the next frame's audio, "
            "which the first chunk's lead (`g711.Packetizer`) is there to prevent."
            if waits
            else "the first chunk of a stream, short by the resampler's hold-back, is led "
            "with that much silence (`g711.Packetizer`), so each packet leaves with the "
            "frame that completes it (before the lead: 20.3 ms later, on 2026-12-01)."
        ),
    ]
    return "\n".join(lines)


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _participants_markdown(streams: dict[str, Any], results: dict[str, Any]) -> str:
    n = streams["participants"]
    single = (results.get("trials", {}).get("sidecar-medium") or {}).get("uplink") or {}
    mixed, each = streams["mixed_latency_ms"], streams["participant_latency_ms"]
    rows = [
        [
            "mixed (16 kHz)",
            fmt(mixed["n"]),
            fmt(mixed["p50"]),
            fmt(mixed["p99"]),
            fmt(mixed["max"]),
        ],
        [
            f"{n} participants (16 kHz), pooled",
            fmt(each["n"]),
            fmt(each["p50"]),
            fmt(each["p99"]),
            fmt(each["max"]),
        ],
    ]
    lines = [
        "## 11. Per-participant streams",
        "",
        f"One default sidecar with `--per-participant`: {n} participant connections (each "
        "its UUID frame, then 48 kHz frames at real time, phases staggered) plus the mixed "
        "one, both kinds of message on one websocket connection, for "
        f"{fmt(streams['seconds'], '.0f')} s.",
        "",
        _table(("stream", "frames", "uplink p50 ms", "uplink p99 ms", "max ms"), rows, "l"),
        "",
        f"- CPU of the one process: {fmt(streams['cpu_pct'], '.1f')} % of a core, "
        f"{fmt(streams['cpu_per_stream_pct'], '.2f')} % per stream"
        + (
            f" (a sidecar with the mixed stream alone: {fmt(single.get('cpu_pct'), '.2f')} %)"
            if single
            else ""
        )
        + f"; the bench's bot and server: {fmt(streams['harness_cpu_pct'], '.0f')} %.",
        f"- Worst single participant stream's p99: {fmt(streams['worst_stream_p99_ms'])} ms.",
        f"- Streams: {streams['joined']} `participant_joined` events, audio for "
        f"{streams['streams_at_server']} UUIDs at the server; dropped "
        f"{streams['dropped_samples']} samples, never delivered "
        f"{streams['uplink_samples_missing']}; exit code {streams['exit_code']}.",
    ]
    return "\n".join(lines)


def _profile_markdown(profile: dict[str, Any]) -> str:
    parts: list[str] = []
    sampled = profile.get("sampled")
    if sampled:
        parts.append(
            f"py-spy, {profile['seconds']:g} s of duplex at real time, {sampled['samples']} "
            f"samples of busy time (raw stacks: `bench/results/{sampled['raw_file']}`). "
            "Self time by function, % of busy samples:"
        )
        parts.append("")
        parts.append(
            _table(
                ("function", "self %"), [(k, f"{v:.1f}") for k, v in sampled["self_top"][:15]], "l"
            )
        )
        parts.append("")
        parts.append("By package:")
        parts.append("")
        parts.append(
            _table(("package", "%"), [(k, f"{v:.1f}") for k, v in sampled["packages"][:10]], "l")
        )
    counted = profile.get("counted")
    if counted:
        parts.append("")
        parts.append(
            f"cProfile on a CPU clock, {counted['frames']} frames of duplex "
            f"(`bench/results/{counted['stats_file']}`; CPU with the profiler on: "
            f"{counted['cpu_pct']:.1f}% of a core). Per 20 ms frame:"
        )
        parts.append("")
        parts.append(
            _table(
                ("function", "calls/frame", "self us/frame", "incl. us/frame"),
                [
                    (
                        r["function"],
                        f"{r['calls_per_frame']:.2f}",
                        f"{r['self_us_per_frame']:.1f}",
                        f"{r['cum_us_per_frame']:.1f}",
                    )
                    for r in counted["functions"][:20]
                ],
                "l",
            )
        )
    return "\n".join(parts)


CAVEATS: Final = (
    "Bot, websocket server and contenders share this machine; the bench's own asyncio "
    "process (bot + server) adds the same constant to every contender's latency. The naive "
    "baseline's figures bound that constant from above.",
    "Timestamps are CLOCK_MONOTONIC in the bench process: the bot's write and the "
    "server's receive are taken on one clock.",
    "The server is `websockets`' asyncio server with compression off, so every client "
    "speaks the same wire format; plain `ws://` on 127.0.0.1, no TLS.",
    "Uplink latency maps each frame to the message carrying its first sample by "
    "cumulative sample counts; every converter here is time-aligned (alignment 0 in the "
    "fidelity table) and none drops audio once connected. The naive baseline connects "
    "lazily and drops frames until connected, as Attendee does; those are skipped.",
    "The naive baseline implements only the measured path of Attendee's design (no retries, "
    "no TLS); its downlink pushes 100 ms pieces ten times faster than real time, which is "
    "why its jitter is large and its frames early.",
    "soxr dithers its 16-bit output, and the dither falls differently when the input is "
    "cut into 20 ms chunks than when it comes in one piece: about 1 LSB of noise, which "
    "bounds soxr-stream's SNR figure near 80 dB. That is not a streaming artefact.",
    "CPU figures are the kernel's exact on-CPU time of each process's threads "
    "(sum_exec_runtime, in ns). Until 2026-12-01 they were psutil's user + system times: "
    "the same time, rounded to 10 ms ticks, so a quick run's 3 s phase resolved only 0.33% "
    "of a core. A thread that exits inside a phase takes its share with it (the sidecar's "
    "only short-lived threads write events).",
    "Figures from different runs compare only as far as the machine ran at the same speed: "
    "on this shared 2-core machine the same in-process work (the floor) has taken from 143 "
    "to over 300 us a frame on different days. Ratios within one run (against "
    "soxr-stream, and against the code before, re-run beside this code) do not have that "
    "problem.",
    "Scheduler counts come from `bench.counted`, a separate process of the same sidecar "
    "with an Instrument and wrapped `trio.Event`/`trio.CancelScope` constructors; it is "
    "never the process whose CPU or latency is reported elsewhere.",
    "Numbers from a busy machine are noisy; the load average at start is recorded above.",
)
