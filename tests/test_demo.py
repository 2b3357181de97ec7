"""`demo`: the whole loop on one machine, shortened."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest
from test_tools_harness import run_tool

from sidecar.tools.demo import DemoReport, render


async def test_demo_runs_the_loop_and_writes_the_echo(tmp_path: Path) -> None:
    out = tmp_path / "echo.wav"
    result = await run_tool("demo", "--seconds", "1.5", "--out", str(out), "--json", limit=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["problem"] is None
    # The echo server adds nothing, so the round trip is the sidecar's own latency:
    # chunking, the jitter buffer, scheduling. Generous bounds: the machine is shared.
    assert 0 < report["latency_ms"] < 1000
    assert report["correlation"] > 0.95
    assert report["snr_db"] > 20
    assert abs(report["returned_level_dbfs"] - report["sent_level_dbfs"]) < 1.0
    assert report["sent_seconds"] == 1.5
    assert abs(report["received_seconds"] - 1.5) < 0.05
    assert report["violations"] == 0
    assert report["messages_checked"] >= 75
    assert report["reconnects"] == 0
    assert report["sidecar_exit"] == 0
    # Progress lines go to stderr with --json, so stdout stays one JSON object.
    assert "echo server   ws://127.0.0.1:" in result.stderr.decode()
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 48000)
        seconds = w.getnframes() / w.getframerate()
    assert report["recording_seconds"] == round(seconds, 3)
    assert 1.5 <= seconds <= 1.5 + report["latency_ms"] / 1000 + 0.1


@pytest.mark.parametrize("protocol", ["twilio", "vonage"])
async def test_demo_runs_the_loop_in_a_dialect(protocol: str, tmp_path: Path) -> None:
    out = tmp_path / "echo.wav"
    result = await run_tool(
        "demo", "--protocol", protocol, "--seconds", "1", "--out", str(out), "--json", limit=60
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["protocol"] == protocol
    assert 0 < report["latency_ms"] < 1000
    assert report["correlation"] > 0.95
    # Twilio's 8 kHz mu-law is telephone quality: G.711 keeps some 35 dB.
    assert report["snr_db"] > (25 if protocol == "twilio" else 20)
    assert abs(report["returned_level_dbfs"] - report["sent_level_dbfs"]) < 1.0
    assert abs(report["received_seconds"] - 1.0) < 0.05
    assert report["violations"] == 0
    assert report["messages_checked"] >= 50
    assert report["sidecar_exit"] == 0
    progress = result.stderr.decode()
    assert f"serve --protocol {protocol} --echo" in progress
    wire = "8000 Hz mu-law twilio" if protocol == "twilio" else "16000 Hz vonage"
    assert f"48 kHz bot sockets <-> {wire} websocket" in progress


async def test_demo_usage_error_for_a_rate_the_dialect_does_not_take() -> None:
    result = await run_tool("demo", "--protocol", "twilio", "--sample-rate", "16000")
    assert result.returncode == 2
    assert "--protocol twilio sends audio at 8000 Hz" in result.stderr.decode()


def test_demo_report_in_words() -> None:
    ok = DemoReport(
        ok=True,
        latency_ms=61.2,
        correlation=0.9991,
        sent_level_dbfs=-22.0,
        returned_level_dbfs=-22.1,
        snr_db=55.4,
        sent_seconds=5.0,
        received_seconds=5.0,
        messages_checked=251,
        recording="demo-echo.wav",
        recording_seconds=5.06,
    )
    text = render(ok)
    assert "returned      5.00 s of the 5.00 s sent" in text
    assert "round trip    61 ms" in text
    assert "sent -22.0 dBFS, returned -22.1 dBFS (-0.1 dB)" in text
    assert "SNR           55.4 dB" in text
    assert "drops         none; 0 playout underrun(s), 0 playout clock stall(s)" in text
    assert "recording     demo-echo.wav (5.06 s, 48000 Hz mono)" in text
    assert text.rstrip().splitlines()[-1].startswith("OK: the loop works.")
    assert "`audio-sidecar check wss://your-server/`" in text
    assert "`audio-sidecar check --protocol vonage wss://" in render(
        DemoReport(ok=True, protocol="vonage")
    )
    failed = DemoReport(problem="no audio came back from the echo server", dropped={"a": 960})
    text = render(failed)
    assert "round trip" not in text
    assert "drops         960 samples (a)" in text
    assert text.rstrip().endswith("FAILED: no audio came back from the echo server")
