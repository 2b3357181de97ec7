"""The conversation as the meeting heard it: a bounded record of one run (sans-I/O).

A new agent session remembers nothing; the sidecar is the one place that saw
the whole conversation, so it keeps it here and a new session is seeded from
`snapshot()`. The record is fed neutral facts (a user said, the agent said, a
reply was cut, a tool was called and answered, the bot commanded) and never
knows which dialect spoke them.

What it keeps is what the meeting *heard*: a reply cut by a barge-in keeps
only its words that played. Vendors give no word timings for their replies,
so the heard share of the reply's audio (`heard_ms / total_ms`) is taken as
the heard share of its characters, and the text is cut at the last word
boundary within that share: never a word more than the audio reached.

The facts about one reply come in either order (OpenAI sends the transcript
of a cut reply after the cut), so a reply that has a key (`segment`) takes
its place in the record when it is first heard of, and its text fills that
place when it comes. A place whose text never comes is bounded too
(`MAX_UNFILLED`) and dropped with its session.

Bounds: at most `max_turns` turns and `max_chars` characters of text; past
either the oldest turns go, counted in `dropped_turns`. One turn longer than
`max_chars` is cut to fit (its `clipped_chars` says how much went). Ids
(`call_id`, `segment`) are not counted as text.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass, replace
from typing import Final, Literal

from sidecar.dialects.base import COMMANDS, AddContext, Say, UserText

DEFAULT_MAX_TURNS: Final = 50
DEFAULT_MAX_CHARS: Final = 20_000
MAX_UNFILLED: Final = 16
"""Places held for turns whose text has not come yet (a reply cut before its
transcript); past it the oldest place is given up."""


class AgentState(enum.StrEnum):
    STREAMING = "streaming"
    """Its text is known; its audio is not known to have played to the end."""
    COMPLETE = "complete"
    """Its audio played to the end."""
    INTERRUPTED = "interrupted"
    """A barge-in (or the bot's `clear`) cut its audio: the text is what was heard."""


class ToolState(enum.StrEnum):
    PENDING = "pending"
    ANSWERED = "answered"
    CANCELLED = "cancelled"
    """The agent withdrew the call before it was answered."""
    NO_RESULT = "no_result"
    """Its session ended before it was answered: the call died with it."""


class CommandKind(enum.StrEnum):
    """The bot's commands that put words into the conversation, by their command name."""

    SAY = COMMANDS[Say]
    USER_TEXT = COMMANDS[UserText]
    CONTEXT = COMMANDS[AddContext]


# -- the turns: what a snapshot holds --------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserTurn:
    """What the meeting said, as the vendor transcribed it."""

    text: str
    clipped_chars: int = 0

    @property
    def chars(self) -> int:
        return len(self.text)


@dataclass(frozen=True, slots=True)
class AgentTurn:
    """One reply of the agent, as far as the meeting heard it."""

    text: str
    segment: str | None
    state: AgentState
    said_chars: int
    """The length of the reply's whole transcript, heard or not."""
    heard_ms: int | None = None
    total_ms: int | None = None
    """Of an interrupted reply: the audio heard, and all the audio it had."""
    corrected: bool = False
    """The vendor said itself what was heard (a correction): no proportion applied."""
    clipped_chars: int = 0

    @property
    def chars(self) -> int:
        return len(self.text)


@dataclass(frozen=True, slots=True)
class ToolTurn:
    """A tool the agent called, and what came of it."""

    call_id: str
    name: str
    arguments_json: str
    output: str | None
    """The result's text; None until it is answered (and for ever, if it never is)."""
    state: ToolState
    clipped_chars: int = 0

    @property
    def chars(self) -> int:
        return len(self.name) + len(self.arguments_json) + len(self.output or "")


@dataclass(frozen=True, slots=True)
class CommandTurn:
    """Words the bot put into the conversation (`say`, `user_text`, `context`)."""

    kind: CommandKind
    text: str
    clipped_chars: int = 0

    @property
    def chars(self) -> int:
        return len(self.text)


Turn = UserTurn | AgentTurn | ToolTurn | CommandTurn


@dataclass(frozen=True, slots=True)
class MemorySnapshot:
    """The record at one moment, oldest turn first, for seeding a new session."""

    turns: tuple[Turn, ...]
    chars: int
    dropped_turns: int

    @property
    def turn_count(self) -> int:
        return len(self.turns)


@dataclass(frozen=True, slots=True)
class MemoryStatistics:
    turns: int
    chars: int
    dropped_turns: int
    """Turns the bounds pushed out, oldest first."""
    clipped_turns: int
    """Turns longer than `max_chars`, cut to fit."""
    abandoned: int
    """Places held for a turn whose text never came."""
    unmatched: int
    """Facts about a turn the record does not hold (a result for an unknown call)."""


@dataclass(frozen=True, slots=True)
class Footprint:
    """What the record holds inside, to show it stays bounded."""

    entries: int
    keys: int
    unfilled: int
    held_chars: int
    """Text held, including the transcripts of cut replies kept to re-cut them."""


# -- text ----------------------------------------------------------------------------


def words_within(text: str, budget: int) -> str:
    """The longest run of whole words from the start of `text` that ends within
    `budget` characters ("" when the first word does not fit)."""
    if budget >= len(text):
        return text
    end = max(budget, 0)
    # text[end] is the first character left out: the cut is at a word's end
    # only where it is a space.
    while end > 0 and not text[end].isspace():
        end -= 1
    return text[:end].rstrip()


def heard_budget(said_chars: int, heard_ms: int, total_ms: int) -> int:
    """How many of a reply's characters its heard audio stands for (rounded down:
    the record may not claim more than was heard)."""
    if heard_ms >= total_ms > 0:
        return said_chars
    if total_ms <= 0:
        return 0
    return said_chars * max(heard_ms, 0) // total_ms


def _clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, at a word boundary where it has one."""
    if len(text) <= limit:
        return text
    return words_within(text, limit) or text[:limit]


def _shares(lengths: list[int], budget: int) -> list[int]:
    """Fair shares of `budget` among texts of `lengths`: the short ones whole, the
    rest the same share each, so one huge field does not crowd out the others."""
    shares = [0] * len(lengths)
    left = budget
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    for n, i in enumerate(order):
        shares[i] = min(lengths[i], left // (len(order) - n))
        left -= shares[i]
    return shares


# -- the record ------------------------------------------------------------------------

Role = Literal["user", "agent", "tool", "command"]


@dataclass(slots=True, eq=False)
class _Entry:
    role: Role
    key: str | None
    """The vendor's id of the turn (a reply's segment, a call's id), if it has one."""
    seq: int = 0
    """Its place in the record's order."""
    turn: Turn | None = None
    """None: a place held for a turn whose text has not come yet."""
    # A reply's working state, kept to cut it again when a later fact moves the cut.
    said: str = ""
    """Its transcript (fitted to `max_chars`)."""
    said_chars: int = 0
    state: AgentState = AgentState.STREAMING
    heard_ms: int | None = None
    total_ms: int | None = None
    corrected: bool = False
    settled: bool = False
    """Its text is final (the vendor corrected it, nothing of it was heard, or a
    newer reply was heard since): later transcripts and cuts leave it as it is,
    and `said` is let go, so only the latest replies hold their whole transcript."""
    counted_clipped: bool = False


def _awaits_text(entry: _Entry) -> bool:
    """A reply whose place is held (a cut came first) and whose transcript has not come."""
    return entry.turn is None and not entry.said and not entry.settled


class ConversationRecord:
    """The turns of one run's conversation, in order, bounded (see the module's doc)."""

    def __init__(
        self, max_turns: int = DEFAULT_MAX_TURNS, max_chars: int = DEFAULT_MAX_CHARS
    ) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, not {max_turns}")
        if max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, not {max_chars}")
        self.max_turns = max_turns
        self.max_chars = max_chars
        self._entries: collections.OrderedDict[int, _Entry] = collections.OrderedDict()
        self._seq = 0
        # (role, key) -> the entry's seq; only what is in `_entries`.
        self._keys: dict[tuple[Role, str], int] = {}
        self._unfilled: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._turns = 0
        self._chars = 0
        self._dropped = 0
        self._clipped = 0
        self._abandoned = 0
        self._unmatched = 0

    # -- facts: the meeting ---------------------------------------------------------

    def user_started(self, key: str) -> None:
        """The meeting began a turn the vendor will transcribe later, under `key`:
        it takes its place now, before the agent's answer to it."""
        if ("user", key) not in self._keys:
            self._hold(_Entry("user", key))

    def user_said(self, text: str, key: str | None = None) -> None:
        """The vendor's transcript of what the meeting said."""
        text = text.strip()
        entry = self._find("user", key)
        if not text:
            if entry is not None and entry.turn is None:
                self._give_up(entry)
            return
        fitted = self._fit(text)
        turn = UserTurn(fitted, clipped_chars=len(text) - len(fitted))
        if entry is None:
            entry = self._append(_Entry("user", key))
        self._set(entry, turn)

    # -- facts: the agent -------------------------------------------------------------

    def agent_started(self, segment: str) -> None:
        """The first audio of reply `segment` played: it takes its place now."""
        if ("agent", segment) not in self._keys:
            self._hold(_Entry("agent", segment))

    def agent_said(self, text: str, segment: str | None) -> None:
        """The transcript of a reply (`segment`: the vendor's id of it, if any)."""
        text = text.strip()
        entry = self._agent(segment)
        if segment is None and entry is not None and not _awaits_text(entry):
            # An unkeyed transcript is a new reply, unless a cut came first and
            # holds its place.
            entry = None
        if entry is not None and entry.settled:
            return
        if not text:
            if entry is not None and _awaits_text(entry):
                self._give_up(entry)
            return
        if entry is None:
            entry = self._append(_Entry("agent", segment))
        entry.said = self._fit(text)
        entry.said_chars = len(text)
        self._render(entry)

    def agent_finished(self, segment: str | None) -> None:
        """The reply's audio played to its end."""
        entry = self._agent(segment)
        if entry is None:
            self._unmatched += 1
            return
        if entry.state is not AgentState.STREAMING:
            return
        entry.state = AgentState.COMPLETE
        self._render(entry)

    def agent_cut(self, segment: str | None, heard_ms: int, total_ms: int) -> None:
        """A barge-in cut reply `segment` after `heard_ms` of its `total_ms` of audio.
        Said again of the same reply (more of its audio came after the cut), the
        smaller heard and the larger total win: never more than was heard."""
        heard_ms, total_ms = max(heard_ms, 0), max(total_ms, 0)
        entry = self._agent(segment)
        # Unkeyed, the cut is of the reply playing: the latest, unless that one is
        # over, and then of one whose transcript has not come yet.
        if (
            segment is None
            and entry is not None
            and (entry.settled or entry.state is not AgentState.STREAMING)
            and not _awaits_text(entry)
        ):
            entry = None
        if entry is None:
            # The cut came before the transcript: the reply's place is here.
            entry = self._hold(_Entry("agent", segment, state=AgentState.INTERRUPTED))
        elif entry.settled or entry.state is AgentState.COMPLETE:
            return  # its text is final, or it played to the end: all of it was heard
        if entry.state is AgentState.INTERRUPTED and entry.heard_ms is not None:
            heard_ms = min(heard_ms, entry.heard_ms)
            total_ms = max(total_ms, entry.total_ms or 0)
        entry.state = AgentState.INTERRUPTED
        entry.heard_ms, entry.total_ms = heard_ms, total_ms
        self._render(entry)

    def agent_corrected(self, segment: str | None, text: str) -> None:
        """The vendor's own text of what was heard of a cut reply: it replaces ours."""
        entry = self._agent(segment)
        if entry is None:
            self._unmatched += 1
            return
        text = text.strip()
        entry.said = self._fit(text)
        entry.said_chars = len(text)
        entry.corrected, entry.settled = True, False
        self._render(entry)
        self._settle(entry)

    # -- facts: tools ------------------------------------------------------------------

    def tool_called(self, call_id: str, name: str, arguments_json: str) -> None:
        if ("tool", call_id) in self._keys:
            self._unmatched += 1  # a call id said twice: the first stands
            return
        entry = self._append(_Entry("tool", call_id))
        self._set(entry, self._fit_tool(call_id, name, arguments_json, None, ToolState.PENDING))

    def tool_answered(self, call_id: str, output: str) -> None:
        """The call's result (the bot's, or the sidecar's own when none came in time)."""
        self._settle_tool(call_id, output, ToolState.ANSWERED)

    def tool_cancelled(self, call_id: str) -> None:
        self._settle_tool(call_id, None, ToolState.CANCELLED)

    # -- facts: the bot ------------------------------------------------------------------

    def commanded(self, kind: CommandKind, text: str) -> None:
        """The bot's `say`, `user_text` or `context`, once it has been accepted."""
        text = text.strip()
        if not text:
            return
        fitted = self._fit(text)
        entry = self._append(_Entry("command", None))
        self._set(entry, CommandTurn(kind, fitted, clipped_chars=len(text) - len(fitted)))

    # -- facts: the connection -------------------------------------------------------------

    def session_ended(self) -> None:
        """The agent session ended: its unanswered calls died with it, and the
        transcripts still awaited will not come."""
        for entry in list(self._entries.values()):
            if entry.turn is None:
                self._give_up(entry)
            elif isinstance(entry.turn, ToolTurn) and entry.turn.state is ToolState.PENDING:
                self._set(entry, replace(entry.turn, state=ToolState.NO_RESULT))

    # -- views ------------------------------------------------------------------------------

    def snapshot(self) -> MemorySnapshot:
        turns = tuple(entry.turn for entry in self._entries.values() if entry.turn is not None)
        return MemorySnapshot(turns, self._chars, self._dropped)

    def statistics(self) -> MemoryStatistics:
        return MemoryStatistics(
            turns=self._turns,
            chars=self._chars,
            dropped_turns=self._dropped,
            clipped_turns=self._clipped,
            abandoned=self._abandoned,
            unmatched=self._unmatched,
        )

    def footprint(self) -> Footprint:
        held = sum(
            len(entry.said) + (entry.turn.chars if entry.turn is not None else 0)
            for entry in self._entries.values()
        )
        return Footprint(len(self._entries), len(self._keys), len(self._unfilled), held)

    # -- inside ------------------------------------------------------------------------------

    def _fit(self, text: str) -> str:
        return _clip(text, self.max_chars)

    def _fit_tool(
        self, call_id: str, name: str, arguments: str, output: str | None, state: ToolState
    ) -> ToolTurn:
        fields = [name, arguments, output or ""]
        lengths = [len(field) for field in fields]
        if sum(lengths) <= self.max_chars:
            return ToolTurn(call_id, name, arguments, output, state)
        # JSON has no word boundaries worth keeping: each field is cut at its share.
        shares = _shares(lengths, self.max_chars)
        name, arguments, cut_output = (
            field[:share] for field, share in zip(fields, shares, strict=True)
        )
        clipped = sum(lengths) - len(name) - len(arguments) - len(cut_output)
        return ToolTurn(
            call_id, name, arguments, None if output is None else cut_output, state, clipped
        )

    def _settle_tool(self, call_id: str, output: str | None, state: ToolState) -> None:
        entry = self._find("tool", call_id)
        turn = None if entry is None else entry.turn
        if entry is None or not isinstance(turn, ToolTurn) or turn.state is not ToolState.PENDING:
            self._unmatched += 1
            return
        clipped = turn.clipped_chars
        fitted = self._fit_tool(call_id, turn.name, turn.arguments_json, output, state)
        self._set(entry, replace(fitted, clipped_chars=clipped + fitted.clipped_chars))

    def _render(self, entry: _Entry) -> None:
        """Make an agent entry's turn from its working state."""
        if entry.settled:
            if isinstance(entry.turn, AgentTurn):
                self._set(entry, replace(entry.turn, state=entry.state))
            return
        heard = entry.said_chars
        if entry.heard_ms is not None and entry.total_ms is not None and not entry.corrected:
            heard = heard_budget(entry.said_chars, entry.heard_ms, entry.total_ms)
        text = words_within(entry.said, heard)
        turn = AgentTurn(
            text,
            entry.key,
            entry.state,
            entry.said_chars,
            entry.heard_ms,
            entry.total_ms,
            entry.corrected,
            # What the bound took of what was heard (the rest the barge-in took).
            clipped_chars=max(0, min(heard, entry.said_chars) - len(entry.said)),
        )
        if text:
            self._set(entry, turn)
            # A newer reply was heard: the older ones will not be cut again.
            for older in self._entries.values():
                if older is entry:
                    break
                if older.role == "agent" and older.turn is not None:
                    self._settle(older)
        else:
            # No transcript yet, or nothing of it heard: the meeting never knew
            # this reply, but its place stays, for what is said of it next.
            if entry.said:
                self._settle(entry)
            self._unset(entry)

    @staticmethod
    def _settle(entry: _Entry) -> None:
        entry.settled = True
        entry.said = ""

    def _find(self, role: Role, key: str | None) -> _Entry | None:
        if key is None:
            return None
        seq = self._keys.get((role, key))
        return None if seq is None else self._entries[seq]

    def _agent(self, segment: str | None) -> _Entry | None:
        """Reply `segment`; unkeyed, the latest reply without a key (the one playing)."""
        if segment is not None:
            return self._find("agent", segment)
        for entry in reversed(self._entries.values()):
            if entry.role == "agent" and entry.key is None:
                return entry
        return None

    def _append(self, entry: _Entry) -> _Entry:
        self._seq += 1
        entry.seq = self._seq
        self._entries[entry.seq] = entry
        if entry.key is not None:
            self._keys[(entry.role, entry.key)] = entry.seq
        return entry

    def _hold(self, entry: _Entry) -> _Entry:
        """A place for a turn whose text comes later."""
        self._append(entry)
        self._await(entry)
        return entry

    def _await(self, entry: _Entry) -> None:
        self._unfilled[entry.seq] = None
        while len(self._unfilled) > MAX_UNFILLED:
            self._give_up(self._entries[next(iter(self._unfilled))])

    def _set(self, entry: _Entry, turn: Turn) -> None:
        if entry.turn is None:
            self._turns += 1
            self._unfilled.pop(entry.seq, None)
        else:
            self._chars -= entry.turn.chars
        entry.turn = turn
        self._chars += turn.chars
        if turn.clipped_chars and not entry.counted_clipped:
            entry.counted_clipped = True
            self._clipped += 1
        self._bound()

    def _unset(self, entry: _Entry) -> None:
        if entry.turn is not None:
            self._turns -= 1
            self._chars -= entry.turn.chars
            entry.turn = None
            self._await(entry)

    def _bound(self) -> None:
        while self._turns > self.max_turns or self._chars > self.max_chars:
            _, oldest = self._entries.popitem(last=False)
            self._forget(oldest)
            if oldest.turn is None:
                self._abandoned += 1
            else:
                self._dropped += 1

    def _give_up(self, entry: _Entry) -> None:
        self._abandoned += 1
        self._remove(entry)

    def _remove(self, entry: _Entry) -> None:
        del self._entries[entry.seq]
        self._forget(entry)

    def _forget(self, entry: _Entry) -> None:
        if entry.key is not None:
            del self._keys[(entry.role, entry.key)]
        self._unfilled.pop(entry.seq, None)
        if entry.turn is not None:
            self._turns -= 1
            self._chars -= entry.turn.chars


# -- seeding: what a new session is given ---------------------------------------------------


def carried(snapshot: MemorySnapshot) -> tuple[Turn, ...]:
    """The turns a new session is seeded with, oldest first. A `context` text is
    left out (the dialect's Briefing carries it in the instructions already), and
    so is a `say` (the agent's transcript of what it said follows it)."""
    return tuple(
        turn
        for turn in snapshot.turns
        if not (isinstance(turn, CommandTurn) and turn.kind is not CommandKind.USER_TEXT)
    )


_OUTCOMES: Final = {
    ToolState.PENDING: "no result yet",
    ToolState.CANCELLED: "the call was cancelled before any result",
    ToolState.NO_RESULT: "no result came (the session ended first)",
}


def tool_note(turn: ToolTurn) -> str:
    """A tool call and its result as one line of text, for a vendor that takes
    no tool calls in a session's history (OpenAI)."""
    outcome = (
        f"it returned: {turn.output}" if turn.state is ToolState.ANSWERED else _OUTCOMES[turn.state]
    )
    return f"Earlier, the agent called the tool `{turn.name}` with {turn.arguments_json}; {outcome}"


def spoken(turn: AgentTurn) -> str:
    """An agent turn's text, trailing off where a barge-in cut it (the rest was
    never heard)."""
    return f"{turn.text}…" if turn.state is AgentState.INTERRUPTED else turn.text
