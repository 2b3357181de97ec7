"""The shell that feeds the conversation record (sans-I/O, synchronous)."""

from __future__ import annotations

from sidecar.dialects.base import ClearedOut, Heard, Notice, PlayAudio
from sidecar.events import Transcript
from sidecar.memory import AgentState, AgentTurn, ConversationRecord
from sidecar.recall import Recall

RATE = 16000


def reply(recall: Recall, segment: str, text: str, seconds: float) -> None:
    recall.incoming(PlayAudio(bytes(int(2 * RATE * seconds)), RATE, segment))
    recall.incoming(Notice(Transcript(role="assistant", text=text, segment=segment)))


def test_a_vendors_correction_replaces_the_cut_reply_as_it_is() -> None:
    recall = Recall(ConversationRecord())
    reply(recall, "7", "one two three four five six seven eight nine", 3.0)
    recall.outgoing(ClearedOut(Heard("7", 1000)))
    # ElevenLabs' agent_response_correction: the same segment, its text as heard.
    recall.incoming(Notice(Transcript(role="assistant", text="one two three four", segment="7")))
    (turn,) = recall.record.snapshot().turns
    assert isinstance(turn, AgentTurn)
    # Taken as it came, not cut again to a third of its words.
    assert turn.text == "one two three four"
    assert turn.state is AgentState.INTERRUPTED


def test_a_reply_heard_whole_keeps_its_transcript() -> None:
    recall = Recall(ConversationRecord())
    reply(recall, "8", "all of it was heard", 1.0)
    (turn,) = recall.record.snapshot().turns
    assert isinstance(turn, AgentTurn) and turn.text == "all of it was heard"
