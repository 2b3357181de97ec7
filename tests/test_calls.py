"""The tool-call registry, synchronously: announce, answer, stale, timeout, cap, session end."""

from __future__ import annotations

import json

import pytest

from sidecar import events
from sidecar.calls import ToolCalls
from sidecar.dialects.base import ToolCallCancelledIn, ToolCallIn, ToolResult


def call(call_id: str, arguments: str = '{"city": "Paris"}', name: str = "weather") -> ToolCallIn:
    return ToolCallIn(call_id, name, arguments)


def kinds(out: list[events.Event | ToolResult]) -> list[str]:
    return ["result" if isinstance(o, ToolResult) else str(o.__struct_config__.tag) for o in out]


def test_a_call_is_announced_with_its_arguments_parsed() -> None:
    calls = ToolCalls()
    (event,) = calls.called(call("c1"), now=0.0)
    assert event == events.ToolCall(
        call_id="c1",
        name="weather",
        arguments={"city": "Paris"},
        arguments_json='{"city": "Paris"}',
    )
    assert "c1" in calls
    assert calls.answer("c1") is True
    assert calls.answer("c1") is False  # answered: a second result is stale
    assert calls.deadline is None


@pytest.mark.parametrize("text", ["{", "", "{'a': 1}", "[" * 3000])
def test_arguments_that_are_not_json_are_null(text: str) -> None:
    (event,) = ToolCalls().called(call("c1", text), now=0.0)
    assert isinstance(event, events.ToolCall)
    assert event.arguments is None
    assert event.arguments_json == text


def test_an_unknown_call_is_stale() -> None:
    assert ToolCalls().answer("nobody") is False


def test_an_unanswered_call_is_answered_by_the_sidecar_at_its_deadline() -> None:
    calls = ToolCalls(timeout_s=30)
    calls.called(call("c1"), now=100.0)
    calls.called(call("c2"), now=110.0)
    assert calls.deadline == 130.0
    assert calls.expire(129.999) == []
    out = calls.expire(130.0)
    assert kinds(out) == ["result", "warning", "tool_call_cancelled"]
    result, warning, cancelled = out
    assert result == ToolResult("c1", '{"error":"no result within 30 s"}')
    assert json.loads(result.output) == {"error": "no result within 30 s"}
    assert isinstance(warning, events.WarningEvent) and warning.code == "tool_timeout"
    assert "'c1'" in warning.message and "weather" in warning.message
    assert cancelled == events.ToolCallCancelled(call_id="c1", reason="timeout")
    assert calls.answer("c1") is False
    assert calls.deadline == 140.0
    assert calls.statistics().timed_out == 1
    assert calls.statistics().pending == 1


def test_a_fractional_timeout_is_said_as_given() -> None:
    calls = ToolCalls(timeout_s=2.5)
    calls.called(call("c1"), now=0.0)
    (result, *_) = calls.expire(3.0)
    assert isinstance(result, ToolResult)
    assert result.output == '{"error":"no result within 2.5 s"}'


def test_beyond_the_cap_the_oldest_is_answered() -> None:
    calls = ToolCalls(max_pending=64)
    for n in range(64):
        assert kinds(calls.called(call(f"c{n}"), now=float(n))) == ["tool_call"]
    out = calls.called(call("c64"), now=64.0)
    assert kinds(out) == ["tool_call", "result", "warning", "tool_call_cancelled"]
    assert isinstance(out[1], ToolResult) and out[1].call_id == "c0"
    assert "error" in json.loads(out[1].output)
    assert isinstance(out[2], events.WarningEvent) and out[2].code == "tool_calls_overflow"
    assert "c0" not in calls and "c64" in calls
    assert calls.statistics().pending == 64
    assert calls.statistics().overflowed == 1
    assert calls.deadline == 1.0 + calls.timeout_s


def test_the_pending_calls_are_bounded_in_bytes_too() -> None:
    calls = ToolCalls(max_pending=64, max_bytes=100)
    calls.called(call("a" * 40), now=0.0)
    calls.called(call("b" * 40), now=1.0)
    out = calls.called(call("c" * 40), now=2.0)
    assert [o.call_id for o in out if isinstance(o, ToolResult)] == ["a" * 40]
    # One call alone is kept whatever its size: it must be answerable.
    calls = ToolCalls(max_bytes=10)
    calls.called(call("x" * 50), now=0.0)
    assert "x" * 50 in calls


def test_a_cancelled_call_is_gone_and_said_once() -> None:
    calls = ToolCalls()
    calls.called(call("c1"), now=0.0)
    out = calls.cancelled(ToolCallCancelledIn("c1", "cancelled"))
    assert out == [events.ToolCallCancelled(call_id="c1", reason="cancelled")]
    assert calls.cancelled(ToolCallCancelledIn("c1", "cancelled")) == []
    assert calls.answer("c1") is False


def test_the_end_of_a_session_ends_every_pending_call() -> None:
    calls = ToolCalls()
    calls.called(call("c1"), now=0.0)
    calls.called(call("c2"), now=0.0)
    calls.answer("c1")
    out = calls.session_ended()
    assert out == [events.ToolCallCancelled(call_id="c2", reason="session_ended")]
    assert calls.deadline is None
    assert calls.expire(1e9) == []
    assert calls.session_ended() == []


def test_a_repeated_id_restarts_its_call() -> None:
    calls = ToolCalls(timeout_s=10)
    calls.called(call("c1"), now=0.0)
    calls.called(call("c1"), now=5.0)
    assert calls.statistics().pending == 1
    assert calls.expire(10.0) == []
    assert calls.deadline == 15.0


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ToolCalls(timeout_s=0)
    with pytest.raises(ValueError):
        ToolCalls(max_pending=0)
