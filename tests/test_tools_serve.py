"""`serve` end to end: validation of what it receives, echo, record, play."""

from __future__ import annotations

import base64
import json
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import trio
from support import SidecarProcess, Speaker, dominant_frequency, play, sidecar_args, tone
from test_tools_harness import ToolProcess, run_tool
from websockets.sync.client import connect


def mixed(pcm: bytes, rate: int = 16000, ts: int = 1_700_000_000_000) -> str:
    return json.dumps(
        {
            "bot_id": "bot_x",
            "trigger": "realtime_audio.mixed",
            "data": {
                "chunk": base64.b64encode(pcm).decode(),
                "sample_rate": rate,
                "timestamp_ms": ts,
            },
        }
    )


def misbehaving_client(url: str) -> None:
    silence = bytes(640)
    with connect(url) as ws:
        ws.send(mixed(silence, ts=1_700_000_000_000))
        ws.send(mixed(silence, rate=44100, ts=1_700_000_000_020))
        ws.send("this is not json")
        ws.send(json.dumps({"trigger": "realtime_audio.speak", "data": {}}))
        ws.send(mixed(silence, ts=1_700_000_000_060))
        time.sleep(0.6)  # long enough for a stats line


async def test_serve_names_each_violation_and_fails(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            serve = await ToolProcess(
                "serve", "--port", "0", "--once", "--stats-interval", "0.2"
            ).start(nursery)
            listening = await serve.wait_event("listening")
            assert serve.events[0] == listening  # the first line, for scripts
            url = listening["url"]
            assert url.startswith("ws://127.0.0.1:") and url.endswith("/")
            await trio.to_thread.run_sync(misbehaving_client, url)
            code = await serve.wait()
    assert code == 1  # --once with violations
    violations = serve.named("violation")
    assert [(v["message_number"], v["code"]) for v in violations] == [
        (2, "unsupported_sample_rate"),
        (3, "invalid_json"),
        (4, "unknown_trigger"),
    ]
    assert violations[0]["message"] == (
        "`data.sample_rate` is 44100; supported rates are 8000, 16000 and 24000"
    )
    assert violations[2]["message"] == "unknown trigger 'realtime_audio.speak'"
    stats = serve.named("stats")
    assert stats and stats[-1]["stats"]["violations"] == 3
    assert stats[-1]["stats"]["messages"] == 5
    summary = serve.named("summary")[0]
    assert (summary["messages"], summary["violations"]) == (5, 3)
    err = serve.stderr.decode()
    assert "VIOLATION in message #2: `data.sample_rate` is 44100" in err
    assert "jitter" in err and "timestamp gaps" in err


async def test_serve_echoes_with_delay_and_records(tmp_path: Path) -> None:
    recording = tmp_path / "heard.wav"
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            serve = await ToolProcess(
                "serve", "--port", "0", "--echo", "--delay-ms", "300",
                "--record", str(recording), "--stats-interval", "0.5",
            ).start(nursery)  # fmt: skip
            url = (await serve.wait_event("listening"))["url"]
            sidecar = await SidecarProcess(sidecar_args(url, tmp_path)).start(nursery)
            await serve.wait_event("connected")
            speaker = Speaker(await trio.open_unix_socket(str(tmp_path / "out.sock")))
            nursery.start_soon(speaker.serve)
            bot = await trio.open_unix_socket(str(tmp_path / "in.sock"))
            start = trio.current_time()
            await play(bot, tone(1000, 1.0))
            await sidecar.stats(lambda e: e["samples_played"] >= 47000, timeout=15)
            assert await sidecar.stop() == 0
            await serve.wait_event("disconnected")
            assert await serve.stop() == 0
            nursery.cancel_scope.cancel()
    # The echo came back no sooner than the configured delay.
    assert speaker.arrivals[0] - start >= 0.3
    assert abs(dominant_frequency(speaker.pcm, 48000) - 1000) < 5
    disconnected = serve.named("disconnected")[0]
    assert disconnected["echoed"] >= 50
    assert disconnected["stats"]["violations"] == 0
    assert disconnected["stats"]["sample_rates"] == [16000]
    recorded = serve.named("recorded")[0]
    assert recorded["sample_rate"] == 16000
    with wave.open(str(recording)) as w:
        assert w.getframerate() == 16000
        pcm = w.readframes(w.getnframes())
    assert abs(len(pcm) // 2 - 16000) <= 320
    assert abs(dominant_frequency(pcm, 16000) - 1000) < 5


async def test_serve_plays_a_file_then_a_mark(tmp_path: Path) -> None:
    source = tmp_path / "answer.wav"
    t = np.arange(round(0.6 * 22050)) / 22050
    left = (np.sin(2 * np.pi * 700 * t) * 0.3 * 32767).astype("<i2")
    with wave.open(str(source), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(np.stack([left, left], axis=1).tobytes())
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            serve = await ToolProcess(
                "serve", "--port", "0", "--play", str(source), "--play-after", "0.5",
                "--mark", "answer-done", "--stats-interval", "0",
            ).start(nursery)  # fmt: skip
            url = (await serve.wait_event("listening"))["url"]
            sidecar = await SidecarProcess(sidecar_args(url, tmp_path)).start(nursery)
            speaker = Speaker(await trio.open_unix_socket(str(tmp_path / "out.sock")))
            nursery.start_soon(speaker.serve)
            playing = await serve.wait_event("playing")
            mark = await serve.wait_event("mark", limit=15)
            assert await sidecar.stop() == 0
            assert await serve.stop() == 0
            nursery.cancel_scope.cancel()
    # 22.05 kHz is not a contract rate: the file goes out at 16 kHz.
    assert playing["sample_rate"] == 16000
    assert (mark["name"], mark["status"]) == ("answer-done", "played")
    assert serve.named("played")[0]["seconds"] == pytest.approx(0.6, abs=0.02)
    assert abs(len(speaker.pcm) / 2 / 48000 - 0.6) < 0.05
    assert abs(dominant_frequency(speaker.pcm, 48000) - 700) < 5
    assert "mark 'answer-done' played" in serve.stderr.decode()


async def test_serve_usage_errors(tmp_path: Path) -> None:
    missing = await run_tool("serve", "--play", str(tmp_path / "none.wav"))
    assert missing.returncode == 2
    assert "--play: cannot open" in missing.stderr.decode()
    both = await run_tool("serve", "--echo", "--play", str(tmp_path / "none.wav"))
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr.decode()
    nowhere = await run_tool("serve", "--record", str(tmp_path / "no" / "such" / "dir.wav"))
    assert nowhere.returncode == 2
    assert "--record: cannot write into" in nowhere.stderr.decode()
    key_only = await run_tool("serve", "--tls-key", str(tmp_path / "k.pem"))
    assert key_only.returncode == 2
    assert "--tls-key needs --tls-cert" in key_only.stderr.decode()
