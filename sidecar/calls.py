"""The agent's tool calls waiting for the bot's answer (sans-I/O).

A call comes in from the dialect (`ToolCallIn`) and is announced to the bot
(`tool_call`); it waits until the bot answers it (`tool_result`), the agent
withdraws it, its session ends, or `timeout_s` passes: then the sidecar
answers it itself with an error output, so the conversation goes on instead
of the agent waiting for ever. Pending calls are bounded in count and in
bytes (their ids and names, all that is kept): past either, the oldest is
answered that way too. Times are the caller's clock, in seconds; the trio
shell runs the timer.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from sidecar import events
from sidecar.dialects.base import ToolCallCancelledIn, ToolCallIn, ToolResult

TIMEOUT_S: Final = 30.0
MAX_PENDING: Final = 64
MAX_PENDING_BYTES: Final = 256 * 1024
"""Of the pending calls' ids and names together: the arguments are not kept."""

_json: Final = msgspec.json.Encoder()
_args: Final = msgspec.json.Decoder()

Out = events.Event | ToolResult
"""What the registry makes: events for the bot, answers for the agent."""


@dataclass(frozen=True, slots=True)
class CallStatistics:
    pending: int
    timed_out: int
    overflowed: int


@dataclass(slots=True)
class _Pending:
    name: str
    deadline: float

    def weight(self, call_id: str) -> int:
        return len(call_id) + len(self.name)


def seconds(value: float) -> str:
    """`30`, `2.5`: a duration as the messages say it."""
    return str(int(value)) if value == int(value) else f"{value:g}"


class ToolCalls:
    def __init__(
        self,
        timeout_s: float = TIMEOUT_S,
        max_pending: int = MAX_PENDING,
        max_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        if timeout_s <= 0 or max_pending < 1 or max_bytes < 1:
            raise ValueError("tool-call limits must be positive")
        self.timeout_s = timeout_s
        self._max_pending = max_pending
        self._max_bytes = max_bytes
        # In order of arrival, which is also the order of the deadlines.
        self._pending: collections.OrderedDict[str, _Pending] = collections.OrderedDict()
        self._bytes = 0
        self._timed_out = 0
        self._overflowed = 0

    def __contains__(self, call_id: str) -> bool:
        return call_id in self._pending

    def called(self, call: ToolCallIn, now: float) -> list[Out]:
        """The agent calls a tool: the bot hears of it; the oldest calls may be
        answered for it, if too many wait."""
        out: list[Out] = []
        if call.call_id in self._pending:
            # The vendor repeated an id: the newer call is the one to answer.
            self._remove(call.call_id)
        try:
            arguments = _args.decode(call.arguments_json)
        except (msgspec.DecodeError, RecursionError):
            arguments = None
        out.append(
            events.ToolCall(
                call_id=call.call_id,
                name=call.name,
                arguments=arguments,
                arguments_json=call.arguments_json,
            )
        )
        entry = _Pending(call.name, now + self.timeout_s)
        self._pending[call.call_id] = entry
        self._bytes += entry.weight(call.call_id)
        while len(self._pending) > 1 and (
            len(self._pending) > self._max_pending or self._bytes > self._max_bytes
        ):
            oldest = next(iter(self._pending))
            self._overflowed += 1
            out += self._give_up(
                oldest,
                f"not answered: more than {self._max_pending} calls were waiting for the bot",
                "tool_calls_overflow",
                "overflow",
            )
        return out

    def cancelled(self, cancel: ToolCallCancelledIn) -> list[Out]:
        """The agent withdrew a call; one nobody waits for any more says nothing."""
        if cancel.call_id not in self._pending:
            return []
        self._remove(cancel.call_id)
        return [events.ToolCallCancelled(call_id=cancel.call_id, reason=cancel.reason)]

    def session_ended(self) -> list[Out]:
        """Every pending call died with the connection that made it."""
        out: list[Out] = [
            events.ToolCallCancelled(call_id=call_id, reason="session_ended")
            for call_id in self._pending
        ]
        self._pending.clear()
        self._bytes = 0
        return out

    def answer(self, call_id: str) -> bool:
        """The bot answers `call_id`: False when no such call waits (`stale`)."""
        if call_id not in self._pending:
            return False
        self._remove(call_id)
        return True

    @property
    def deadline(self) -> float | None:
        """When `expire` next has something to do; None: no call waits."""
        if not self._pending:
            return None
        return next(iter(self._pending.values())).deadline

    def expire(self, now: float) -> list[Out]:
        """Answer, with an error output, every call whose time is up."""
        out: list[Out] = []
        while self._pending:
            call_id, entry = next(iter(self._pending.items()))
            if entry.deadline > now:
                break
            self._timed_out += 1
            out += self._give_up(
                call_id,
                f"no result within {seconds(self.timeout_s)} s",
                "tool_timeout",
                "timeout",
            )
        return out

    def statistics(self) -> CallStatistics:
        return CallStatistics(len(self._pending), self._timed_out, self._overflowed)

    def _remove(self, call_id: str) -> _Pending:
        entry = self._pending.pop(call_id)
        self._bytes -= entry.weight(call_id)
        return entry

    def _give_up(self, call_id: str, why: str, code: str, reason: str) -> Sequence[Out]:
        entry = self._remove(call_id)
        return (
            ToolResult(call_id, _json.encode({"error": why}).decode()),
            events.WarningEvent(
                message=f"tool call {call_id!r} ({entry.name}) answered by the sidecar: {why}",
                code=code,
            ),
            # For the bot that tracks its calls: a result now would be stale.
            events.ToolCallCancelled(call_id=call_id, reason=reason),
        )
