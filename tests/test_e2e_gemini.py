"""The real sidecar process talking straight to Gemini Live: no server of the user's.

Against the fake Live API (tests/gemini_server.py: every message it receives
read with google-genai's types, strictly; every message it sends built with
them): the key goes as `x-goog-api-key` from GEMINI_API_KEY, never in the
URL or the output; the bot talks, the agent answers in several audio parts
per message faster than real time, and the bot hears the answer paced at
48 kHz; the meeting interrupts and the answer stops within a frame; a tool
call is answered over --control; a goAway's close is followed by a new
connection that resumes the conversation with the server's handle; a wrong
key exits 4.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from control_client import Client
from gemini_server import GeminiConfig, GeminiServer
from support import SidecarProcess, open_bot_loop, sidecar_args, wait_until
from test_e2e_agents import FRAME_MS, audible_ms, talk_then_listen, tone_frames
from test_tools_check import check_options, findings

from sidecar.tools.check import render, run_check

SETUP = {
    "model": "gemini-3.8-live",
    "systemInstruction": "Be brief.",
    "tools": [
        {
            "functionDeclarations": [
                {
                    "name": "lookup_time",
                    "description": "The time in a time zone.",
                    "parameters": {"type": "OBJECT", "properties": {"tz": {"type": "STRING"}}},
                }
            ]
        }
    ],
}


def gemini_args(*extra: str) -> list[str]:
    return ["--protocol", "gemini-live", "--session", json.dumps(SETUP), *extra]


def key_env(fake: GeminiServer) -> dict[str, str]:
    return {"GEMINI_API_KEY": fake.config.api_key, "GOOGLE_API_KEY": ""}


async def test_the_answer_is_heard_paced_and_a_barge_in_stops_it_within_a_frame(
    tmp_path: Path,
) -> None:
    config = GeminiConfig(reply_ms=4000, barge_in_at_ms=2400, answer_barge_in=False)
    with trio.fail_after(60), GeminiServer(config) as fake:
        async with (
            open_bot_loop(fake.url, tmp_path, *gemini_args(), env=key_env(fake)) as meeting,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(talk_then_listen, meeting.bot, 0.6, 4.0)
            cleared = await meeting.sidecar.wait_event(
                "playout_cleared", lambda e: e["dropped_ms"] > 0, timeout=20
            )
            at = trio.current_time()
            await meeting.sidecar.wait_event("transcript", lambda e: e["role"] == "assistant")
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
    conn = fake.connections[0]
    assert conn.violations == []
    assert conn.headers["x-goog-api-key"] == fake.config.api_key
    assert "key=" not in conn.path
    setup = conn.received[0]["setup"]
    assert setup["model"] == "models/gemini-3.8-live"
    assert setup["generationConfig"]["responseModalities"] == ["AUDIO"]
    assert setup["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    # The meeting's audio reached the agent as 16 kHz PCM (the fake's VAD heard it).
    assert fake.state(conn).audio_messages > 0 and len(conn.audio) > 16000
    heard = [(t, f) for t, f in tone_frames(meeting.speaker, 550) if t <= at]
    after = [t for t, _ in tone_frames(meeting.speaker, 550) if t > at]
    # Paced: the agent had sent 2.4 s (4x faster than real time); far less was heard.
    assert 200 <= audible_ms(heard) <= 1500
    # The answer stopped at once: at most the frame being written still arrived.
    assert len(after) <= 1
    assert cleared["dropped_ms"] > FRAME_MS
    said = {e["role"]: e["text"] for e in meeting.sidecar.named("transcript")}
    assert said["user"] == "what the user said"
    assert said["assistant"]  # what the agent had said when it was cut
    secret = fake.config.api_key.encode()
    assert secret not in meeting.sidecar.stdout + meeting.sidecar.stderr


async def _control(path: Path) -> Client:
    with trio.fail_after(5):
        return Client(await trio.open_unix_socket(str(path)))


async def test_a_tool_call_is_answered_end_to_end(tmp_path: Path) -> None:
    """toolCall -> tool_call event -> tool_result -> toolResponse -> the agent's
    spoken answer, heard by the bot."""
    config = GeminiConfig(reply_ms=1500, calls=[("lookup_time", '{"tz":"UTC"}')])
    control = tmp_path / "control.sock"
    with trio.fail_after(60), GeminiServer(config) as fake:
        args = gemini_args("--control", str(control))
        async with open_bot_loop(fake.url, tmp_path, *args, env=key_env(fake)) as meeting:
            client = await _control(control)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(talk_then_listen, meeting.bot, 0.6, 1.5)
                call = await client.wait("tool_call")
                assert call["name"] == "lookup_time"
                assert call["arguments"] == {"tz": "UTC"}
                answer = {"command": "tool_result", "id": "r1", "call_id": call["call_id"]}
                await client.send(answer | {"output": {"time": "15:04"}})
                assert (await client.wait("command_result", id="r1"))["ok"] is True
                said = await client.wait("transcript", role="assistant")
                assert "15:04" in said["text"]
                await wait_until(
                    lambda: audible_ms(tone_frames(meeting.speaker, 550)) >= 1400, 20, "the answer"
                )
                refused = {"command": "say", "id": "s1", "text": "Hello."}
                await client.send(refused)
                result = await client.wait("command_result", id="s1")
                assert result["ok"] is False
                nursery.cancel_scope.cancel()
    conn = fake.current
    assert conn.violations == []
    state = fake.state(conn)
    assert state.answers == [(call["call_id"], "lookup_time", {"time": "15:04"})]


async def test_a_go_away_is_followed_by_a_connection_that_resumes(tmp_path: Path) -> None:
    config = GeminiConfig(reply_ms=600, go_away_after_s=3.0, go_away_left_s=0.3)
    control = tmp_path / "control.sock"
    with trio.fail_after(60), GeminiServer(config) as fake:
        args = gemini_args("--control", str(control), "--retry-delay", "0.1")
        async with open_bot_loop(fake.url, tmp_path, *args, env=key_env(fake)) as meeting:
            client = await _control(control)
            await client.send({"command": "user_text", "id": "u1", "text": "Remember 42."})
            assert (await client.wait("command_result", id="u1"))["ok"] is True
            await meeting.sidecar.wait_event("agent_event", lambda e: e["name"] == "goAway")
            await wait_until(lambda: len(fake.connections) >= 2, 15, "a second connection")
            second = fake.connections[1]
            await wait_until(lambda: fake.state(second).ready, 10, "its setupComplete")
            # The bot's commands go on reaching the agent, now on the new connection.
            await client.send({"command": "user_text", "id": "u2", "text": "What was it?"})
            assert (await client.wait("command_result", id="u2"))["ok"] is True
            await wait_until(
                lambda: fake.state(second).user_texts == ["What was it?"], 10, "the new turn"
            )
    # The goAway moved the sidecar to a new connection at once, no failure.
    assert [e["reason"] for e in meeting.sidecar.named("session_rotated")] == ["expiring"]
    assert not meeting.sidecar.named("retrying")
    (restored,) = meeting.sidecar.named("memory_restored")
    assert restored["turns"] >= 2
    first = fake.connections[0]
    assert first.violations == [] and second.violations == []
    handle = second.received[0]["setup"]["sessionResumption"]["handle"]
    assert handle in fake.handles
    state = fake.state(second)
    assert state.resumed_from == handle
    assert ("user", "Remember 42.") in state.history
    assert "historyConfig" not in second.received[0]["setup"]


async def test_with_memory_off_a_go_away_starts_the_conversation_afresh(
    tmp_path: Path,
) -> None:
    config = GeminiConfig(reply_ms=600, go_away_after_s=3.0, go_away_left_s=0.3)
    with trio.fail_after(60), GeminiServer(config) as fake:
        args = gemini_args("--memory", "off", "--retry-delay", "0.1")
        async with open_bot_loop(fake.url, tmp_path, *args, env=key_env(fake)) as meeting:
            await meeting.sidecar.wait_event("agent_event", lambda e: e["name"] == "goAway")
            await wait_until(lambda: len(fake.connections) >= 2, 15, "a second connection")
            second = fake.connections[1]
            await wait_until(lambda: fake.state(second).ready, 10, "its setupComplete")
    assert [e["reason"] for e in meeting.sidecar.named("session_rotated")] == ["expiring"]
    assert not meeting.sidecar.named("memory_restored")
    for conn in fake.connections[:2]:
        assert conn.violations == []
        setup = conn.received[0]["setup"]
        assert "sessionResumption" not in setup and "historyConfig" not in setup
    assert fake.state(second).resumed_from is None


async def test_a_wrong_key_is_fatal(tmp_path: Path) -> None:
    with trio.fail_after(30), GeminiServer() as fake:
        args = [*sidecar_args(fake.url, tmp_path), *gemini_args()]
        env = {"GEMINI_API_KEY": "wrong-key", "GOOGLE_API_KEY": ""}
        async with trio.open_nursery() as nursery:
            sidecar = await SidecarProcess(args, env=env).start(nursery)
            assert await sidecar.wait(timeout=20) == 4
    gave_up = sidecar.named("gave_up")[0]
    assert gave_up["status"] == 403
    assert "API key not valid" in gave_up["reason"]
    assert b"wrong-key" not in sidecar.stdout + sidecar.stderr
    assert fake.rejected == 1


async def test_check_speaks_gemini_live(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`check --protocol gemini-live`: the dialect's own session drives it, the key
    comes from GOOGLE_API_KEY when GEMINI_API_KEY is not set, and the agent's
    answer counts as the server's audio."""
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", "gm-test")
    (tmp_path / "setup.json").write_text(json.dumps(SETUP))
    with GeminiServer(GeminiConfig(reply_ms=600)) as fake, trio.fail_after(30):
        options = check_options(
            "--protocol", "gemini-live", fake.url, "--seconds", "2",
            "--session", f"@{tmp_path / 'setup.json'}",
        )  # fmt: skip
        report = await run_check(replace(options, quiet_after=0.5))
    assert report.ok, render(report)
    assert findings(report)["handshake"][1].endswith("(sent headers: x-goog-api-key)")
    assert [v for conn in fake.connections for v in conn.violations] == []
    assert report.bot_output_messages > 0


