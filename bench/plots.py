"""The PNG figures in docs/img, drawn from a results dict (matplotlib, no display)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

COLORS: Final = {
    "sidecar-fastest": "#9ecae1",
    "sidecar-medium": "#2171b5",
    "sidecar-best": "#08306b",
    "naive": "#d94801",
    "soxr-stream": "#41ab5d",
    "sidecar-twilio": "#6a51a3",
    "fastest": "#9ecae1",
    "medium": "#2171b5",
    "best": "#08306b",
    "soxr": "#41ab5d",
}
DPI: Final = 110


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path.name


def _cdf(ax: Any, values: Sequence[float], label: str, color: str) -> None:
    if not values:
        return
    x = np.sort(np.asarray(values))
    y = np.arange(1, len(x) + 1) / len(x)
    ax.plot(x, y, label=f"{label} (n={len(x)})", color=color, lw=1.6)


def latency_uplink(results: dict[str, Any], path: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in (
        (axes[0], "uplink", "uplink only"),
        (axes[1], "duplex_uplink", "during duplex"),
    ):
        for impl, trial in results["trials"].items():
            _cdf(ax, trial["raw"].get(key, []), trial["label"], COLORS.get(impl, "grey"))
        ax.axvline(2.0, color="red", ls="--", lw=1, label="target p99 2 ms")
        ax.axhline(0.99, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("bot writes frame -> server holds its first sample (ms)")
        ax.set_ylabel("fraction of frames")
        ax.set_title(f"Uplink added latency, {title}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def latency_downlink(results: dict[str, Any], path: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    trials = results["trials"]
    labels = []
    data: list[list[float]] = []
    colors = []
    for impl, trial in trials.items():
        for kind in ("burst", "stream"):
            values = trial.get("raw_downlink", {}).get(kind, [])
            if values:
                labels.append(f"{impl}\n{kind}")
                data.append(values)
                colors.append(COLORS.get(impl, "grey"))
    if data:
        parts = axes[0].boxplot(data, patch_artist=True, showfliers=True)
        for patch, color in zip(parts["boxes"], colors, strict=True):
            patch.set_facecolor(color)
            patch.set_alpha(0.6)
        axes[0].set_xticks(range(1, len(labels) + 1), labels, fontsize=6, rotation=30)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("server sends -> bot reads first frame (ms)")
    axes[0].set_title("Downlink added latency per utterance")
    axes[0].grid(True, which="both", alpha=0.3)
    for impl, trial in trials.items():
        _cdf(axes[1], trial["raw"].get("jitter", []), trial["label"], COLORS.get(impl, "grey"))
    axes[1].axvline(2.0, color="red", ls="--", lw=1, label="target p99 2 ms")
    axes[1].axhline(0.99, color="grey", ls=":", lw=1)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("|frame arrival - ideal schedule| (ms)")
    axes[1].set_ylabel("fraction of frames")
    axes[1].set_title("Downlink pacing jitter")
    axes[1].grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def cpu(results: dict[str, Any], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(11, 4.4))
    names: list[str] = []
    idle: list[float] = []
    up: list[float] = []
    dx: list[float] = []
    for floor in results.get("floor", []):
        names.append(f"floor\n{floor['quality']}")
        idle.append(math.nan)
        up.append(floor["uplink_cpu_pct"])
        dx.append(floor["duplex_cpu_pct"])
    for impl, trial in results["trials"].items():
        names.append(impl.replace("sidecar-", "sidecar\n"))
        idle.append((trial.get("idle") or {}).get("cpu_pct", math.nan))
        up.append(trial["uplink"]["cpu_pct"])
        dx.append(trial["duplex"]["cpu_pct"])
    x = np.arange(len(names))
    width = 0.27
    ax.bar(x - width, idle, width, label="idle (connected, no audio)", color="#bdbdbd")
    ax.bar(x, up, width, label="uplink only", color="#4292c6")
    ax.bar(x + width, dx, width, label="duplex", color="#084594")
    ax.axhline(2.5, color="red", ls="--", lw=1, label="uplink target 2.5%")
    ax.axhline(5.0, color="darkred", ls=":", lw=1, label="duplex target 5%")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("% of one core at real time")
    ax.set_title("CPU per stream (floor = our resample + encode work in-process, no I/O)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def response(results: dict[str, Any], direction: str, path: Path) -> str:
    rows = [r for r in results["fidelity"] if r["direction"] == direction]
    pairs = sorted({r["pair"] for r in rows}, key=lambda pair: _other_rate(pair, direction))
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4.4), squeeze=False)
    for ax, pair in zip(axes[0], pairs, strict=True):
        for r in (r for r in rows if r["pair"] == pair):
            color = COLORS.get(r["converter"], "grey")
            ax.plot(r["response_hz"], r["response_db"], color=color, lw=1.4, label=r["label"])
            marker = "x" if direction == "down" else "o"
            ax.plot(r["sweep_hz"], r["sweep_db"], marker, color=color, ms=4, ls=":", lw=0.8)
        ax.set_ylim(-180, 10)
        ax.set_xlabel("input tone (Hz)")
        ax.set_ylabel("dB relative to the input tone")
        what = "alias" if direction == "down" else "worst image"
        ax.set_title(f"{pair}: passband (lines), {what} level (markers)", fontsize=9)
        ax.axhline(-100, color="red", ls="--", lw=0.8)
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def _other_rate(pair: str, direction: str) -> int:
    """The rate that is not the bot's 48 kHz: `48k->16k` -> 16."""
    source, target = pair.split("->")
    return int((target if direction == "down" else source).rstrip("k"))


