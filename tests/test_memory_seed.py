"""A new agent session is seeded with the conversation so far (issue 19 section 2).

The record is fed the way the service's shell feeds it (sidecar/recall.py),
and each dialect's opening is checked message by message with the vendors'
SDK models (tests/agent_servers.py validates strictly: no unknown field).
"""

from __future__ import annotations

import json
import math
from typing import Any

from agent_servers import validate_agent_settings, validate_realtime_client_event

from sidecar import events
from sidecar.dialects.base import (
    AddContext,
    ClearedOut,
    ClearPlayout,
    Heard,
    Notice,
    Options,
    PlayAudio,
    Say,
    SessionEnded,
    ToolCallIn,
    ToolResult,
    UserSpeaking,
    UserText,
)
from sidecar.dialects.deepgram_agent import DeepgramAgent
from sidecar.dialects.openai_realtime import OpenAIRealtime
from sidecar.memory import AgentState, AgentTurn, ConversationRecord, MemorySnapshot
from sidecar.recall import SLOW_SPEECH_CHARS_PER_S, Recall

RATE = 24000
AGENT = {
    "listen": {"provider": {"type": "deepgram", "model": "nova-3"}},
    "think": {"provider": {"type": "open_ai", "model": "gpt-4o-mini"}, "prompt": "Be brief."},
    "speak": {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
}
REPLY = "I booked the small room for three pm and invited everyone on the list"


def audio(ms: int, segment: str | None) -> PlayAudio:
    return PlayAudio(b"\x01\x00" * (RATE * ms // 1000), RATE, segment)


def meeting(segment: str | None = "item_A:0") -> Recall:
    """A user asks; a tool runs; a 3 s reply is cut by a barge-in 1 s in; the user goes on."""
    recall = Recall(ConversationRecord())
    recall.incoming(Notice(events.Transcript(role="user", text="Book a room.", item_id="u1")))
    recall.incoming(ToolCallIn("call_1", "book_room", '{"size": "small"}'))
    recall.outgoing(ToolResult("call_1", '{"room": "Lotus", "at": "15:00"}'))
    recall.outgoing(AddContext("The meeting is about the offsite."))
    for _ in range(30):
        recall.incoming(audio(100, segment))
    recall.outgoing(ClearedOut(None if segment is None else Heard(segment, 1000)))
    reply = events.Transcript(role="assistant", text=REPLY, item_id="item_A", segment=segment)
    recall.incoming(Notice(reply))
    recall.outgoing(UserText("Also invite Bob."))
    recall.outgoing(Say("Done."))
    recall.incoming(SessionEnded())
    return recall


def test_an_interrupted_reply_is_kept_as_heard() -> None:
    snapshot = meeting().snapshot()
    agent = [turn for turn in snapshot.turns if isinstance(turn, AgentTurn)]
    assert len(agent) == 1
    assert agent[0].state is AgentState.INTERRUPTED
    # 1 s of 3 s: at most a third of the characters, cut at a word's end.
    assert REPLY.startswith(agent[0].text)
    assert 0 < len(agent[0].text) <= len(REPLY) // 3
    assert REPLY[len(agent[0].text)] == " "


def _openai_items(history: MemorySnapshot | None) -> tuple[list[dict[str, Any]], Any]:
    dialect = OpenAIRealtime(Options(session={"instructions": "Be brief."}))
    session = dialect.session(history)
    wires = [json.loads(wire) for wire in session.opening()]
    for data in wires:
        model, problems = validate_realtime_client_event(data)
        assert model is not None and not problems, (data, problems)
    return wires, session.restored()


def test_openai_items_in_order_as_the_sdk_reads_them() -> None:
    snapshot = meeting().snapshot()
    wires, restored = _openai_items(snapshot)
    assert wires[0]["type"] == "session.update"
    items = [w["item"] for w in wires[1:]]
    assert all(w["type"] == "conversation.item.create" for w in wires[1:])
    roles = [(item["role"], item["content"][0]["type"]) for item in items]
    assert roles == [
        ("user", "input_text"),
        ("system", "input_text"),
        ("assistant", "output_text"),
        ("user", "input_text"),
    ]
    texts = [item["content"][0]["text"] for item in items]
    assert texts[0] == "Book a room."
    assert "book_room" in texts[1] and '{"size": "small"}' in texts[1] and "Lotus" in texts[1]
    assert REPLY.startswith(texts[2].removesuffix("…")) and texts[2].endswith("…")
    assert len(texts[2]) < len(REPLY) // 2
    assert texts[3] == "Also invite Bob."
    # The context is in the instructions (the Briefing), and `say`'s words come
    # back as the agent's transcript: neither is replayed as a turn.
    assert restored == events.MemoryRestored(
        turns=4, chars=restored.chars, dropped_turns=snapshot.dropped_turns
    )
    assert restored.chars > 0


def test_openai_first_session_gets_no_history() -> None:
    wires, restored = _openai_items(None)
    assert [w["type"] for w in wires] == ["session.update"]
    assert restored is None


def test_deepgram_history_entries_in_settings_as_the_sdk_reads_them() -> None:
    snapshot = meeting(segment=None).snapshot()
    dialect = DeepgramAgent(Options(session={"agent": AGENT}, sample_rate=16000))
    session = dialect.session(snapshot)
    (wire,) = session.opening()
    settings = json.loads(wire)
    model, problems = validate_agent_settings(settings)
    assert model is not None and not problems, problems
    messages = settings["agent"]["context"]["messages"]
    assert messages[0] == {"type": "History", "role": "user", "content": "Book a room."}
    assert messages[1] == {
        "type": "History",
        "function_calls": [
            {
                "id": "call_1",
                "name": "book_room",
                "client_side": True,
                "arguments": '{"size": "small"}',
                "response": '{"room": "Lotus", "at": "15:00"}',
            }
        ],
    }
    assert messages[2]["role"] == "assistant"
    assert messages[3] == {"type": "History", "role": "user", "content": "Also invite Bob."}
    assert len(messages) == 4
    restored = session.restored()
    assert restored is not None and restored.turns == 4


def test_deepgram_agent_id_takes_no_history() -> None:
    dialect = DeepgramAgent(Options(session={"agent": "agent-id-123"}, sample_rate=16000))
    session = dialect.session(meeting().snapshot())
    (wire,) = session.opening()
    assert "context" not in json.dumps(json.loads(wire)["agent"])
    assert session.restored() is None


def test_a_cut_reply_whose_audio_goes_on_arriving_is_cut_to_a_smaller_share() -> None:
    recall = Recall(ConversationRecord())
    for _ in range(10):
        recall.incoming(audio(100, "s"))
    recall.outgoing(ClearedOut(Heard("s", 500)))
    recall.incoming(Notice(events.Transcript(role="assistant", text=REPLY, segment="s")))
    before = recall.snapshot().turns[0]
    for _ in range(10):
        recall.incoming(audio(100, "s"))  # in flight when the barge-in came
    after = recall.snapshot().turns[0]
    assert isinstance(before, AgentTurn) and isinstance(after, AgentTurn)
    assert after.total_ms == 2000 and after.heard_ms == 500
    assert len(after.text) < len(before.text)


def test_memory_bounds_hold_over_ten_thousand_turns() -> None:
    recall = Recall(ConversationRecord(max_turns=50, max_chars=2000))
    for n in range(10_000):
        recall.incoming(Notice(events.Transcript(role="user", text=f"turn {n} " * 5)))
    snapshot = recall.snapshot()
    assert snapshot.turn_count <= 50 and snapshot.chars <= 2000
    assert snapshot.dropped_turns == 10_000 - snapshot.turn_count
    assert "turn 9999" in snapshot.turns[-1].text  # type: ignore[union-attr]


def test_a_user_turn_transcribed_after_the_reply_began_keeps_its_place() -> None:
    """OpenAI transcribes the user's audio while the agent already answers: the
    turn's place is taken when the speech starts, so the order stays true."""
    recall = Recall(ConversationRecord())
    recall.incoming(UserSpeaking("item_u"))
    recall.incoming(audio(500, "item_a:0"))
    reply = events.Transcript(role="assistant", text="Sure.", item_id="item_a", segment="item_a:0")
    recall.incoming(Notice(reply))
    asked = events.Transcript(role="user", text="Can you help?", item_id="item_u")
    recall.incoming(Notice(asked))
    turns = recall.snapshot().turns
    assert [type(t).__name__ for t in turns] == ["UserTurn", "AgentTurn"]
    assert [t.text for t in turns] == ["Can you help?", "Sure."]  # type: ignore[union-attr]


def test_a_reply_without_segments_is_cut_by_what_never_played() -> None:
    """Deepgram names no segments: the clear's cut is the reply's audio received
    less what was still waiting to play when the clear came, of the longer of
    the audio received and the reply's text spoken slowly."""
    recall = Recall(ConversationRecord())
    recall.incoming(Notice(events.Transcript(role="assistant", text=REPLY)))
    for _ in range(30):
        recall.incoming(audio(100, None))
    recall.clearing(unplayed_ms=2000.0)
    recall.incoming(ClearPlayout())
    recall.outgoing(ClearedOut())
    (turn,) = recall.snapshot().turns
    assert isinstance(turn, AgentTurn) and turn.state is AgentState.INTERRUPTED
    # Its whole text came first: the reply is at least that text spoken slowly.
    spoken_ms = math.ceil(len(REPLY) * 1000 / SLOW_SPEECH_CHARS_PER_S)
    assert (turn.heard_ms, turn.total_ms) == (1000, max(3000, spoken_ms))
    assert REPLY.startswith(turn.text) and 0 < len(turn.text) <= len(REPLY) * 1000 // spoken_ms
    # A clear with nothing left to play cuts nothing.
    recall.incoming(Notice(events.Transcript(role="assistant", text="Done.")))
    recall.incoming(audio(300, None))
    recall.clearing(unplayed_ms=0.0)
    assert recall.snapshot().turns[-1] == AgentTurn("Done.", None, AgentState.STREAMING, 5)