async def test_a_proxy_or_vertex_takes_the_users_bearer_header(tmp_path: Path) -> None:
    """--url elsewhere with --header 'Authorization: Bearer ...' and no key in the
    environment: the bearer goes, and no x-goog-api-key is made up."""
    with trio.fail_after(30), GeminiServer() as fake:
        args = gemini_args("--header", f"Authorization: Bearer {fake.config.api_key}")
        env = {"GEMINI_API_KEY": "", "GOOGLE_API_KEY": ""}
        async with open_bot_loop(fake.url, tmp_path, *args, env=env) as meeting:
            await meeting.sidecar.wait_event(
                "agent_event", lambda e: e["name"] == "setupComplete", timeout=15
            )
    conn = fake.connections[0]
    assert conn.violations == []
    assert conn.headers["Authorization"] == f"Bearer {fake.config.api_key}"
    assert "x-goog-api-key" not in conn.headers


async def test_the_bots_clear_stops_the_reply_and_drops_the_rest_of_its_turn(
    tmp_path: Path,
) -> None:
    """No message stops a Gemini turn: the clear empties the playout, the turn's
    audio still arriving is not played, and the next turn is heard."""
    config = GeminiConfig(reply_ms=4000, speed=2.0)
    control = tmp_path / "control.sock"
    with trio.fail_after(60), GeminiServer(config) as fake:
        args = gemini_args("--control", str(control))
        async with open_bot_loop(fake.url, tmp_path, *args, env=key_env(fake)) as meeting:
            client = await _control(control)
            await client.send({"command": "user_text", "id": "u1", "text": "Talk."})
            await wait_until(
                lambda: audible_ms(tone_frames(meeting.speaker, 550)) >= 400, 20, "the reply"
            )
            await client.send({"command": "clear", "id": "c1"})
            assert (await client.wait("command_result", id="c1"))["ok"] is True
            at = trio.current_time()
            state = fake.state(fake.current)
            await wait_until(lambda: state.responding is None, 20, "the turn's end")
            await trio.sleep(0.3)
            late = [t for t, _ in tone_frames(meeting.speaker, 550) if t > at]
            assert len(late) <= 1
            heard = audible_ms(tone_frames(meeting.speaker, 550))
            await client.send({"command": "user_text", "id": "u2", "text": "Again."})
            await wait_until(
                lambda: audible_ms(tone_frames(meeting.speaker, 550)) >= heard + 1000,
                20,
                "the next turn",
            )
    assert fake.connections[0].violations == []
    assert heard < 2000  # of the 4 s the agent sent


