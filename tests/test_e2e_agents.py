"""The real sidecar process talking straight to a voice agent: no server of the user's.

Against fake OpenAI Realtime and Deepgram Voice Agent services written from
the vendors' docs (tests/agent_servers.py: every message they receive is
validated with the vendors' SDK models, every message they send built with
them): the bot talks, the agent answers, the bot hears the answer paced at
48 kHz; the meeting interrupts, the answer stops within a frame, and OpenAI's
truncate names what the meeting actually heard.
"""

from __future__ import annotations

import json
from pathlib import Path

import trio
from agent_servers import AgentConfig, AgentServer, RealtimeConfig, RealtimeServer
from control_client import Client
from support import (
    SidecarProcess,
    Speaker,
    dominant_frequency,
    frame_stream,
    level_db,
    open_bot_loop,
    sidecar_args,
    tone,
    wait_until,
)

from sidecar import frames

OUT_RATE = 48000
FRAME_MS = 20


async def talk_then_listen(bot: trio.SocketStream, talk_s: float, total_s: float) -> None:
    """A bot in a meeting: someone speaks for `talk_s`, then silence, at real time."""
    pcm = tone(1000, talk_s, level=0.3) + bytes(2 * round(OUT_RATE * (total_s - talk_s)))
    start = trio.current_time()
    for n, frame in enumerate(frame_stream(pcm)):
        await trio.sleep_until(start + n * FRAME_MS / 1000)
        await bot.send_all(frame)


def tone_frames(speaker: Speaker, freq: float) -> list[tuple[float, frames.Audio]]:
    return [
        (at, frame)
        for frame, at in zip(speaker.frames, speaker.arrivals, strict=True)
        if isinstance(frame, frames.Audio)
        and level_db(frame.pcm) > -40
        and abs(dominant_frequency(frame.pcm, OUT_RATE) - freq) < 30
    ]


def audible_ms(heard: list[tuple[float, frames.Audio]]) -> float:
    """What those frames carried, the silence that pads an utterance's end left out."""
    pcm = b"".join(frame.pcm for _, frame in heard)
    samples = [int.from_bytes(pcm[i : i + 2], "little", signed=True) for i in range(0, len(pcm), 2)]
    while samples and samples[-1] == 0:
        samples.pop()
    return len(samples) * 1000 / OUT_RATE


# -- OpenAI Realtime --------------------------------------------------------------------------


def openai_args(server: RealtimeServer, tmp: Path, *extra: str) -> list[str]:
    session = {"instructions": "Be brief.", "audio": {"output": {"voice": "marin"}}}
    return [
        "--protocol",
        "openai-realtime",
        "--header",
        f"Authorization: Bearer {server.config.api_key}",
        "--session",
        json.dumps(session),
        *extra,
    ]


