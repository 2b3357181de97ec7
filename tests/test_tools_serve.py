"""`serve` end to end, in every dialect: validation of what it receives, echo, record, play."""

from __future__ import annotations

import base64
import json
import time
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import trio
from support import SidecarProcess, Speaker, dominant_frequency, play, sidecar_args, tone
from test_tools_harness import Json, ToolProcess, run_tool
from websockets.sync.client import connect

from sidecar.tools.wavio import write_wav


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


@dataclass
class Served:
    serve: ToolProcess
    sidecar: SidecarProcess
    speaker: Speaker
    """The bot's end of audio-out, recording what the sidecar plays."""


@asynccontextmanager
async def serving(tmp_path: Path, *serve_args: str, protocol: str) -> AsyncIterator[Served]:
    """`serve --protocol PROTOCOL SERVE_ARGS` and a sidecar speaking the same
    dialect to it, with the bot's speaker attached; both stopped cleanly at the end."""
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            serve = await ToolProcess(
                "serve", "--protocol", protocol, "--port", "0", "--stats-interval", "0",
                *serve_args,
            ).start(nursery)  # fmt: skip
            url = (await serve.wait_event("listening"))["url"]
            args = sidecar_args(url, tmp_path, "--protocol", protocol)
            sidecar = await SidecarProcess(args).start(nursery)
            await serve.wait_event("connected")
            speaker = Speaker(await trio.open_unix_socket(str(tmp_path / "out.sock")))
            nursery.start_soon(speaker.serve)
            yield Served(serve, sidecar, speaker)
            assert await sidecar.stop() == 0
            await serve.wait_event("disconnected")
            assert await serve.stop() == 0
            nursery.cancel_scope.cancel()


async def play_through(
    tmp_path: Path, protocol: str, *serve_args: str
) -> tuple[Json, Json, Served]:
    """serve --play to a sidecar: its `playing` event, the answer to its mark, and the rest."""
    async with serving(tmp_path, *serve_args, protocol=protocol) as served:
        playing = await served.serve.wait_event("playing")
        mark = await served.serve.wait_event("mark", limit=15)
    return playing, mark, served


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
    echo = ("--echo", "--delay-ms", "300", "--record", str(recording))
    async with serving(tmp_path, *echo, protocol="attendee") as served:
        bot = await trio.open_unix_socket(str(tmp_path / "in.sock"))
        start = trio.current_time()
        await play(bot, tone(1000, 1.0))
        await served.sidecar.stats(lambda e: e["samples_played"] >= 47000, timeout=15)
    serve, speaker = served.serve, served.speaker
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
    speak = ("--play", str(source), "--play-after", "0.5", "--mark", "answer-done")
    playing, mark, served = await play_through(tmp_path, "attendee", *speak)
    serve, speaker = served.serve, served.speaker
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


# -- other dialects --------------------------------------------------------------------------


def misbehaving_twilio_client(url: str) -> None:
    sid = "MZ" + "0" * 32
    start = {
        "accountSid": "AC" + "1" * 32,
        "streamSid": sid,
        "callSid": "CA" + "2" * 32,
        "tracks": ["inbound"],
        "customParameters": {"botId": "b1"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }

    def media(seq: int, chunk: int) -> str:
        payload = base64.b64encode(b"\xff" * 160).decode()
        body = {"track": "inbound", "chunk": str(chunk), "timestamp": str(20 * (chunk - 1))}
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": str(seq),
                "streamSid": sid,
                "media": body | {"payload": payload},
            }
        )

    with connect(url) as ws:
        ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        ws.send(
            json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": start})
        )
        ws.send(media(2, 1))
        ws.send(media(4, 2))  # skips a sequenceNumber
        ws.send(json.dumps({"event": "clear", "streamSid": sid}))  # a server's message
        ws.send(b"\x00\x01")  # Twilio sends text only
        ws.send(media(5, 3))
        time.sleep(0.3)


async def test_serve_holds_a_twilio_client_to_twilios_rules() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            serve = await ToolProcess(
                "serve", "--protocol", "twilio", "--port", "0", "--once", "--stats-interval", "0"
            ).start(nursery)
            listening = await serve.wait_event("listening")
            assert listening["protocol"] == "twilio"
            await trio.to_thread.run_sync(misbehaving_twilio_client, listening["url"])
            code = await serve.wait()
    assert code == 1
    opened = serve.named("opened")[0]
    assert opened["info"]["customParameters"] == {"botId": "b1"}
    assert opened["sample_rate"] == 8000
    violations = serve.named("violation")
    assert [(v["message_number"], v["code"]) for v in violations] == [
        (4, "invalid_field"),
        (5, "unknown_trigger"),
        (6, "invalid_json"),
    ]
    assert violations[0]["message"] == "sequenceNumber '4', expected '3' (one more than the last)"
    assert "a message a server sends, not one Twilio sends" in violations[1]["message"]
    stats = serve.named("disconnected")[0]["stats"]
    assert stats["by_trigger"] == {
        "connected": 1,
        "start": 1,
        "media": 3,
        "clear": 1,
        "(binary)": 1,
    }
    assert (stats["audio_s"], stats["sample_rates"], stats["gaps"]) == (0.06, [8000], 0)
    assert "VIOLATION in message #4: sequenceNumber '4'" in serve.stderr.decode()


@pytest.mark.parametrize("protocol", ["twilio", "vonage"])
async def test_serve_echoes_and_records_in_a_dialect(protocol: str, tmp_path: Path) -> None:
    recording = tmp_path / "heard.wav"
    rate = 8000 if protocol == "twilio" else 16000
    async with serving(tmp_path, "--echo", "--record", str(recording), protocol=protocol) as served:
        await served.serve.wait_event("opened")
        bot = await trio.open_unix_socket(str(tmp_path / "in.sock"))
        await play(bot, tone(1000, 1.0))
        await served.sidecar.stats(lambda e: e["samples_played"] >= 47000, timeout=15)
    serve, speaker = served.serve, served.speaker
    assert abs(dominant_frequency(speaker.pcm, 48000) - 1000) < 5
    disconnected = serve.named("disconnected")[0]
    assert disconnected["echoed"] >= 50
    assert disconnected["stats"]["violations"] == 0
    assert disconnected["stats"]["sample_rates"] == [rate]
    assert bool(serve.named("closed")) == (protocol == "twilio")  # Twilio's stop
    with wave.open(str(recording)) as w:
        assert w.getframerate() == rate
        pcm = w.readframes(w.getnframes())
    assert abs(len(pcm) // 2 - rate) <= rate // 50
    assert abs(dominant_frequency(pcm, rate) - 1000) < 5


async def test_serve_plays_a_file_then_a_mark_to_a_twilio_sidecar(tmp_path: Path) -> None:
    source = tmp_path / "answer.wav"
    write_wav(source, tone(700, 0.5, rate=16000, level=0.3), 16000)
    speak = ("--play", str(source), "--play-rate", "16000", "--play-after", "0.3")
    playing, mark, served = await play_through(tmp_path, "twilio", *speak)
    serve, speaker = served.serve, served.speaker
    # Twilio takes 8 kHz only: --play-rate 16000 gives way, and says so.
    assert playing["sample_rate"] == 8000
    assert "this stream takes no --play-rate 16000" in serve.stderr.decode()
    # Twilio's mark echo does not say whether the audio played or was cleared.
    assert (mark["name"], mark["status"]) == ("play-end", "answered")
    assert abs(len(speaker.pcm) / 2 / 48000 - 0.5) < 0.05
    assert abs(dominant_frequency(speaker.pcm, 48000) - 700) < 5
