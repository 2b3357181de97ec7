"""Outbox: bounded by audio duration, drop-oldest with reasons, control lane first."""

from __future__ import annotations

import pytest

from sidecar.dialects.base import AudioOut, DtmfOut, MarkOut, Outgoing, Say, ToolResult
from sidecar.outbox import Outbox


def audio(n: int, ms: float = 20.0, stream: str = "mixed") -> AudioOut:
    """The n-th 20 ms message of 16 kHz audio (320 samples); its timestamp is n."""
    return AudioOut(bytes(2 * int(ms * 16)), 16000, n, stream=stream)


def control(text: str) -> MarkOut:
    return MarkOut(text, True)


def label(item: Outgoing) -> str:
    if isinstance(item, AudioOut):
        return f"audio {item.timestamp_ms}"
    assert isinstance(item, MarkOut)
    return item.name


def put(box: Outbox, item: AudioOut, accepting: bool) -> None:
    box.accepting = accepting
    box.put_audio(item)


def drain(box: Outbox) -> list[str]:
    out = []
    while (item := box.get()) is not None:
        out.append(label(item))
    return out


def test_connected_queue_absorbs_up_to_live_ms_then_drops_oldest() -> None:
    box = Outbox(replay_ms=100, live_ms=200)
    for n in range(10):
        put(box, audio(n), accepting=True)
    assert box.depth_ms == pytest.approx(200)
    assert box.statistics().dropped_samples == {}
    for n in range(10, 13):
        put(box, audio(n), accepting=True)
    stats = box.statistics()
    assert stats.dropped_samples == {"backpressure": 3 * 320}
    assert stats.dropped_messages == {"backpressure": 3}
    assert stats.dropped_by_stream == {"mixed": 3 * 320}
    # The newest audio stays: a listener wants what was just said.
    assert drain(box) == [f"audio {n}" for n in range(3, 13)]


def test_disconnected_keeps_only_the_newest_replay_ms() -> None:
    box = Outbox(replay_ms=60, live_ms=2000)
    for n in range(5):
        put(box, audio(n), accepting=False)
    stats = box.statistics()
    assert stats.dropped_samples == {"disconnected": 2 * 320}
    assert stats.audio_messages == 3
    assert box.depth_ms == pytest.approx(60)
    assert drain(box) == ["audio 2", "audio 3", "audio 4"]


def test_a_drop_trims_what_was_queued_while_connected() -> None:
    box = Outbox(replay_ms=40, live_ms=1000)
    for n in range(6):
        put(box, audio(n), accepting=True)
    assert not box.statistics().dropped_samples
    box.disconnected()
    assert box.statistics().dropped_samples == {"disconnected": 4 * 320}
    assert drain(box) == ["audio 4", "audio 5"]


def test_zero_replay_keeps_nothing_while_disconnected() -> None:
    box = Outbox(replay_ms=0)
    put(box, audio(0), accepting=False)
    assert not box
    assert box.statistics().dropped_messages == {"disconnected": 1}
    assert box.depth_ms == 0


def test_control_messages_go_ahead_of_audio() -> None:
    box = Outbox(replay_ms=1000)
    put(box, audio(0), accepting=True)
    put(box, audio(1), accepting=True)
    box.put_control(control("mark echo"))
    first = box.get()
    assert first == MarkOut("mark echo", True)
    box.put_control(control("error reply"))
    assert drain(box) == ["error reply", "audio 0", "audio 1"]


def test_without_audio_only_control_comes_out() -> None:
    box = Outbox(replay_ms=1000)
    put(box, audio(0), accepting=True)
    box.put_control(DtmfOut("5"))
    assert box.get(audio=False) == DtmfOut("5")
    assert box.get(audio=False) is None
    assert drain(box) == ["audio 0"]


def test_control_lane_is_bounded_and_counts_its_drops() -> None:
    box = Outbox(replay_ms=1000, max_control=2)
    for n in range(4):
        box.put_control(control(f"c{n}"))
    assert box.statistics().dropped_messages == {"control_overflow": 2}
    assert drain(box) == ["c2", "c3"]


def test_control_lane_is_bounded_in_bytes_too() -> None:
    # 400 notify answers of 1 MB to a server that stopped reading held 490 MiB.
    box = Outbox(replay_ms=1000)
    big = "x" * 300_000
    for n in range(5):
        box.put_control(control(f"{n}{big}"))
    stats = box.statistics()
    assert stats.control_messages == 3
    assert stats.dropped_messages == {"control_bytes": 2}
    assert [name[0] for name in drain(box)] == ["2", "3", "4"]
    # Room again once sent.
    box.put_control(control(big))
    box.put_control(control(big))
    assert box.statistics().dropped_messages == {"control_bytes": 2}


