"""Meetings outlast sessions: the real sidecar carries the conversation into a
new agent session (issue 19), against the fake OpenAI Realtime and Deepgram
Voice Agent services, whose every received message the vendors' SDK models
validate strictly (tests/agent_servers.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import trio
from agent_servers import (
    MAX_DURATION,
    AgentConfig,
    AgentServer,
    Conn,
    RealtimeConfig,
    RealtimeServer,
)
from control_client import Client
from support import open_bot_loop, wait_until
from test_e2e_agents import deepgram_args, talk_then_listen

WORDS = (
    "I have booked the Lotus room for three in the afternoon and sent the invitation "
    "to everyone on the list, and I will remind them all ten minutes before it starts."
)


async def _control(path: Path) -> Client:
    with trio.fail_after(5):
        return Client(await trio.open_unix_socket(str(path)))


async def test_openai_new_session_gets_the_turns_a_cut_reply_as_heard_and_a_tool_result(
    tmp_path: Path,
) -> None:
    """The user asks; the agent calls a tool, the bot answers it; the agent's
    3 s reply is cut by a barge-in 1 s in; the session ends; the next session
    is given the user's turn, the tool's call and result, and the reply as far
    as the meeting heard it, in that order, before any audio."""
    config = RealtimeConfig(
        reply_ms=3000,
        speed=1.0,
        barge_in_at_ms=1000,
        barge_in_reply=2,
        answer_barge_in=False,
        calls=[("book_room", '{"size":"small"}')],
        words=WORDS,
    )
    control = tmp_path / "control.sock"
    session = {
        "instructions": "Be brief.",
        "audio": {"input": {"transcription": {"model": "whisper-1"}}},
    }
    with trio.fail_after(60), RealtimeServer(config) as server:
        args = [
            *("--protocol", "openai-realtime"),
            *("--header", f"Authorization: Bearer {server.config.api_key}"),
            *("--session", json.dumps(session)),
            *("--control", str(control)),
            *("--retry-delay", "0.1"),
        ]
        async with open_bot_loop(server.url, tmp_path, *args) as meeting:
            client = await _control(control)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(talk_then_listen, meeting.bot, 0.6, 1.0)
                call = await client.wait("tool_call")
                answer = {"command": "tool_result", "id": "r1", "call_id": call["call_id"]}
                await client.send(answer | {"output": {"room": "Lotus"}})
                cleared = await meeting.sidecar.wait_event(
                    "playout_cleared", lambda e: e["heard_ms"] is not None, timeout=20
                )
                await client.wait("transcript", role="assistant")
                first = server.current
                first.close(1001, MAX_DURATION)
                restored = await meeting.sidecar.wait_event("memory_restored", timeout=20)
                await wait_until(lambda: len(server.connections) == 2, what="a new session")
                second = server.current
                await wait_until(
                    lambda: len(server.state(second).messages) >= 3, what="the seeded items"
                )
                nursery.cancel_scope.cancel()
    assert first.violations == [] and second.violations == []
    # Before any audio: the session, then the conversation, then the audio.
    kinds = [m["type"] for m in second.received]
    assert kinds[0] == "session.update"
    seeded = kinds[1 : 1 + restored["turns"]]
    assert seeded == ["conversation.item.create"] * restored["turns"]
    roles = [m["item"]["role"] for m in second.received[1 : 1 + restored["turns"]]]
    assert roles == ["user", "system", "assistant"], roles
    messages = server.state(second).messages
    user, tool, agent = messages[:3]
    assert user == ("user", "what the user said")
    assert tool[0] == "system" and "book_room" in tool[1] and "Lotus" in tool[1]
    assert agent[0] == "assistant"
    # Heard ~1 s of the 3 s reply: about its first third, cut at a word, and
    # never more than the share of the reply's words its heard audio stands for.
    text = agent[1].removesuffix("…")
    heard_ms = cleared["heard_ms"]
    assert 0 < heard_ms <= 1100
    assert text and WORDS.startswith(text) and WORDS[len(text)] == " "
    assert len(text) <= len(WORDS) * heard_ms / 3000
    assert len(text) >= len(WORDS) * heard_ms / 3000 - 40  # a word and a delta's worth
    assert restored["dropped_turns"] == 0 and restored["chars"] > len(text)


def _uplink_samples(conn: Conn) -> int:
    return sum(
        len(base64.b64decode(m["audio"])) // 2
        for m in conn.received
        if m["type"] == "input_audio_buffer.append"
    )


async def test_openai_rotates_at_quiet_moments_losing_no_audio_and_reseeding(
    tmp_path: Path,
) -> None:
    """--max-session-s 5 over a 20 s conversation: every rotation waits for a
    quiet moment (no reply cut, no agent audio playing), each new session is
    seeded, and every sample the bot wrote reached a session or was counted."""
    config = RealtimeConfig(reply_ms=1200, speed=1.0)
    session = {"audio": {"input": {"transcription": {"model": "whisper-1"}}}}
    with trio.fail_after(90), RealtimeServer(config) as server:
        args = [
            *("--protocol", "openai-realtime"),
            *("--header", f"Authorization: Bearer {server.config.api_key}"),
            *("--session", json.dumps(session)),
            *("--max-session-s", "5", "--replay-ms", "5000"),
        ]
        async with open_bot_loop(server.url, tmp_path, *args) as meeting:
            for _ in range(4):
                await talk_then_listen(meeting.bot, 0.6, 5.0)
            await meeting.sidecar.wait_event(
                "stats", lambda e: e["samples_out"] * 2 >= e["samples_in"] - 480, timeout=10
            )
        stats = meeting.sidecar.named("stats")[-1]
    sidecar = meeting.sidecar
    rotated = sidecar.named("session_rotated")
    assert len(rotated) >= 2, rotated
    assert all(r["reason"] == "cap" and r["after_s"] >= 5 for r in rotated)
    # At each rotation the agent was silent: the last agent_speaking before it said so.
    speaking = False
    for event in sidecar.events:
        if event["event"] == "agent_speaking":
            speaking = event["speaking"]
        elif event["event"] == "session_rotated":
            assert not speaking, "rotated while the agent spoke"
    # No reply was cut: nothing queued for the bot was ever dropped.
    assert all(e["dropped_ms"] == 0 for e in sidecar.named("playout_cleared"))
    # Each new session was seeded with the conversation, before its audio.
    connections = server.connections
    assert len(connections) == len(rotated) + 1
    restored = sidecar.named("memory_restored")
    assert len(restored) == len(rotated)
    for conn, memory in zip(connections[1:], restored, strict=True):
        assert conn.violations == []
        kinds = [m["type"] for m in conn.received]
        turns = memory["turns"]
        assert turns >= 2
        assert kinds[: 1 + turns] == ["session.update", *["conversation.item.create"] * turns]
    # Every sample: sent on some session (and confirmed), or counted as dropped.
    delivered = sum(_uplink_samples(conn) for conn in connections)
    dropped = sum(stats["dropped"].values())
    assert delivered == stats["samples_out"]
    assert stats["unconfirmed_samples"] == 0 and dropped == 0, stats["dropped"]
    assert stats["samples_out"] * 2 >= stats["samples_in"] - 480


async def test_deepgram_new_session_settings_carry_the_turns_and_the_tool_call(
    tmp_path: Path,
) -> None:
    config = AgentConfig(reply_ms=1500, calls=[("lookup_time", '{"tz":"UTC"}')])
    control = tmp_path / "control.sock"
    with trio.fail_after(60), AgentServer(config) as server:
        args = deepgram_args(server, "--control", str(control), "--retry-delay", "0.1")
        async with open_bot_loop(server.url, tmp_path, *args) as meeting:
            client = await _control(control)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(talk_then_listen, meeting.bot, 0.6, 1.5)
                call = await client.wait("tool_call")
                answer = {"command": "tool_result", "id": "r1", "call_id": call["call_id"]}
                await client.send(answer | {"output": "15:04"})
                await client.wait("transcript", role="assistant")
                await wait_until(
                    lambda: bool(meeting.sidecar.named("agent_speaking")), 20, "the answer"
                )
                first = server.current
                first.close(1011, "internal error")
                restored = await meeting.sidecar.wait_event("memory_restored", timeout=20)
                await wait_until(lambda: len(server.connections) == 2, what="a new session")
                second = server.current
                await wait_until(lambda: bool(second.received), what="the new Settings")
                nursery.cancel_scope.cancel()
    assert first.violations == [] and second.violations == []
    settings = second.received[0]
    assert settings["type"] == "Settings"
    messages = settings["agent"]["context"]["messages"]
    assert messages == [
        {"type": "History", "role": "user", "content": "what the user said"},
        {
            "type": "History",
            "function_calls": [
                {
                    "id": call["call_id"],
                    "name": "lookup_time",
                    "client_side": True,
                    "arguments": '{"tz":"UTC"}',
                    "response": "15:04",
                }
            ],
        },
        {"type": "History", "role": "assistant", "content": "the answer is 15:04"},
    ]
    assert restored["turns"] == 3 and restored["dropped_turns"] == 0


async def test_memory_off_gives_a_new_session_nothing(tmp_path: Path) -> None:
    with trio.fail_after(60), RealtimeServer(RealtimeConfig(reply_ms=600)) as server:
        args = [
            *("--protocol", "openai-realtime"),
            *("--header", f"Authorization: Bearer {server.config.api_key}"),
            *("--retry-delay", "0.1", "--memory", "off"),
        ]
        async with open_bot_loop(server.url, tmp_path, *args) as meeting:
            await talk_then_listen(meeting.bot, 0.6, 1.0)
            await meeting.sidecar.wait_event("transcript", lambda e: e["role"] == "assistant")
            server.current.close(1001, MAX_DURATION)
            await wait_until(lambda: len(server.connections) == 2, what="a new session")
            second = server.current
            await talk_then_listen(meeting.bot, 0.3, 0.5)
            await wait_until(lambda: len(second.received) > 1, what="audio")
    kinds = {m["type"] for m in second.received}
    assert kinds == {"session.update", "input_audio_buffer.append"}
    assert not meeting.sidecar.named("memory_restored")


async def test_deepgram_reply_cut_by_a_barge_in_is_carried_as_heard(tmp_path: Path) -> None:
    """Deepgram names no segments: the cut of a 3 s answer the meeting
    interrupted 1 s in is measured from what never played."""
    config = AgentConfig(
        reply_ms=3000, speed=1.0, barge_in_at_ms=1000, answer_barge_in=False, words=WORDS
    )
    with trio.fail_after(60), AgentServer(config) as server:
        args = deepgram_args(server, "--retry-delay", "0.1")
        async with open_bot_loop(server.url, tmp_path, *args) as meeting:
            await talk_then_listen(meeting.bot, 0.6, 1.0)
            cleared = await meeting.sidecar.wait_event(
                "playout_cleared", lambda e: e["dropped_ms"] > 0, timeout=20
            )
            server.current.close(1011, "internal error")
            await wait_until(lambda: len(server.connections) == 2, what="a new session")
            second = server.current
            await wait_until(lambda: bool(second.received), what="the new Settings")
    assert second.violations == []
    messages = second.received[0]["agent"]["context"]["messages"]
    (agent,) = [m for m in messages if m.get("role") == "assistant"]
    text = agent["content"].removesuffix("…")
    assert agent["content"].endswith("…")
    assert text and WORDS.startswith(text) and len(text) < len(WORDS) // 2
    assert cleared["dropped_ms"] > 0
