"""The conversation record: every kind of turn, in order, cut as heard, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.memory import (
    DEFAULT_MAX_CHARS,
    DEFAULT_MAX_TURNS,
    MAX_UNFILLED,
    AgentState,
    AgentTurn,
    CommandKind,
    CommandTurn,
    ConversationRecord,
    ToolState,
    ToolTurn,
    UserTurn,
    heard_budget,
    words_within,
)

# Thirty words of six characters: a reply of 209 characters.
REPLY = " ".join(f"word{n:02d}" for n in range(1, 31))


def texts(record: ConversationRecord) -> list[str]:
    turns = record.snapshot().turns
    return [turn.text for turn in turns if not isinstance(turn, ToolTurn)]


def agent(record: ConversationRecord, index: int = -1) -> AgentTurn:
    turn = record.snapshot().turns[index]
    assert isinstance(turn, AgentTurn)
    return turn


# -- every kind of turn, in order -----------------------------------------------------


def test_every_kind_of_turn_is_kept_in_order() -> None:
    record = ConversationRecord()
    record.commanded(CommandKind.CONTEXT, "Alice joined the meeting.")
    record.user_said(" What time is it? ")
    record.tool_called("call_1", "clock", '{"tz": "UTC"}')
    record.tool_answered("call_1", '"03:00"')
    record.agent_said("It is three o'clock.", "item_1:0")
    record.agent_finished("item_1:0")
    record.commanded(CommandKind.SAY, "Welcome, Alice.")
    record.commanded(CommandKind.USER_TEXT, "Book the room.")

    snapshot = record.snapshot()
    assert snapshot.turns == (
        CommandTurn(CommandKind.CONTEXT, "Alice joined the meeting."),
        UserTurn("What time is it?"),
        ToolTurn("call_1", "clock", '{"tz": "UTC"}', '"03:00"', ToolState.ANSWERED),
        AgentTurn("It is three o'clock.", "item_1:0", AgentState.COMPLETE, said_chars=20),
        CommandTurn(CommandKind.SAY, "Welcome, Alice."),
        CommandTurn(CommandKind.USER_TEXT, "Book the room."),
    )
    assert snapshot.turn_count == 6
    assert snapshot.chars == sum(turn.chars for turn in snapshot.turns)
    assert snapshot.dropped_turns == 0


def test_command_kinds_are_the_command_names() -> None:
    assert [kind.value for kind in CommandKind] == ["say", "user_text", "context"]


def test_an_agent_turn_streams_until_its_audio_ends() -> None:
    record = ConversationRecord()
    record.agent_said("Hello there.", "a")
    assert agent(record).state is AgentState.STREAMING
    record.agent_finished("a")
    assert agent(record).state is AgentState.COMPLETE
    # A cut after the end (a barge-in in the silence after it) takes nothing.
    record.agent_cut("a", 100, 3000)
    assert agent(record) == AgentTurn("Hello there.", "a", AgentState.COMPLETE, said_chars=12)


def test_empty_transcripts_make_no_turn() -> None:
    record = ConversationRecord()
    record.user_said("   ")
    record.agent_said("", "a")
    record.agent_said("", None)
    record.commanded(CommandKind.CONTEXT, "")
    assert record.snapshot().turns == ()
    assert record.statistics().turns == 0


def test_unkeyed_replies_are_each_a_turn() -> None:
    record = ConversationRecord()
    record.agent_said("One.", None)
    record.user_said("Go on.")
    record.agent_said("Two.", None)
    assert texts(record) == ["One.", "Go on.", "Two."]


def test_a_keyed_transcript_said_again_replaces_the_first() -> None:
    record = ConversationRecord()
    record.agent_said("Draft", "a")
    record.agent_said("Final text", "a")
    assert texts(record) == ["Final text"]


def test_a_reply_started_keeps_its_place_before_later_turns() -> None:
    record = ConversationRecord()
    record.agent_started("a")
    record.user_said("Hm.")
    record.agent_said("The answer.", "a")
    assert texts(record) == ["The answer.", "Hm."]


def test_a_user_turn_started_keeps_its_place_before_the_answer() -> None:
    record = ConversationRecord()
    record.user_started("u1")
    record.agent_said("Sure, done.", "a")
    record.user_said("Please book it.", "u1")
    assert texts(record) == ["Please book it.", "Sure, done."]


# -- the cut, as heard ------------------------------------------------------------------


def test_a_barge_in_one_second_into_three_keeps_the_first_third() -> None:
    record = ConversationRecord()
    record.agent_said(REPLY, "a")
    record.agent_cut("a", heard_ms=1000, total_ms=3000)
    turn = agent(record)
    assert turn.state is AgentState.INTERRUPTED
    assert (turn.heard_ms, turn.total_ms, turn.said_chars) == (1000, 3000, len(REPLY))
    words = turn.text.split()
    # About a third of the 30 words, whole, from the start, never more than heard.
    assert 9 <= len(words) <= 10
    assert words == REPLY.split()[: len(words)]
    assert len(turn.text) <= len(REPLY) * 1000 // 3000
    assert REPLY.startswith(turn.text)


def test_the_cut_is_at_a_word_boundary_never_inside_a_word() -> None:
    record = ConversationRecord()
    text = "Absolutely extraordinary circumstances surround everything"
    record.agent_said(text, "a")
    record.agent_cut("a", heard_ms=1, total_ms=2)  # half: 29 chars, inside a word
    assert agent(record).text == "Absolutely extraordinary"


def test_a_cut_before_the_transcript_waits_for_it_in_its_place() -> None:
    record = ConversationRecord()
    record.user_said("Tell me everything.")
    record.agent_started("a")
    record.agent_cut("a", heard_ms=1000, total_ms=3000)
    # The barging-in user's transcript comes before the cut reply's (OpenAI).
    record.user_said("Stop, thanks.")
    assert texts(record) == [
        "Tell me everything.",
        "Stop, thanks.",
    ]
    record.agent_said(REPLY, "a")
    turns = record.snapshot().turns
    assert [type(turn) for turn in turns] == [UserTurn, AgentTurn, UserTurn]
    cut = turns[1]
    assert isinstance(cut, AgentTurn)
    assert cut.state is AgentState.INTERRUPTED
    assert cut.text == " ".join(REPLY.split()[:10])


def test_a_cut_with_no_start_before_it_holds_the_place_itself() -> None:
    record = ConversationRecord()
    record.agent_cut("a", heard_ms=1500, total_ms=3000)
    record.user_said("Wait.")
    record.agent_said(REPLY, "a")
    assert [type(turn) for turn in record.snapshot().turns] == [AgentTurn, UserTurn]
    assert agent(record, 0).text == " ".join(REPLY.split()[:15])


def test_an_unkeyed_cut_before_and_after_the_transcript() -> None:
    record = ConversationRecord()
    record.agent_said(REPLY, None)
    record.agent_cut(None, heard_ms=1000, total_ms=3000)
    assert agent(record).text == " ".join(REPLY.split()[:10])
    # The next reply is cut before its transcript: it does not touch the first.
    record.agent_cut(None, heard_ms=2000, total_ms=3000)
    record.agent_said(REPLY, None)
    turns = record.snapshot().turns
    assert len(turns) == 2
    assert agent(record, 0).text == " ".join(REPLY.split()[:10])
    assert agent(record, 1).text == " ".join(REPLY.split()[:20])
    assert agent(record, 1).state is AgentState.INTERRUPTED


def test_audio_after_the_cut_only_ever_shortens_what_was_heard() -> None:
    record = ConversationRecord()
    record.agent_said(REPLY, "a")
    record.agent_cut("a", heard_ms=1000, total_ms=2000)
    assert len(agent(record).text.split()) == 15
    # More of the reply's audio arrived after the barge-in (never played).
    record.agent_cut("a", heard_ms=1000, total_ms=3000)
    assert len(agent(record).text.split()) == 10
    record.agent_cut("a", heard_ms=2500, total_ms=2500)
    assert len(agent(record).text.split()) == 10


def test_a_reply_cut_before_any_word_was_heard_is_no_turn() -> None:
    record = ConversationRecord()
    record.agent_said(REPLY, "a")
    record.agent_cut("a", heard_ms=0, total_ms=3000)
    assert record.snapshot().turns == ()
    assert record.statistics().turns == 0
    # A later transcript of the same reply does not bring it back.
    record.agent_said(REPLY, "a")
    assert record.snapshot().turns == ()


def test_a_correction_replaces_what_a_cut_reply_said() -> None:
    record = ConversationRecord()
    record.agent_said(REPLY, "a")
    record.agent_cut("a", heard_ms=1000, total_ms=3000)
    record.agent_corrected("a", "word01 word02")
    turn = agent(record)
    assert (turn.text, turn.corrected, turn.state) == (
        "word01 word02",
        True,
        AgentState.INTERRUPTED,
    )
    # The vendor's word stands against a later transcript or cut.
    record.agent_said(REPLY, "a")
    record.agent_cut("a", heard_ms=1, total_ms=3000)
    assert agent(record).text == "word01 word02"
    record.agent_corrected("unknown", "text")
    assert record.statistics().unmatched == 1


@given(
    words=st.lists(st.text(alphabet="abcdefgh", min_size=1, max_size=12), min_size=1),
    heard=st.integers(min_value=0, max_value=10_000),
    total=st.integers(min_value=1, max_value=10_000),
)
def test_never_more_than_was_heard(words: list[str], heard: int, total: int) -> None:
    text = " ".join(words)
    record = ConversationRecord(max_chars=1_000_000)
    record.agent_said(text, "a")
    record.agent_cut("a", heard_ms=heard, total_ms=total)
    kept = record.snapshot().turns
    heard_text = agent(record).text if kept else ""
    assert len(heard_text) <= len(text) * min(heard, total) / total
    # Whole words from the start.
    assert heard_text.split() == words[: len(heard_text.split())]


def test_words_within_and_heard_budget() -> None:
    assert words_within("one two three", 7) == "one two"
    assert words_within("one two three", 6) == "one"
    assert words_within("one two three", 2) == ""
    assert words_within("one two three", 100) == "one two three"
    assert words_within("one\ntwo", 4) == "one"
    assert heard_budget(300, 1000, 3000) == 100
    assert heard_budget(300, 5000, 3000) == 300
    assert heard_budget(300, 1000, 0) == 0


# -- tools --------------------------------------------------------------------------------


def test_a_tool_call_without_a_result() -> None:
    record = ConversationRecord()
    record.tool_called("c1", "lookup", "{}")
    assert record.snapshot().turns == (ToolTurn("c1", "lookup", "{}", None, ToolState.PENDING),)
    record.session_ended()
    assert record.snapshot().turns == (ToolTurn("c1", "lookup", "{}", None, ToolState.NO_RESULT),)
    # The answer to a call that died with its session changes nothing.
    record.tool_answered("c1", "late")
    assert record.snapshot().turns[0] == ToolTurn("c1", "lookup", "{}", None, ToolState.NO_RESULT)
    assert record.statistics().unmatched == 1


def test_a_tool_call_cancelled_and_one_answered_keep_their_order() -> None:
    record = ConversationRecord()
    record.tool_called("c1", "a", '{"x": 1}')
    record.tool_called("c2", "b", '{"y": 2}')
    record.tool_cancelled("c1")
    record.tool_answered("c2", "done")
    record.tool_answered("nope", "x")
    record.tool_called("c2", "again", "{}")
    assert record.snapshot().turns == (
        ToolTurn("c1", "a", '{"x": 1}', None, ToolState.CANCELLED),
        ToolTurn("c2", "b", '{"y": 2}', "done", ToolState.ANSWERED),
    )
    assert record.statistics().unmatched == 2


def test_an_oversized_tool_result_is_cut_to_fit_and_shares_fairly() -> None:
    record = ConversationRecord(max_chars=100)
    record.tool_called("c1", "search", '{"q": "' + "x" * 200 + '"}')
    pending = record.snapshot().turns[0]
    assert isinstance(pending, ToolTurn)
    assert pending.chars == 100 and pending.name == "search"
    record.tool_answered("c1", "y" * 500)
    turn = record.snapshot().turns[0]
    assert isinstance(turn, ToolTurn)
    assert turn.chars == 100
    assert turn.name == "search"
    assert len(turn.arguments_json) == len(turn.output or "") == 47
    assert turn.clipped_chars == 6 + 209 + 500 - 100
    assert record.statistics().clipped_turns == 1


# -- bounds ---------------------------------------------------------------------------------


def test_defaults() -> None:
    record = ConversationRecord()
    assert (record.max_turns, record.max_chars) == (DEFAULT_MAX_TURNS, DEFAULT_MAX_CHARS)
    assert (DEFAULT_MAX_TURNS, DEFAULT_MAX_CHARS) == (50, 20_000)


@pytest.mark.parametrize("kwargs", [{"max_turns": 0}, {"max_chars": 0}])
def test_bounds_must_be_positive(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be at least 1"):
        ConversationRecord(**kwargs)


def test_the_oldest_turns_go_past_max_turns() -> None:
    record = ConversationRecord(max_turns=3)
    for n in range(5):
        record.user_said(f"turn {n}")
    snapshot = record.snapshot()
    assert texts(record) == ["turn 2", "turn 3", "turn 4"]
    assert snapshot.dropped_turns == 2


def test_the_oldest_turns_go_past_max_chars() -> None:
    record = ConversationRecord(max_chars=50)
    for n in range(6):
        record.user_said(f"{n}" * 20)
    snapshot = record.snapshot()
    assert texts(record) == ["4" * 20, "5" * 20]
    assert (snapshot.chars, snapshot.dropped_turns) == (40, 4)


def test_a_tool_result_that_grows_the_record_pushes_the_oldest_out() -> None:
    record = ConversationRecord(max_chars=50)
    record.user_said("a" * 20)
    record.tool_called("c1", "f", "{}")
    record.tool_answered("c1", "b" * 40)
    turns = record.snapshot().turns
    assert [type(turn) for turn in turns] == [ToolTurn]
    assert record.snapshot().chars == 43


def test_a_single_oversized_turn_is_cut_to_fit() -> None:
    record = ConversationRecord(max_chars=100)
    record.user_said("earlier")
    text = " ".join(["lorem"] * 100)  # 599 characters
    record.user_said(text)
    snapshot = record.snapshot()
    assert len(snapshot.turns) == 1
    (turn,) = snapshot.turns
    assert isinstance(turn, UserTurn)
    assert turn.text == " ".join(["lorem"] * 16)  # 95 characters, at a word boundary
    assert turn.clipped_chars == len(text) - 95
    assert snapshot.chars == 95 <= 100
    assert snapshot.dropped_turns == 1
    assert record.statistics().clipped_turns == 1


def test_a_single_word_longer_than_max_chars_is_cut_hard() -> None:
    record = ConversationRecord(max_chars=10)
    record.commanded(CommandKind.CONTEXT, "x" * 25)
    assert record.snapshot().turns == (CommandTurn(CommandKind.CONTEXT, "x" * 10, 15),)


def test_an_oversized_cut_reply_keeps_what_was_heard_within_the_bound() -> None:
    record = ConversationRecord(max_chars=50)
    record.agent_said(REPLY, "a")  # 209 characters
    assert agent(record).chars <= 50
    record.agent_cut("a", heard_ms=1000, total_ms=3000)  # 69 heard: still over 50
    turn = agent(record)
    assert turn.chars <= 50 and turn.clipped_chars > 0
    record.agent_cut("a", heard_ms=1000, total_ms=6000)  # 34 heard: fits
    turn = agent(record)
    assert turn.text == " ".join(REPLY.split()[:5]) and turn.clipped_chars == 0


def test_places_held_without_text_are_bounded_and_end_with_the_session() -> None:
    record = ConversationRecord()
    for n in range(MAX_UNFILLED + 5):
        record.agent_cut(f"never-{n}", heard_ms=10, total_ms=100)
    record.user_started("u")
    assert record.footprint().unfilled == MAX_UNFILLED
    assert record.statistics().abandoned == 6
    assert record.snapshot().turns == ()
    record.session_ended()
    assert record.footprint().entries == 0
    assert record.footprint().keys == 0
    assert record.statistics().abandoned == MAX_UNFILLED + 6


def test_ten_thousand_turns_stay_within_both_bounds_and_flat() -> None:
    record = ConversationRecord()
    fed = 0
    footprints = []
    for n in range(10_000):
        match n % 5:
            case 0:
                record.user_said(f"user turn {n} " + "u" * (n % 700))
                fed += 1
            case 1:
                record.agent_said(f"agent reply {n} " + "word " * (n % 300), f"seg{n}")
                record.agent_finished(f"seg{n}")
                fed += 1
            case 2:
                record.agent_started(f"seg{n}")
                record.agent_cut(f"seg{n}", heard_ms=500, total_ms=1500)
                record.agent_said(f"cut reply {n} " + "word " * 90, f"seg{n}")
                fed += 1
            case 3:
                record.tool_called(f"call{n}", "lookup", f'{{"n": {n}}}')
                if n % 2:
                    record.tool_answered(f"call{n}", "r" * (n % 500))
                fed += 1
            case 4:
                record.agent_cut(f"lost{n}", heard_ms=100, total_ms=200)  # never transcribed
                record.commanded(CommandKind.CONTEXT, f"note {n}")
                fed += 1
        if n % 1000 == 999:
            snapshot = record.snapshot()
            stats = record.statistics()
            assert len(snapshot.turns) <= DEFAULT_MAX_TURNS
            assert snapshot.chars <= DEFAULT_MAX_CHARS
            assert snapshot.chars == sum(turn.chars for turn in snapshot.turns)
            assert len(snapshot.turns) + snapshot.dropped_turns == fed
            assert stats.turns == len(snapshot.turns)
            footprints.append(record.footprint())
    # Flat: what the record holds inside does not grow with the conversation.
    for footprint in footprints:
        assert footprint.entries <= DEFAULT_MAX_TURNS + MAX_UNFILLED
        assert footprint.keys <= footprint.entries
        assert footprint.unfilled <= MAX_UNFILLED
        assert footprint.held_chars <= 2 * DEFAULT_MAX_CHARS
    assert record.snapshot().turns[-1] == CommandTurn(CommandKind.CONTEXT, "note 9999")
    assert record.snapshot().dropped_turns > 9_900


def test_an_older_reply_is_not_cut_again_once_a_newer_one_is_heard() -> None:
    record = ConversationRecord()
    record.agent_said(REPLY, "a")
    record.agent_cut("a", heard_ms=2000, total_ms=3000)
    record.agent_said("Next.", "b")
    # Late word of the first reply's audio changes nothing now; its transcript is let go.
    record.agent_cut("a", heard_ms=100, total_ms=3000)
    record.agent_said("something else", "a")
    assert agent(record, 0).text == " ".join(REPLY.split()[:20])
    assert record.footprint().held_chars == agent(record, 0).chars + 2 * len("Next.")
    # Its audio may still end: that much is kept.
    record.agent_said("Last.", "c")
    record.agent_finished("b")
    assert agent(record, 1).state is AgentState.COMPLETE


def test_a_cut_after_all_the_audio_played_keeps_every_word() -> None:
    record = ConversationRecord()
    record.agent_said(REPLY, "a")
    record.agent_cut("a", heard_ms=3200, total_ms=3000)
    turn = agent(record)
    assert (turn.text, turn.state) == (REPLY, AgentState.INTERRUPTED)


def test_facts_about_unknown_turns_are_counted() -> None:
    record = ConversationRecord()
    record.agent_finished("nope")
    record.tool_cancelled("nope")
    record.agent_corrected(None, "text")
    assert record.statistics().unmatched == 3
    assert record.snapshot().turns == ()
