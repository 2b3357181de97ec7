"""What the link's supervisor is doing, as one state with its legal moves.

The link (link.py) once kept its connection's facts apart: a `connected`
flag in its statistics, the live `Connection` or None, and whether the
supervisor was between connections, waiting out a retry, or done, were
each a variable of their own, read together. Here they are one state, in
the manner of wsproto's `ConnectionState`: every move is checked against
one table, an illegal one raises, and "counted connected" and "the live
connection" are read from the state, never stored beside it.

Sans-I/O: no trio, no sockets; the link makes the moves at the points where
its tasks reach them, and tests/test_linkstate.py walks every move here.

What is not here, and why: the graceful stop is a request (the link's
`_stopping` event) that tasks wait on and that each phase honours at its
next decision point (a connection being made is made, then closed with
1000), so it is not a phase; one connection's own life (its upgrade, its
opening messages, its close handshake) is the connection's `ConnState`
(connection.py); whether its session takes audio is the outbox's
`accepting`, which the link sets from the session while the state is OPEN.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, Generic, TypeVar


class LinkState(enum.Enum):
    """One phase of the supervisor's loop (Link.serve)."""

    IDLE = "idle"
    """Built; serve() has not started."""
    CONNECTING = "connecting"
    """An attempt: the target's URL (where the dialect fetches one), then
    the TCP and TLS stream. No connection yet."""
    HANDSHAKE = "handshake"
    """The stream is open and a connection made for it: the websocket
    upgrade is under way. Not counted connected."""
    OPEN = "open"
    """Upgraded and announced (the Connected event): counted connected,
    from the session's opening to the connection's close handshake."""
    CLOSING = "closing"
    """The open connection ended; the link tells the downlink its session
    ended and drops the socket. Still counted connected: the Disconnected
    event is what ends that."""
    DOWN = "down"
    """No connection, and none being made: an attempt failed, or the
    Disconnected event went out. The supervisor decides what follows
    (without waiting)."""
    RETRY_WAIT = "retry_wait"
    """Waiting out the retry policy's delay (or a stop) before the next attempt."""
    STOPPED = "stopped"
    """serve() is over, by a stop or by its own verdict (the call ended,
    gave up, rejected, unusable). Final."""


UP: Final = frozenset({LinkState.OPEN, LinkState.CLOSING})
"""Counted connected (stats.connected): from Connected to Disconnected."""

LIVE: Final = frozenset({LinkState.HANDSHAKE, LinkState.OPEN})
"""The states that carry a connection: notify() and stop() reach it, and
its counters add to the link's."""

TRANSITIONS: Final[Mapping[LinkState, frozenset[LinkState]]] = {
    LinkState.IDLE: frozenset({LinkState.CONNECTING, LinkState.STOPPED}),
    LinkState.CONNECTING: frozenset({LinkState.HANDSHAKE, LinkState.DOWN}),
    LinkState.HANDSHAKE: frozenset({LinkState.OPEN, LinkState.DOWN}),
    LinkState.OPEN: frozenset({LinkState.CLOSING}),
    LinkState.CLOSING: frozenset({LinkState.DOWN}),
    # At once to a new attempt (a rotation, a renewal), or after a delay, or never.
    LinkState.DOWN: frozenset({LinkState.CONNECTING, LinkState.RETRY_WAIT, LinkState.STOPPED}),
    LinkState.RETRY_WAIT: frozenset({LinkState.CONNECTING, LinkState.STOPPED}),
    LinkState.STOPPED: frozenset(),
}
"""Every legal move; anything else is a bug in the supervisor."""


class IllegalTransition(RuntimeError):
    """A move the table does not allow (a supervisor bug, never the server's doing)."""


C = TypeVar("C")


class LinkPhase(Generic[C]):
    """The supervisor's state, and the connection it carries (in LIVE states).

    Generic in the connection so that it needs none to be tested.
    """

    __slots__ = ("_conn", "_state")

    def __init__(self) -> None:
        self._state = LinkState.IDLE
        self._conn: C | None = None

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def connected(self) -> bool:
        return self._state in UP

    @property
    def conn(self) -> C | None:
        """The connection being upgraded or open; None in every other state."""
        return self._conn

    def to(self, new: LinkState, conn: C | None = None) -> None:
        """Move to `new`; a connection comes with HANDSHAKE, and only with it.

        Leaving the LIVE states lets the connection go: what is left of it
        (its socket, its counters) is the caller's to finish.
        """
        old = self._state
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(f"link state {old.name} cannot move to {new.name}")
        if (new is LinkState.HANDSHAKE) != (conn is not None):
            what = "needs" if new is LinkState.HANDSHAKE else "cannot take"
            raise IllegalTransition(f"link state {new.name} {what} a connection")
        self._state = new
        if new not in LIVE:
            self._conn = None
        elif conn is not None:
            self._conn = conn


__all__ = ["LIVE", "TRANSITIONS", "UP", "IllegalTransition", "LinkPhase", "LinkState"]
