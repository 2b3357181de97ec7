"""examples/openai_bot/, exercised for real: the example bot, its own sidecar and session.json,
against the fake OpenAI Realtime service (tests/agent_servers.py), which validates every
message with the openai SDK's types."""

from __future__ import annotations

import json
import os
import re
import sys
import wave
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import trio
from agent_servers import RealtimeConfig, RealtimeServer
from support import REPO, dominant_frequency, level_db, wait_until
from test_tools_harness import tool_env

BOT = REPO / "examples" / "openai_bot" / "bot.py"
SESSION = REPO / "examples" / "openai_bot" / "session.json"
DONE = re.compile(
    r"^done: sent ([\d.]+) s of audio, received ([\d.]+) s of the agent's voice at (\d+) Hz, "
    r"(\d+) transcripts, (\d+) barge-ins, (\d+) agent errors, (\d+) tool calls answered, "
    r"(\d+) commands refused, sidecar exited with (-?\d+)$",
    re.MULTILINE,
)
NO_GREETING = ("--greeting", "")
"""For the tests of other things: a greeting is a reply the meeting may talk over."""


def caption(role_or_kind: str, text: str) -> re.Pattern[str]:
    return re.compile(rf"^\[\s*\d+\.\ds\] {role_or_kind}: {re.escape(text)}", re.MULTILINE)


