"""The link's state machine (sidecar/linkstate.py), synchronously: every move
the table allows, every one it does not, and what is derived from the state."""

from __future__ import annotations

import itertools

import pytest

from sidecar.linkstate import LIVE, TRANSITIONS, UP, IllegalTransition, LinkPhase, LinkState

S = LinkState


class Conn:
    """Stands for a connection: the machine only carries it."""


# The shortest legal walk from IDLE to each state (and the connection it carries).
PATHS: dict[LinkState, tuple[LinkState, ...]] = {
    S.IDLE: (),
    S.CONNECTING: (S.CONNECTING,),
    S.HANDSHAKE: (S.CONNECTING, S.HANDSHAKE),
    S.OPEN: (S.CONNECTING, S.HANDSHAKE, S.OPEN),
    S.CLOSING: (S.CONNECTING, S.HANDSHAKE, S.OPEN, S.CLOSING),
    S.DOWN: (S.CONNECTING, S.DOWN),
    S.RETRY_WAIT: (S.CONNECTING, S.DOWN, S.RETRY_WAIT),
    S.STOPPED: (S.STOPPED,),
}


def walk(to: LinkState, conn: Conn | None = None) -> LinkPhase[Conn]:
    phase: LinkPhase[Conn] = LinkPhase()
    for state in PATHS[to]:
        phase.to(state, (conn or Conn()) if state is S.HANDSHAKE else None)
    assert phase.state is to
    return phase


def legal() -> list[tuple[LinkState, LinkState]]:
    return [(old, new) for old, news in TRANSITIONS.items() for new in sorted(news, key=str)]


def illegal() -> list[tuple[LinkState, LinkState]]:
    return [(old, new) for old, new in itertools.product(S, S) if new not in TRANSITIONS[old]]


def test_the_table_names_every_state_and_reaches_each_from_idle() -> None:
    assert set(TRANSITIONS) == set(S)
    reached, frontier = {S.IDLE}, [S.IDLE]
    while frontier:
        for new in TRANSITIONS[frontier.pop()]:
            if new not in reached:
                reached.add(new)
                frontier.append(new)
    assert reached == set(S)
    # Only STOPPED is final, and every state can get there.
    assert [state for state in S if not TRANSITIONS[state]] == [S.STOPPED]


def test_a_new_phase_is_idle_not_connected_and_carries_nothing() -> None:
    phase: LinkPhase[Conn] = LinkPhase()
    assert (phase.state, phase.connected, phase.conn) == (S.IDLE, False, None)


@pytest.mark.parametrize(("old", "new"), legal(), ids=lambda s: s.name)
def test_every_legal_move(old: LinkState, new: LinkState) -> None:
    conn = Conn()
    phase = walk(old, conn)
    handed = Conn() if new is S.HANDSHAKE else None
    phase.to(new, handed)
    assert phase.state is new
    assert phase.connected is (new in UP)
    if new is S.HANDSHAKE:
        assert phase.conn is handed
    elif new in LIVE:
        assert phase.conn is conn  # OPEN keeps the connection HANDSHAKE brought
    else:
        assert phase.conn is None


@pytest.mark.parametrize(("old", "new"), illegal(), ids=lambda s: s.name)
def test_every_illegal_move_raises_and_changes_nothing(old: LinkState, new: LinkState) -> None:
    conn = Conn()
    phase = walk(old, conn)
    with pytest.raises(IllegalTransition, match=f"{old.name} cannot move to {new.name}"):
        phase.to(new, Conn() if new is S.HANDSHAKE else None)
    assert phase.state is old
    assert phase.conn is (conn if old in LIVE else None)


def test_handshake_needs_a_connection() -> None:
    phase = walk(S.CONNECTING)
    with pytest.raises(IllegalTransition, match="HANDSHAKE needs a connection"):
        phase.to(S.HANDSHAKE)
    assert (phase.state, phase.conn) == (S.CONNECTING, None)


@pytest.mark.parametrize(
    ("old", "new"), [m for m in legal() if m[1] is not S.HANDSHAKE], ids=lambda s: s.name
)
def test_no_other_state_takes_a_connection(old: LinkState, new: LinkState) -> None:
    conn = Conn()
    phase = walk(old, conn)
    with pytest.raises(IllegalTransition, match=f"{new.name} cannot take a connection"):
        phase.to(new, Conn())
    assert phase.state is old
    assert phase.conn is (conn if old in LIVE else None)


def test_connected_from_open_to_the_end_of_closing() -> None:
    """As the Connected and Disconnected events bracket it."""
    phase: LinkPhase[Conn] = LinkPhase()
    seen = []
    for state in (S.CONNECTING, S.HANDSHAKE, S.OPEN, S.CLOSING, S.DOWN, S.RETRY_WAIT):
        phase.to(state, Conn() if state is S.HANDSHAKE else None)
        seen.append((state, phase.connected))
    assert [state for state, up in seen if up] == [S.OPEN, S.CLOSING]


def test_a_failed_upgrade_lets_its_connection_go_uncounted() -> None:
    phase = walk(S.HANDSHAKE)
    phase.to(S.DOWN)
    assert (phase.connected, phase.conn) == (False, None)


def test_the_next_attempt_carries_only_its_own_connection() -> None:
    first, second = Conn(), Conn()
    phase = walk(S.OPEN, first)
    for state in (S.CLOSING, S.DOWN, S.CONNECTING):
        phase.to(state)
    phase.to(S.HANDSHAKE, second)
    assert phase.conn is second
