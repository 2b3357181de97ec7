"""`feed` and `record` end to end, through a real sidecar and a websockets echo server."""

from __future__ import annotations

import signal
import wave
from pathlib import Path

import numpy as np
import trio
from support import (
    Connection,
    Json,
    SidecarProcess,
    WsServer,
    dominant_frequency,
    level_db,
    play,
    sidecar_args,
    tone,
)
from test_tools_harness import ToolProcess, run_tool


def echo(server: WsServer, conn: Connection, message: Json) -> None:
    if message["trigger"] == "realtime_audio.mixed":
        data = message["data"]
        server.send(
            {
                "trigger": "realtime_audio.bot_output",
                "data": {"chunk": data["chunk"], "sample_rate": data["sample_rate"]},
            }
        )


def write_stereo_wav(path: Path, freq: float, seconds: float, rate: int) -> None:
    t = np.arange(round(seconds * rate)) / rate
    left = np.sin(2 * np.pi * freq * t) * 0.4
    right = left * 0.5  # unequal channels: the downmix is their average
    pcm = (np.stack([left, right], axis=1) * 32767).round().astype("<i2").tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)


def read_wav(path: Path) -> tuple[int, bytes]:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        return w.getframerate(), w.readframes(w.getnframes())


def audible(pcm: bytes) -> bytes:
    """The stretch between the first and last sample above the noise floor."""
    x = np.frombuffer(pcm, "<i2")
    loud = np.nonzero(np.abs(x) > 300)[0]
    assert len(loud), "the recording is silent"
    return pcm[2 * loud[0] : 2 * (loud[-1] + 1)]


