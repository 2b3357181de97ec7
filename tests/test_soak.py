"""Soak: real-time duplex audio through random disconnects, clears and marks.

CI runs a short version; `make soak` sets SIDECAR_SOAK_SECONDS=600. At the end
every sample in both directions is accounted for, every mark is answered
exactly once, and (long runs) RSS has not grown more than 1 MiB after warm-up.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import trio
from accounting import KIND_16K, RATE, tagged, unwrap, uplink_dropped
from faultproxy import FaultProxy
from support import Connection, SidecarProcess, Speaker, WsServer, sidecar_args

from sidecar import frames

SECONDS = float(os.environ.get("SIDECAR_SOAK_SECONDS", "8"))
LONG = SECONDS >= 300
# Disconnects every 20-60 s in the long run; proportionally more often in CI.
GAP = (20.0, 60.0) if LONG else (2.0, 3.5)
FRAME = RATE // 50


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Agent:
    """The server side: answers audio with tagged speech, marks and clears."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.sent = 0  # downlink samples handed to the websocket library
        self.marks: list[str] = []
        self.lock = threading.Lock()
        self.next_mark = 3.0
        self.next_clear = 5.0
        self.elapsed = 0.0

    def __call__(self, server: WsServer, conn: Connection, message: dict[str, Any]) -> None:
        if message["trigger"] != "realtime_audio.mixed":
            return
        n = len(base64.b64decode(message["data"]["chunk"])) // 2
        with self.lock:
            # Downlink tags start at 1 so the playout's zero padding stays visible.
            idx = np.arange(self.sent, self.sent + n) % 32767 + 1
            self.sent += n
            self.elapsed += n / RATE
            pcm = idx.astype("<i2").tobytes()
            replies: list[dict[str, Any]] = [
                {
                    "trigger": "realtime_audio.bot_output",
                    "data": {"chunk": base64.b64encode(pcm).decode(), "sample_rate": RATE},
                }
            ]
            if self.elapsed >= self.next_mark:
                name = f"m{len(self.marks)}"
                self.marks.append(name)
                replies.append({"trigger": "realtime_audio.mark", "data": {"name": name}})
                self.next_mark += self.rng.uniform(2.0, 4.0)
            if self.elapsed >= self.next_clear:
                replies.append({"trigger": "realtime_audio.clear"})
                self.next_clear += self.rng.uniform(4.0, 7.0)
        try:
            for reply in replies:
                conn.ws.send(json.dumps(reply))
        except Exception:  # the proxy may have cut this connection
            with self.lock:
                self.sent -= n
                self.marks = [m for m in self.marks if m not in _names(replies)]


def _names(replies: list[dict[str, Any]]) -> set[str]:
    return {r["data"]["name"] for r in replies if r["trigger"] == "realtime_audio.mark"}