async def run_bot(*args: str, env: dict[str, str], limit: float = 60) -> tuple[str, str]:
    """The bot to completion; (stdout, stderr), its exit status asserted 0."""
    with trio.fail_after(limit):
        result = await trio.run_process(
            [sys.executable, str(BOT), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=REPO,
            env=env,
        )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, out + err
    return out, err


def done(out: str) -> tuple[float, float, int, int, int, int, int]:
    """(sent s, received s, rate, transcripts, barge-ins, agent errors, exit code) of
    a run that neither called a tool nor had a command refused."""
    sent, received, rate, transcripts, barge_ins, errors, tools, refused, code = done_all(out)
    assert (tools, refused) == (0, 0), out
    return sent, received, rate, transcripts, barge_ins, errors, code


def done_all(out: str) -> tuple[float, float, int, int, int, int, int, int, int]:
    """The done line: what `done` gives, with tool calls answered and commands refused
    before the exit code."""
    match = DONE.search(out)
    assert match, out
    g = match.groups()
    sent, received = float(g[0]), float(g[1])
    rate, transcripts, barge_ins, errors, tools, refused, code = (int(x) for x in g[2:])
    return sent, received, rate, transcripts, barge_ins, errors, tools, refused, code


def env_without_key() -> dict[str, str]:
    env = tool_env()
    env.pop("OPENAI_API_KEY", None)
    return env


async def test_openai_bot_prints_captions_and_hears_the_answer_at_48k(tmp_path: Path) -> None:
    # A stand-in for aplay on PATH, so --play is exercised: it keeps what it was given.
    played = tmp_path / "played.raw"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    aplay = bindir / "aplay"
    aplay.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$PLAYED.args"\nexec cat > "$PLAYED"\n')
    aplay.chmod(0o755)
    answer = tmp_path / "answer.wav"
    config = RealtimeConfig(api_key="sk-example-env-key")
    with RealtimeServer(config) as server:
        env = dict(
            env_without_key(),
            OPENAI_API_KEY=config.api_key,
            PLAYED=str(played),
            PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        args = ["--url", server.url, "--seconds", "0.8", "--out", str(answer), "--play"]
        out, err = await run_bot(*args, "--linger", "1", *NO_GREETING, env=env)
        conns = list(server.connections)
    assert len(conns) == 1 and server.rejected == 0
    conn = conns[0]
    assert conn.violations == []
    # The key came from the environment, through the sidecar, and was never shown.
    assert conn.headers["Authorization"] == f"Bearer {config.api_key}"
    assert config.api_key not in out + err
    command = next(line for line in out.splitlines() if line.startswith("bot: starting "))
    assert "--protocol openai-realtime" in command and f"--session @{SESSION}" in command
    assert "--audio-in-fd" in command and "--exit-on-stdin-eof" in command
    assert "--control-stdin" in command
    # The shipped session.json is what the service got, in GA names the SDK accepts.
    session = conn.received[0]
    assert session["type"] == "session.update"
    sent_session = session["session"]
    assert sent_session["instructions"].startswith("You are a helpful assistant")
    assert sent_session["audio"]["output"]["voice"] == "marin"
    assert sent_session["audio"]["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"
    assert sent_session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    # The service heard the bot's tone (300 Hz by default), then silence.
    heard = bytes(conn.audio)
    assert abs(dominant_frequency(heard[: 2 * 24000 * 8 // 10], 24000) - 300) < 5
    # Captions: both sides of the turn, from the sidecar's transcript events.
    assert caption("user", "what the user said").search(out), out
    assert caption("assistant", "reply of 1500 ms").search(out), out
    assert "barge-in:" not in out and "agent error:" not in out
    sent, received, rate, transcripts, barge_ins, errors, code = done(out)
    assert (sent, rate, transcripts, barge_ins, errors, code) == (0.8, 48000, 2, 0, 0, 0)
    assert abs(received - 1.5) <= 0.05
    # The agent's voice, collected from audio-out: the fake's 440 Hz reply at 48 kHz.
    with wave.open(str(answer), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (48000, 1, 2)
        pcm = wav.readframes(wav.getnframes())
    assert abs(len(pcm) / 96000 - 1.5) <= 0.05
    assert abs(dominant_frequency(pcm, 48000) - 440) < 5
    assert level_db(pcm) > -20
    # --play fed the same audio, as raw 48 kHz s16le, to the player.
    assert played.read_bytes() == pcm
    assert played.with_suffix(".raw.args").read_text().split() == [
        "-q",
        "-t",
        "raw",
        "-f",
        "S16_LE",
        "-r",
        "48000",
        "-c",
        "1",
        "-",
    ]


def write_question(path: Path, freq: float, seconds: float, rate: int) -> None:
    """A stereo 16 kHz WAV: the bot must mix it down and resample it to 48 kHz."""
    t = np.arange(round(seconds * rate)) / rate
    mono = (np.sin(2 * np.pi * freq * t) * 0.4 * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.repeat(mono, 2).tobytes())


async def test_openai_bot_streams_a_wav_passes_headers_and_shows_a_barge_in(
    tmp_path: Path,
) -> None:
    question = tmp_path / "question.wav"
    write_question(question, 1000, 1.0, 16000)
    # The service hears the meeting speak (on cue) while its first reply is playing.
    config = RealtimeConfig(api_key="sk-example-header", reply_ms=3000, barge_in_at_ms=1600)
    with RealtimeServer(config) as server:
        header = f"Authorization: Bearer {config.api_key}"
        args = [str(question), "--url", server.url, "--header", header, "--linger", "1"]
        args += NO_GREETING
        out, err = await run_bot(*args, env=env_without_key())
        conns = list(server.connections)
    assert len(conns) == 1 and server.rejected == 0
    assert conns[0].violations == []
    # The header went through; the printed command hides its value.
    assert "--header 'Authorization: ***'" in out
    assert config.api_key not in out + err
    heard = bytes(conns[0].audio)
    assert abs(dominant_frequency(heard[: 2 * 24000], 24000) - 1000) < 5
    # The barge-in is a caption: the sidecar cut the reply to what the meeting heard.
    barge_in = re.search(
        r"barge-in: the agent was cut off after (\d+) ms of its reply; (\d+) ms of its audio "
        r"dropped",
        out,
    )
    assert barge_in, out
    heard_ms, dropped_ms = map(int, barge_in.groups())
    assert 0 < heard_ms < 1600 and dropped_ms > 0
    ((_, audio_end_ms, accepted),) = server.state(conns[0]).truncations
    assert accepted and audio_end_ms == heard_ms
    # The fake answers the interruption with a second, complete reply.
    assert caption("assistant", "reply of 3000 ms").search(out), out
    sent, received, rate, transcripts, barge_ins, errors, code = done(out)
    assert (sent, rate, barge_ins, errors, code) == (1.0, 48000, 1, 0, 0)
    assert transcripts == 4  # two user turns, two replies
    assert 3.0 < received < 3.0 + 1.6


async def test_openai_bot_shows_agent_errors_and_rides_the_session_close(tmp_path: Path) -> None:
    # The 60-minute close, after 3 s: an `error` first, then 1001 "maximum duration".
    config = RealtimeConfig(api_key="sk-example-expiry", max_session_s=3.0, expiry_error=True)
    with RealtimeServer(config) as server:
        env = dict(env_without_key(), OPENAI_API_KEY=config.api_key)
        args = ["--url", server.url, "--seconds", "0.8", "--linger", "6", *NO_GREETING]
        out, err = await run_bot(*args, env=env)
        conns = list(server.connections)
    assert len(conns) >= 2 and all(c.violations == [] for c in conns)
    assert config.api_key not in out + err
    # The same session, again, on the new connection.
    assert conns[0].received[0] == conns[1].received[0]
    assert caption("assistant", "reply of 1500 ms").search(out), out
    expired = caption("agent error", "Your session hit the maximum duration of 60 minutes.")
    assert expired.search(out), out
    assert "(session_expired)" in out
    # A session-length close this soon (3 s, not 60 min) is retried as a failure,
    # after --retry-delay, even when an audio send races the close.
    assert re.search(r"^bot: reconnecting in 2(\.0)? s: ", out, re.MULTILINE), out
    assert re.search(r"^bot: connected to .* \(attempt 2\)$", out, re.MULTILINE), out
    *_, errors, code = done(out)
    assert errors >= 1 and code == 0


def write_pause_then_question(path: Path, pause_s: float, seconds: float) -> None:
    """A 48 kHz mono WAV: the room quiet while the agent greets it, then a question."""
    rate = 48000
    t = np.arange(round(seconds * rate)) / rate
    tone = (np.sin(2 * np.pi * 500 * t) * 0.4 * 32767).round().astype("<i2")
    pcm = np.concatenate([np.zeros(round(pause_s * rate), "<i2"), tone])
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())


async def test_openai_bot_greets_the_room_and_answers_the_meeting_clock(tmp_path: Path) -> None:
    question = tmp_path / "question.wav"
    write_pause_then_question(question, 3.0, 0.8)
    greeting = "Good morning, everyone."
    config = RealtimeConfig(api_key="sk-example-tools")
    arguments = '{"timezone": "Asia/Tokyo"}'
    result: dict[str, tuple[str, str]] = {}

    async def bot() -> None:
        env = dict(env_without_key(), OPENAI_API_KEY=config.api_key)
        args = [str(question), "--url", server.url, "--greeting", greeting, "--linger", "1"]
        result["run"] = await run_bot(*args, env=env)

    with RealtimeServer(config) as server:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bot)
            # Once the greeting's reply is over, the agent's next reply (to the
            # question, after the pause) calls the tool instead of speaking.
            await wait_until(lambda: _replied(server), 20)
            config.calls.append(("meeting_clock", arguments))
        (conn,) = server.connections
        state = server.state(conn)
    out, err = result["run"]
    assert conn.violations == [], conn.violations
    # The greeting: `say` became a response.create asking for the text, and was heard.
    assert state.instructions[0] is not None and greeting in state.instructions[0]
    assert f"bot: greeting the room: {greeting}" in out
    # The call, answered with the bot's output for the arguments the agent gave.
    ((call_id, output),) = state.outputs
    assert state.calls == {call_id: True}
    clock = json.loads(output)
    assert clock["timezone"] == "Asia/Tokyo" and clock["elapsed_minutes"] == 0
    now, started = datetime.fromisoformat(clock["now"]), datetime.fromisoformat(clock["started"])
    assert now.utcoffset() == started.utcoffset() == timedelta(hours=9)
    assert started <= now
    tool_line = f"tool: meeting_clock({arguments}) -> {json.dumps(clock)}"
    assert re.search(rf"^\[\s*\d+\.\ds\] {re.escape(tool_line)}$", out, re.MULTILINE), out
    # With the output given, one plain response.create: the agent speaks its answer.
    assert state.instructions[1:] == [None]
    assert caption("assistant", "reply of 1500 ms").search(out), out
    sent, received, rate, transcripts, barge_ins, errors, tools, refused, code = done_all(out)
    assert (sent, rate, tools, refused, barge_ins, errors, code) == (3.8, 48000, 1, 0, 0, 0, 0)
    assert transcripts == 3  # the greeting, the question, the answer
    assert abs(received - 3.0) <= 0.1  # the greeting and the answer, 1.5 s each
    assert "refused" not in err


def _replied(server: RealtimeServer) -> bool:
    """The first reply was made and is over (the server's side of it)."""
    conns = list(server.connections)
    if not conns:
        return False
    state = server.state(conns[0])
    return state.replies >= 1 and state.responding is None