async def test_without_a_valid_handle_the_record_seeds_the_new_session(tmp_path: Path) -> None:
    """The handle is refused (expired): the next connection gives the server the
    conversation as initial history instead, before any audio, unanswered."""
    config = GeminiConfig(reply_ms=400, go_away_after_s=3.0, go_away_left_s=0.3)
    config.handles_expire = True
    control = tmp_path / "control.sock"
    with trio.fail_after(60), GeminiServer(config) as fake:
        args = gemini_args("--control", str(control), "--retry-delay", "0.1")
        async with open_bot_loop(fake.url, tmp_path, *args, env=key_env(fake)) as meeting:
            client = await _control(control)
            await client.send({"command": "user_text", "id": "u1", "text": "Remember 42."})
            await client.wait("transcript", role="assistant")
            await wait_until(lambda: len(fake.connections) >= 3, 20, "a seeded connection")
            seeded = fake.connections[2]
            await wait_until(lambda: fake.state(seeded).ready, 10, "its setupComplete")
            await wait_until(lambda: len(seeded.received) >= 2, 10, "its history")
            await meeting.sidecar.wait_event("memory_restored", timeout=10)
    refused, seeded = fake.connections[1], fake.connections[2]
    assert "handle" in refused.received[0]["setup"]["sessionResumption"]
    setup = seeded.received[0]["setup"]
    assert setup["sessionResumption"] == {}
    assert setup["historyConfig"] == {"initialHistoryInClientContent": True}
    history = seeded.received[1]["clientContent"]
    assert history["turnComplete"] is True
    said = [(t["role"], t["parts"][0]["text"]) for t in history["turns"]]
    assert ("user", "Remember 42.") in said
    assert any(role == "model" for role, _ in said)
    assert all(c.violations == [] for c in fake.connections)
    state = fake.state(seeded)
    assert not state.history_open and state.replies == 0