async def test_soak(tmp_path: Path) -> None:
    agent = Agent(seed=7)
    rss: list[int] = []
    sent_up = 0
    with WsServer(on_message=agent) as server:
        proxy = FaultProxy(server.port)
        with trio.fail_after(SECONDS + 90):
            async with trio.open_nursery() as nursery:
                await nursery.start(proxy.serve)
                args = sidecar_args(
                    proxy.url,
                    tmp_path,
                    "--sample-rate", "16000",
                    "--output-rate", "16000",
                    "--ping-interval", "0.5",
                    "--ping-timeout", "1",
                    "--retry-delay", "0.2",
                    "--max-retries", "0",
                    "--replay-ms", "2000",
                    stats_interval=0.5,
                )  # fmt: skip
                sidecar = await SidecarProcess(args).start(nursery)
                assert sidecar.process is not None
                pid = sidecar.process.pid
                await sidecar.wait_event("connected")
                speaker = Speaker(await trio.open_unix_socket(str(tmp_path / "out.sock")))
                nursery.start_soon(speaker.serve)
                bot = await trio.open_unix_socket(str(tmp_path / "in.sock"))

                async def disconnect_randomly(
                    task_status: trio.TaskStatus[trio.CancelScope],
                ) -> None:
                    with trio.CancelScope() as scope:
                        task_status.started(scope)
                        rng = random.Random(11)
                        while True:
                            await trio.sleep(rng.uniform(*GAP))
                            proxy.reset_all()

                async def sample_rss() -> None:
                    while True:
                        await trio.sleep(max(1.0, SECONDS / 20))
                        rss.append(_rss_kib(pid))

                faults = await nursery.start(disconnect_randomly)
                nursery.start_soon(sample_rss)
                start = trio.current_time()
                for n in range(round(SECONDS * 50)):
                    await trio.sleep_until(start + n * 0.02)
                    await bot.send_all(frames.encode(KIND_16K, tagged(sent_up, FRAME)))
                    sent_up += FRAME
                await bot.send_all(frames.encode_terminate())
                faults.cancel()

                # Settle: reconnect if a cut came last, drain both directions.
                seen = len(sidecar.events)
                await sidecar.stats(
                    lambda e: (
                        sidecar.events.index(e) >= seen
                        and e["connected"]
                        and e["replay_depth_ms"] == 0
                        and e["playout_depth_ms"] == 0
                        and e["samples_in"] == sent_up
                    ),
                    30,
                )
                await trio.sleep(1.0)
                assert await sidecar.stop() == 0
                nursery.cancel_scope.cancel()
        up_messages = server.messages("realtime_audio.mixed")
        echoes = server.messages("realtime_audio.mark")

    stats = sidecar.named("stats")[-1]
    assert stats["reconnects"] >= (2 if not LONG else SECONDS // 60)

    # Uplink: each sample received once, in order, or counted.
    delivery = unwrap(up_messages, up_messages[0]["data"]["timestamp_ms"])
    assert delivery.in_order()
    assert delivery.unique() == delivery.received
    missing = sent_up - delivery.received
    dropped = uplink_dropped(stats)
    assert dropped <= missing <= dropped + stats["unconfirmed_samples"]

    # Downlink: every sample the sidecar took in was played, cleared or dropped.
    played = np.frombuffer(speaker.pcm, dtype="<i2")
    audible = played[played != 0]
    steps = np.diff(audible.astype(np.int64)) % 32767
    assert np.all(steps >= 1), "bot output replayed or reordered"
    cleared = stats["dropped"].get("downlink_cleared", 0)
    overflow = stats["dropped"].get("downlink_overflow", 0)
    lost_frames = (
        sum(n for reason, n in stats["dropped"].items() if reason.startswith("downlink_"))
        - cleared
        - overflow
    )
    assert lost_frames == 0, stats["dropped"]
    assert stats["bot_output_resampled"] == len(audible) + cleared + overflow
    assert stats["bot_output_samples"] <= agent.sent

    # Every mark the sidecar received was answered exactly once.
    answered = [e["data"]["name"] for e in echoes]
    assert len(answered) == len(set(answered))
    assert set(answered) <= set(agent.marks)
    assert {e["data"]["status"] for e in echoes} <= {"played", "cleared"}
    assert len(answered) >= 1

    warm = rss[len(rss) // 4 :] if rss else []
    growth_kib = (warm[-1] - warm[0]) if len(warm) >= 2 else 0
    print(
        json.dumps(
            {
                "soak_seconds": SECONDS,
                "reconnects": stats["reconnects"],
                "uplink_samples_sent": sent_up,
                "uplink_samples_received": delivery.received,
                "uplink_dropped": stats["dropped"],
                "unconfirmed_samples": stats["unconfirmed_samples"],
                "downlink_samples_received": stats["bot_output_samples"],
                "downlink_samples_played": len(audible),
                "marks_answered": len(answered),
                "rss_kib_after_warmup": warm[0] if warm else None,
                "rss_growth_kib": growth_kib,
            }
        )
    )
    if LONG:
        assert growth_kib <= 1024, f"RSS grew {growth_kib} KiB after warm-up"