def memory(results: dict[str, Any], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for impl, trial in results["trials"].items():
        samples = trial.get("rss_samples") or []
        if len(samples) > 1:
            t = [s[0] / 60 for s in samples]
            ax.plot(
                t, [s[1] for s in samples], label=trial["label"], color=COLORS.get(impl, "grey")
            )
    ax.set_xlabel("minutes into the duplex phase")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title("Resident memory while streaming both ways")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def scale(results: dict[str, Any], path: Path) -> str:
    rows = sorted(results.get("scale", []), key=lambda s: s["n"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    n = [s["n"] for s in rows]
    axes[0].plot(n, [s["uplink_latency_ms"]["p99"] for s in rows], "o-", label="uplink latency p99")
    axes[0].plot(
        n, [s["downlink"]["jitter_ms"]["p99"] for s in rows], "s-", label="downlink jitter p99"
    )
    axes[0].set_yscale("log")
    axes[0].set_xlabel("concurrent sidecars")
    axes[0].set_ylabel("ms")
    axes[0].set_title("Latency as N grows")
    axes[0].grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    cores = results["meta"]["cores"] or 1
    axes[1].bar([str(x) for x in n], [s["cpu_total_pct"] for s in rows], label="all sidecars")
    axes[1].bar(
        [str(x) for x in n],
        [s["harness_cpu_pct"] for s in rows],
        bottom=[s["cpu_total_pct"] for s in rows],
        label="bench harness (bot + server)",
        color="#bdbdbd",
    )
    axes[1].axhline(100 * cores, color="red", ls="--", lw=1, label=f"{cores} cores")
    axes[1].set_xlabel("concurrent sidecars")
    axes[1].set_ylabel("% of one core")
    axes[1].set_title("CPU as N grows")
    axes[1].legend(fontsize=8)
    axes[1].grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def chunks(results: dict[str, Any], path: Path) -> str:
    """Uplink-only CPU against --chunk-ms, beside soxr-stream's and the code before's, all
    from this run."""
    rows = sorted(results.get("chunks", []), key=lambda r: r["chunk_ms"])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ms = [r["chunk_ms"] for r in rows]
    ax.plot(ms, [r["cpu_pct"] for r in rows], "o-", color=COLORS["sidecar-medium"], label="sidecar")
    soxr = (results.get("trials", {}).get("soxr-stream") or {}).get("uplink", {}).get("cpu_pct")
    if soxr is not None:
        ax.axhline(soxr, color=COLORS["soxr-stream"], ls="--", lw=1, label="soxr-stream, 20 ms")
    compared = results.get("before_now") or {}
    before = [p["uplink_cpu_pct"] for p in compared.get("pairs", []) if p["code"] == "before"]
    if before:
        ax.axhline(
            sum(before) / len(before), color="grey", ls=":", lw=1,
            label=f"sidecar at {compared['commit']}, 20 ms",
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xticks(ms, [str(m) for m in ms])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel("--chunk-ms (audio per message; the bot still writes 20 ms frames)")
    ax.set_ylabel("uplink-only CPU, % of one core")
    ax.set_title("CPU against message size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def draw_all(results: dict[str, Any], out_dir: Path) -> dict[str, str]:
    # Files only, never a window, whatever the environment says.
    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    if results.get("trials"):
        figures["latency_uplink"] = latency_uplink(results, out_dir / "latency-uplink.png")
        figures["latency_downlink"] = latency_downlink(results, out_dir / "latency-downlink.png")
        figures["cpu"] = cpu(results, out_dir / "cpu.png")
        figures["memory"] = memory(results, out_dir / "memory.png")
    if results.get("fidelity"):
        figures["response_down"] = response(results, "down", out_dir / "response-down.png")
        figures["response_up"] = response(results, "up", out_dir / "response-up.png")
    if results.get("scale"):
        figures["scale"] = scale(results, out_dir / "scale.png")
    if results.get("chunks"):
        figures["chunks"] = chunks(results, out_dir / "chunks.png")
    return figures