def test_a_control_message_larger_than_the_lane_is_dropped_alone() -> None:
    box = Outbox(replay_ms=1000, max_control_bytes=1000)
    box.put_control(control("kept"))
    box.put_control(control("x" * 2000))
    assert drain(box) == ["kept"]
    assert box.statistics().dropped_messages == {"control_bytes": 1}


def test_control_messages_survive_a_disconnect() -> None:
    box = Outbox(replay_ms=0)
    box.put_control(control("mark echo"))
    box.disconnected()
    assert drain(box) == ["mark echo"]


def test_lost_in_flight_is_counted_per_reason_and_stream() -> None:
    box = Outbox(replay_ms=1000)
    put(box, audio(0, stream="p1"), accepting=True)
    item = box.get()
    assert isinstance(item, AudioOut)
    box.count_lost(item, "in_flight")
    stats = box.statistics()
    assert stats.dropped_samples == {"in_flight": 320}
    assert stats.dropped_by_stream == {"p1": 320}


def test_depth_tracks_queued_audio_and_returns_to_zero() -> None:
    box = Outbox(replay_ms=1000)
    for n in range(800):
        put(box, audio(n, ms=0.125), accepting=True)
    assert box.depth_ms == pytest.approx(100)
    drain(box)
    assert box.depth_ms == 0.0
    assert not box


def test_live_limit_is_never_below_replay() -> None:
    assert Outbox(replay_ms=3000, live_ms=1000).live_ms == 3000


def test_negative_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        Outbox(replay_ms=-1)
    with pytest.raises(ValueError):
        Outbox(replay_ms=0, live_ms=-1)


def test_discard_counts_everything_left() -> None:
    box = Outbox(replay_ms=1000)
    for n in range(3):
        put(box, audio(n), accepting=False)
    box.put_control(control("mark echo"))
    box.discard("stopped")
    assert not box
    assert box.depth_ms == 0
    stats = box.statistics()
    assert stats.dropped_samples == {"stopped": 3 * 320}
    assert stats.dropped_messages == {"stopped": 4}


def test_released_streams_report_their_drops_and_leave_nothing_behind() -> None:
    box = Outbox(replay_ms=40)
    for round_ in range(100):
        who = f"p{round_}"
        for n in range(4):  # two fit in 40 ms of replay, two are dropped
            put(box, audio(n, stream=who), accepting=False)
        assert box.statistics().dropped_by_stream[who] == 2 * 320
        # Still queued when released: dropped later, then forgotten when drained.
        assert box.release(who) == 2 * 320
        box.disconnected()
        item = box.get()
        assert isinstance(item, AudioOut)
        box.count_lost(item, "in_flight")
        drain(box)
        item_after = audio(-1, stream=who)
        box.count_lost(item_after, "in_flight")
    stats = box.statistics()
    assert stats.dropped_by_stream == {}
    assert stats.dropped_samples == {"disconnected": 100 * 2 * 320, "in_flight": 100 * 2 * 320}


def test_a_stream_that_comes_back_counts_again() -> None:
    box = Outbox(replay_ms=20)
    put(box, audio(0, stream="p"), accepting=False)
    put(box, audio(1, stream="p"), accepting=False)
    assert box.release("p") == 320
    put(box, audio(2, stream="p"), accepting=False)
    assert box.statistics().dropped_by_stream == {"p": 2 * 320}
    drain(box)
    assert box.statistics().dropped_by_stream == {"p": 2 * 320}
    assert box.release("p") == 2 * 320
    assert box.statistics().dropped_by_stream == {}


def test_discard_forgets_released_streams() -> None:
    box = Outbox(replay_ms=1000)
    put(box, audio(0, stream="gone"), accepting=False)
    put(box, audio(0, stream="live"), accepting=False)
    box.release("gone")
    box.discard("stopped")
    assert box.statistics().dropped_by_stream == {"live": 320}


def test_a_tool_result_waiting_when_its_session_ends_goes_and_is_named() -> None:
    """The rest of the control lane waits for the next connection, in order."""
    box = Outbox(replay_ms=0, max_control_bytes=4096)
    box.put_control(MarkOut("m1", played=True))
    box.put_control(ToolResult("call_1", "15:04"))
    box.put_control(Say("Hello"))
    box.put_control(ToolResult("call_2", "x" * 1000))
    assert box.disconnected() == ("call_1", "call_2")
    assert box.disconnected() == ()
    stats = box.statistics()
    assert stats.dropped_messages == {"session_ended": 2}
    assert stats.control_messages == 2
    # The lane's byte count followed: what no longer waits frees its room.
    for n in range(3):
        box.put_control(Say("y" * 1000 + str(n)))
    assert box.statistics().dropped_messages == {"session_ended": 2}
    assert box.get() == MarkOut("m1", played=True)
    assert box.get() == Say("Hello")