async def test_feed_a_stereo_wav_and_record_the_echo(tmp_path: Path) -> None:
    source = tmp_path / "speech.wav"
    write_stereo_wav(source, 600, 1.0, 44100)
    recording = tmp_path / "back.wav"
    with trio.fail_after(45), WsServer(on_message=echo) as server:
        async with trio.open_nursery() as nursery:
            sidecar = await SidecarProcess(sidecar_args(server.url, tmp_path)).start(nursery)
            await sidecar.wait_event("connected")
            recorder = await ToolProcess(
                "record", "--from", str(tmp_path / "out.sock"), str(recording)
            ).start(nursery)
            await sidecar.wait_event("bot_connected", lambda e: e["socket"] == "out")
            fed = await run_tool("feed", str(source), "--to", str(tmp_path / "in.sock"))
            assert fed.returncode == 0, fed.stderr.decode()
            assert "sent 1.00 s (50 frames at 48000 Hz)" in fed.stderr.decode()
            assert "terminate" in fed.stderr.decode()
            await sidecar.stats(lambda e: e["samples_played"] >= 47000)
            assert await sidecar.stop() == 0
            # The sidecar closing audio-out ends the recording normally.
            assert await recorder.wait() == 0, recorder.stderr.decode()
            nursery.cancel_scope.cancel()
    assert "the sidecar closed the connection" in recorder.stderr.decode()
    # The server heard 1 s at 16 kHz, the tone, downmixed.
    heard = server.audio()
    assert abs(len(heard) // 2 - 16000) <= 320
    assert abs(dominant_frequency(heard, 16000) - 600) < 5
    assert abs(level_db(heard) - 20 * np.log10(0.4 * 0.75 / np.sqrt(2))) < 1.0
    rate, pcm = read_wav(recording)
    assert rate == 48000
    back = audible(pcm)
    assert abs(len(back) / 2 / rate - 1.0) < 0.05
    assert abs(dominant_frequency(back, rate) - 600) < 5
    assert bytes(2) * 100 in pcm[: 2 * 48000 // 50]  # silence before the echo came back


async def test_feed_raw_stdin_fast_and_record_until_interrupted(tmp_path: Path) -> None:
    raw = tone(440, 3.0, rate=16000, level=0.3)
    recording = tmp_path / "back.wav"
    with trio.fail_after(45), WsServer(on_message=echo) as server:
        async with trio.open_nursery() as nursery:
            sidecar = await SidecarProcess(sidecar_args(server.url, tmp_path)).start(nursery)
            await sidecar.wait_event("connected")
            recorder = await ToolProcess(
                "record", "--from", str(tmp_path / "out.sock"), str(recording), "--no-silence"
            ).start(nursery)
            await sidecar.wait_event("bot_connected", lambda e: e["socket"] == "out")
            start = trio.current_time()
            fed = await run_tool(
                "feed", "-", "--rate", "16000", "--fast", "--to", str(tmp_path / "in.sock"),
                stdin=raw,
            )  # fmt: skip
            took = trio.current_time() - start
            assert fed.returncode == 0, fed.stderr.decode()
            assert "sent 3.00 s" in fed.stderr.decode()
            # --fast: quicker than the audio lasts, even counting process start-up.
            assert took < 3.0
            await sidecar.stats(lambda e: e["samples_played"] >= 143000, timeout=15)
            assert await recorder.stop(signal.SIGINT) == 0, recorder.stderr.decode()
            assert await sidecar.stop() == 0
            nursery.cancel_scope.cancel()
    assert "interrupted (SIGINT)" in recorder.stderr.decode()
    assert abs(len(server.audio()) // 2 - 48000) <= 320
    rate, pcm = read_wav(recording)
    # --no-silence: only the frames, so the file is the 3 s echo and no more.
    assert abs(len(pcm) / 2 / rate - 3.0) < 0.05
    assert abs(dominant_frequency(pcm, rate) - 440) < 5


async def test_feed_and_record_report_the_sidecars_refusal(tmp_path: Path) -> None:
    source = tmp_path / "tone.wav"
    write_stereo_wav(source, 500, 0.5, 16000)
    with trio.fail_after(30), WsServer() as server:
        async with trio.open_nursery() as nursery:
            sidecar = await SidecarProcess(sidecar_args(server.url, tmp_path)).start(nursery)
            # Another bot already carries the mixed stream and listens on audio-out.
            first = await trio.open_unix_socket(str(tmp_path / "in.sock"))
            await play(first, tone(300, 0.1))
            speaker = await trio.open_unix_socket(str(tmp_path / "out.sock"))
            await sidecar.wait_event("bot_connected", lambda e: e["socket"] == "in")
            await sidecar.wait_event("bot_connected", lambda e: e["socket"] == "out")
            fed = await run_tool("feed", str(source), "--to", str(tmp_path / "in.sock"))
            recorded = await run_tool(
                "record", "--from", str(tmp_path / "out.sock"), str(tmp_path / "x.wav")
            )
            await first.aclose()
            await speaker.aclose()
            assert await sidecar.stop() == 0
            nursery.cancel_scope.cancel()
    assert fed.returncode == 1
    err = fed.stderr.decode()
    assert "refused the stream" in err
    assert "another bot connection already carries the mixed stream (BUSY)" in err
    assert recorded.returncode == 1
    assert "the sidecar refused: another bot is already connected to audio-out (BUSY)" in (
        recorded.stderr.decode()
    )


async def test_feed_and_record_explain_a_missing_socket(tmp_path: Path) -> None:
    source = tmp_path / "tone.wav"
    write_stereo_wav(source, 500, 0.1, 16000)
    missing = tmp_path / "nobody.sock"
    fed = await run_tool("feed", str(source), "--to", str(missing))
    assert fed.returncode == 1
    assert f"no socket at {missing}: is the sidecar running with --audio-in" in fed.stderr.decode()
    recorded = await run_tool("record", "--from", str(missing), str(tmp_path / "x.wav"))
    assert recorded.returncode == 1
    assert "--audio-out" in recorded.stderr.decode()
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    fed = await run_tool("feed", str(bad), "--to", str(missing))
    assert fed.returncode == 2
    assert "not a WAV file" in fed.stderr.decode()