async def test_openai_answer_is_heard_and_a_barge_in_truncates_to_what_was_heard(
    tmp_path: Path,
) -> None:
    config = RealtimeConfig(reply_ms=4000, barge_in_at_ms=2400, answer_barge_in=False)
    with trio.fail_after(60), RealtimeServer(config) as server:
        args = openai_args(server, tmp_path)
        async with (
            open_bot_loop(server.url, tmp_path, *args) as meeting,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(talk_then_listen, meeting.bot, 0.6, 4.0)
            # The user's own turn starts with a clear of nothing; then the barge-in.
            cleared = await meeting.sidecar.wait_event(
                "playout_cleared", lambda e: e["dropped_ms"] > 0, timeout=20
            )
            at = trio.current_time()
            state = server.state(server.current)
            await wait_until(lambda: bool(state.truncations), what="a truncate")
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
    assert server.current.violations == []
    session_update = server.current.received[0]
    assert session_update["type"] == "session.update"
    assert session_update["session"]["instructions"] == "Be brief."
    assert session_update["session"]["audio"]["input"]["format"] == {
        "type": "audio/pcm",
        "rate": 24000,
    }
    heard = [(t, f) for t, f in tone_frames(meeting.speaker, 440) if t <= at]
    after = [t for t, _ in tone_frames(meeting.speaker, 440) if t > at]
    # The reply reached the bot at 48 kHz, paced: far less than the 2.4 s the
    # agent had sent (4x faster than real time) was heard when the user spoke.
    assert 200 <= audible_ms(heard) <= 1500
    # The answer stopped at once: at most the frame being written still arrived.
    assert len(after) <= 1
    ((item_id, audio_end_ms, accepted),) = state.truncations
    assert accepted
    # The truncate names what the meeting heard (to a frame), never what was received.
    assert abs(audio_end_ms - audible_ms(heard)) <= FRAME_MS + 5
    assert cleared["heard_ms"] == audio_end_ms
    transcripts = meeting.sidecar.named("transcript")
    assert transcripts and transcripts[0]["role"] == "assistant"
    assert transcripts[0]["item_id"] == item_id


async def test_openai_session_length_close_too_soon_is_a_failure_like_any_other(
    tmp_path: Path,
) -> None:
    """A server that ends every session "at its maximum duration" right after it
    opens got reconnected at once, forever (876 connections in 4 s): a renewal
    is only for a session that lived (tests/test_renewal.py has the granted one)."""
    config = RealtimeConfig(max_session_s=0.05)
    with trio.fail_after(40), RealtimeServer(config) as server:
        args = openai_args(server, tmp_path, "--retry-delay", "0.1", "--max-retries", "2")
        async with trio.open_nursery() as nursery:
            sidecar = SidecarProcess(sidecar_args(server.url, tmp_path, *args))
            await sidecar.start(nursery)
            assert await sidecar.wait(20) == 3
            await trio.sleep(0.1)
    retries = sidecar.named("retrying")
    assert [r["delay"] for r in retries] == [0.1, 0.1]
    assert all("too soon" in r["reason"] and "maximum duration" in r["reason"] for r in retries)
    assert len(server.connections) == 3
    first, second, _ = (c.received[0] for c in server.connections)
    assert first == second and first["type"] == "session.update"


async def test_openai_wrong_key_is_fatal(tmp_path: Path) -> None:
    with trio.fail_after(30), RealtimeServer() as server:
        args = [
            *sidecar_args(server.url, tmp_path),
            "--protocol",
            "openai-realtime",
            "--header",
            "Authorization: Bearer sk-wrong",
        ]
        async with trio.open_nursery() as nursery:
            sidecar = await SidecarProcess(args).start(nursery)
            assert await sidecar.wait(timeout=20) == 4
    gave_up = sidecar.named("gave_up")[0]
    assert gave_up["status"] == 401
    assert "Incorrect API key" in gave_up["reason"]
    assert b"sk-wrong" not in sidecar.stdout + sidecar.stderr


# -- Deepgram Voice Agent -------------------------------------------------------------------


def deepgram_args(server: AgentServer, *extra: str) -> list[str]:
    settings = {
        "agent": {
            "listen": {"provider": {"type": "deepgram", "model": "nova-3"}},
            "think": {"provider": {"type": "open_ai", "model": "gpt-4o-mini"}, "prompt": "Hi."},
            "speak": {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
        }
    }
    return [
        "--protocol",
        "deepgram-agent",
        "--header",
        f"Authorization: Token {server.config.api_key}",
        "--session",
        json.dumps(settings),
        *extra,
    ]


async def test_deepgram_answer_is_heard_and_the_user_speaking_stops_it(tmp_path: Path) -> None:
    config = AgentConfig(reply_ms=4000, barge_in_at_ms=2400, answer_barge_in=False)
    with trio.fail_after(60), AgentServer(config) as server:
        async with (
            open_bot_loop(server.url, tmp_path, *deepgram_args(server)) as meeting,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(talk_then_listen, meeting.bot, 0.6, 4.0)
            await meeting.sidecar.wait_event(
                "playout_cleared", lambda e: e["dropped_ms"] > 0, timeout=20
            )
            at = trio.current_time()
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
    conn = server.connections[0]
    assert conn.violations == []
    settings = conn.received[0]
    assert settings["type"] == "Settings"
    assert settings["audio"]["input"] == {"encoding": "linear16", "sample_rate": 16000}
    assert settings["audio"]["output"]["container"] == "none"
    heard = [(t, f) for t, f in tone_frames(meeting.speaker, 330) if t <= at]
    after = [t for t, _ in tone_frames(meeting.speaker, 330) if t > at]
    assert audible_ms(heard) >= 200
    assert len(after) <= 1
    names = [e["name"] for e in meeting.sidecar.named("agent_event")]
    assert "SettingsApplied" in names and "UserStartedSpeaking" in names
    assert meeting.sidecar.named("transcript")


async def test_deepgram_keepalive_holds_a_silent_session_open(tmp_path: Path) -> None:
    config = AgentConfig(idle_timeout_s=10.0)
    with trio.fail_after(40), AgentServer(config) as server:
        async with open_bot_loop(server.url, tmp_path, *deepgram_args(server)) as meeting:
            # No bot audio at all: only KeepAlive keeps the agent from closing.
            # The bot's sockets are up before the link has connected: on a busy
            # machine the server may not have its connection yet.
            await wait_until(
                lambda: (
                    bool(server.connections) and server.state(server.connections[0]).keepalives >= 1
                ),
                15,
                "a KeepAlive",
            )
            await trio.sleep(3)
            assert len(server.connections) == 1
            assert not meeting.sidecar.named("disconnected")
    assert server.connections[0].violations == []


# -- the bot's commands through the control channel (needs --control) ----------------------------


async def _control(path: Path) -> Client:
    with trio.fail_after(5):
        return Client(await trio.open_unix_socket(str(path)))


async def test_openai_tool_call_answered_end_to_end(tmp_path: Path) -> None:
    """tool_call event -> tool_result -> function_call_output + response.create
    -> the agent's spoken answer, heard by the bot."""
    config = RealtimeConfig(reply_ms=1500, calls=[("lookup_time", '{"tz":"UTC"}')])
    control = tmp_path / "control.sock"
    with trio.fail_after(60), RealtimeServer(config) as server:
        args = openai_args(server, tmp_path, "--control", str(control))
        async with open_bot_loop(server.url, tmp_path, *args) as meeting:
            client = await _control(control)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(talk_then_listen, meeting.bot, 0.6, 1.5)
                call = await client.wait("tool_call")
                assert call["name"] == "lookup_time"
                assert call["arguments"] == {"tz": "UTC"}
                assert call["arguments_json"] == '{"tz":"UTC"}'
                answer = {"command": "tool_result", "id": "r1", "call_id": call["call_id"]}
                await client.send(answer | {"output": {"time": "15:04"}})
                result = await client.wait("command_result", id="r1")
                assert result["ok"] is True, result
                await client.wait("transcript", role="assistant")
                await wait_until(
                    lambda: audible_ms(tone_frames(meeting.speaker, 440)) >= 1400, 20, "the answer"
                )
                nursery.cancel_scope.cancel()
    conn = server.current
    state = server.state(conn)
    assert conn.violations == []
    ((call_id, output),) = state.outputs
    assert call_id == call["call_id"] and json.loads(output) == {"time": "15:04"}
    kinds = [m["type"] for m in conn.received if m["type"] != "input_audio_buffer.append"]
    assert kinds == ["session.update", "conversation.item.create", "response.create"]
    assert state.refused_creates == 0


async def test_deepgram_tool_call_answered_end_to_end(tmp_path: Path) -> None:
    config = AgentConfig(reply_ms=1500, calls=[("lookup_time", '{"tz":"UTC"}')])
    control = tmp_path / "control.sock"
    with trio.fail_after(60), AgentServer(config) as server:
        args = deepgram_args(server, "--control", str(control))
        async with open_bot_loop(server.url, tmp_path, *args) as meeting:
            client = await _control(control)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(talk_then_listen, meeting.bot, 0.6, 1.5)
                call = await client.wait("tool_call")
                assert call["name"] == "lookup_time"
                assert call["arguments"] == {"tz": "UTC"}
                answer = {"command": "tool_result", "id": "r1", "call_id": call["call_id"]}
                await client.send(answer | {"output": "15:04"})
                assert (await client.wait("command_result", id="r1"))["ok"] is True
                await client.wait("transcript", role="assistant")
                await wait_until(
                    lambda: audible_ms(tone_frames(meeting.speaker, 330)) >= 1400, 20, "the answer"
                )
                nursery.cancel_scope.cancel()
    conn = server.current
    assert conn.violations == []
    assert server.state(conn).answers == [(call["call_id"], "lookup_time", "15:04")]


async def test_openai_say_context_and_instructions_reach_the_agent(tmp_path: Path) -> None:
    control = tmp_path / "control.sock"
    with trio.fail_after(60), RealtimeServer(RealtimeConfig(reply_ms=600)) as server:
        args = openai_args(server, tmp_path, "--control", str(control))
        async with open_bot_loop(server.url, tmp_path, *args) as meeting:
            client = await _control(control)
            commands = [
                {"command": "instructions", "id": "1", "text": "Be terse."},
                {"command": "context", "id": "2", "text": "Bob is the host."},
                {"command": "say", "id": "3", "text": "Welcome, everyone."},
            ]
            for command in commands:
                await client.send(command)
                assert (await client.wait("command_result", id=command["id"]))["ok"] is True
            said = await client.wait("transcript", role="assistant")
            assert said["text"].endswith("Welcome, everyone.")
            await wait_until(
                lambda: audible_ms(tone_frames(meeting.speaker, 440)) >= 500, 20, "the greeting"
            )
    conn = server.current
    state = server.state(conn)
    assert conn.violations == []
    assert state.session["instructions"] == "Be terse."
    assert state.messages == [("system", "Bob is the host.")]
