"""Meetings outlast sessions: the real sidecar carries the conversation into a
new agent session (issue 19), against the fake OpenAI Realtime and Deepgram
Voice Agent services, whose every received message the vendors' SDK models
validate strictly (tests/agent_servers.py)."""

from __future__ import annotations

import json
from pathlib import Path

import trio
from agent_servers import MAX_DURATION, RealtimeConfig, RealtimeServer
from control_client import Client
from support import open_bot_loop, wait_until
from test_e2e_agents import talk_then_listen

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
    # Heard ~1 s of the 3 s reply: about its first third, cut at a word, never more.
    text = agent[1].removesuffix("…")
    assert WORDS.startswith(text)
    assert len(WORDS) // 6 <= len(text) <= len(WORDS) // 3
    assert 700 <= cleared["heard_ms"] <= 1100
    assert restored["dropped_turns"] == 0 and restored["chars"] > len(text)
