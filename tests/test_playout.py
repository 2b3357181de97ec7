from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.playout import (
    MAX_PENDING_MARK_CHARS,
    MAX_PENDING_MARKS,
    MarkResolved,
    Playout,
    PlayoutStatistics,
    Tick,
)

# 8 kHz keeps the numbers small: 16 bytes per ms, 320 bytes per 20 ms frame.
RATE = 8000
BPMS = RATE * 2 // 1000
FRAME = 20 * BPMS


def ms(n: int, fill: int = 1) -> bytes:
    return bytes([fill]) * (n * BPMS)


def make(jitter_ms: int = 40, max_ms: int = 60000, resume_ms: int = 500) -> Playout:
    return Playout(rate=RATE, frame_ms=20, max_ms=max_ms, jitter_ms=jitter_ms, resume_ms=resume_ms)


def frames(ticks: list[Tick]) -> list[bytes | None]:
    return [t.frame for t in ticks]


def run(p: Playout, n: int) -> list[Tick]:
    return [p.tick() for _ in range(n)]


# --- construction -----------------------------------------------------------------------------


def test_frame_bytes_defaults() -> None:
    assert Playout().frame_bytes == 48000 * 20 // 1000 * 2
    assert make().frame_bytes == FRAME


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rate": 0}, "rate"),
        ({"frame_ms": 0}, "frame_ms"),
        ({"rate": 44100, "frame_ms": 1}, "frame_ms"),
        ({"max_ms": 10}, "max_ms"),
        ({"jitter_ms": -1}, "jitter_ms"),
    ],
)
def test_invalid_config(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Playout(**kwargs)


def test_odd_push_rejected() -> None:
    p = make()
    with pytest.raises(ValueError, match="even"):
        p.push(b"\x00\x00\x00")
    assert p.statistics().bytes_in == 0


def test_idle_tick_returns_nothing() -> None:
    p = make()
    assert p.tick() == Tick(None, (), False)
    assert p.statistics() == PlayoutStatistics(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0)


# --- jitter start -----------------------------------------------------------------------------


def test_jitter_holds_until_enough_buffered() -> None:
    p = make(jitter_ms=40)
    p.push(ms(20))
    assert p.tick().frame is None  # 20 ms < 40 ms
    p.push(ms(20))
    t = p.tick()
    assert t.frame is not None and len(t.frame) == FRAME
    assert p.tick().frame is not None
    assert p.buffered_ms == 0


def test_jitter_starts_on_same_tick_when_enough_arrives_at_once() -> None:
    p = make(jitter_ms=40)
    p.push(ms(40))
    assert frames(run(p, 2)) == [ms(20), ms(20)]


def test_jitter_starts_after_waiting_jitter_ticks() -> None:
    # A 20 ms utterance with no mark is held at most jitter_ms (two 20 ms ticks), then plays.
    p = make(jitter_ms=40)
    p.push(ms(20))
    assert frames(run(p, 3)) == [None, None, ms(20)]
    assert p.statistics().underruns == 0


def test_jitter_rounds_wait_up_to_whole_ticks() -> None:
    p = make(jitter_ms=30)  # 1.5 ticks -> held for 2
    p.push(ms(20))
    assert frames(run(p, 3)) == [None, None, ms(20)]


def test_jitter_zero_starts_immediately() -> None:
    p = make(jitter_ms=0)
    p.push(ms(20))
    assert p.tick().frame == ms(20)


def test_mark_starts_playout_immediately() -> None:
    p = make(jitter_ms=40)
    p.push(ms(20))
    assert p.mark("end") == ()
    t = p.tick()
    assert t.frame == ms(20)
    assert t.marks == (MarkResolved("end", True),)


def test_jitter_refills_after_underrun() -> None:
    p = make(jitter_ms=40)
    p.push(ms(40))
    run(p, 2)
    assert p.tick().underrun
    p.push(ms(20))
    assert p.tick().frame is None  # idle again: waits for the jitter buffer
    p.push(ms(20))
    assert p.tick().frame == ms(20)


# --- fixed frames and tail padding ------------------------------------------------------------


def test_tail_padded_when_mark_follows() -> None:
    p = make(jitter_ms=0)
    p.push(ms(30))
    p.mark("m")
    t1, t2 = p.tick(), p.tick()
    assert t1.frame == ms(20) and t1.marks == ()
    assert t2.frame == ms(10) + bytes(10 * BPMS)
    assert t2.marks == (MarkResolved("m", True),)
    s = p.statistics()
    assert s.pad_bytes == 10 * BPMS
    assert s.frames_out == 2 and s.bytes_out == 2 * FRAME
    assert s.underruns == 0


def test_tail_padded_after_one_tick_grace() -> None:
    p = make(jitter_ms=0)
    p.push(ms(30))
    t = run(p, 4)
    assert frames(t) == [ms(20), None, ms(10) + bytes(10 * BPMS), None]
    assert not any(x.underrun for x in t)  # grace tick and post-tail tick are not underruns
    assert p.statistics().pad_bytes == 10 * BPMS


def test_partial_held_by_jitter_counts_as_having_waited() -> None:
    # The lone 10 ms waited through the jitter hold, so it goes out as a tail once started.
    p = make(jitter_ms=40)
    p.push(ms(10))
    assert frames(run(p, 3)) == [None, None, ms(10) + bytes(10 * BPMS)]


def test_grace_resets_when_audio_arrives() -> None:
    p = make(jitter_ms=0)
    p.push(ms(30))
    assert p.tick().frame == ms(20)
    assert p.tick().frame is None  # grace: 10 ms is short
    p.push(ms(10, fill=2))
    assert p.tick().frame == ms(10) + ms(10, fill=2)
    assert p.statistics().pad_bytes == 0


def test_no_padding_while_server_keeps_up_with_30ms_pieces() -> None:
    # Real-time schedule in ms: the server sends 30 ms every 30 ms, we tick every 20 ms.
    p = make(jitter_ms=0)
    out: list[Tick] = []
    for t in range(0, 3000, 10):
        if t % 30 == 0:
            p.push(ms(30))
        if t % 20 == 0:
            out.append(p.tick())
    s = p.statistics()
    assert s.pad_bytes == 0
    assert s.underruns == 0
    assert all(t.frame is None or len(t.frame) == FRAME for t in out)


def test_no_padding_with_default_jitter_and_30ms_pieces() -> None:
    p = make(jitter_ms=40)
    out: list[Tick] = []
    for t in range(0, 3000, 10):
        if t % 30 == 0:
            p.push(ms(30))
        if t % 20 == 0:
            out.append(p.tick())
    # Once started, a frame every tick: no gaps at all.
    first = next(i for i, t in enumerate(out) if t.frame is not None)
    assert all(t.frame is not None for t in out[first:])
    assert p.statistics().pad_bytes == 0


def test_mark_inside_full_frames_does_not_cut_frames() -> None:
    p = make(jitter_ms=0)
    p.push(ms(30, fill=1))
    p.mark("a")
    p.push(ms(30, fill=2))
    p.mark("b")
    t = run(p, 3)
    assert frames(t) == [ms(20, 1), ms(10, 1) + ms(10, 2), ms(20, 2)]
    assert [x.marks for x in t] == [(), (MarkResolved("a", True),), (MarkResolved("b", True),)]
    assert p.statistics().pad_bytes == 0


# --- underrun ---------------------------------------------------------------------------------


def test_underrun_when_starved_mid_utterance() -> None:
    p = make(jitter_ms=0)
    p.push(ms(40))
    t = run(p, 3)
    assert frames(t) == [ms(20), ms(20), None]
    assert [x.underrun for x in t] == [False, False, True]
    assert p.statistics().underruns == 0  # ran dry: a gap only if speech resumes
    assert p.tick() == Tick(None, (), False)  # idle now: no repeated dry ticks
    p.push(ms(20))
    assert p.statistics().underruns == 1


def test_running_dry_at_the_end_of_a_stream_is_not_an_underrun() -> None:
    p = make(jitter_ms=0, resume_ms=100)
    p.push(ms(40))
    assert run(p, 3)[-1].underrun
    run(p, 6)  # longer than resume_ms: the stream had ended
    p.push(ms(20))
    assert p.statistics().underruns == 0


def test_late_audio_after_exact_frames_continues_without_underrun() -> None:
    p = make(jitter_ms=0)
    p.push(ms(20))
    assert p.tick().frame == ms(20)
    p.push(ms(20, fill=2))
    assert p.tick().frame == ms(20, fill=2)
    assert p.statistics().underruns == 0


def test_no_underrun_after_frame_ending_at_mark() -> None:
    p = make(jitter_ms=0)
    p.push(ms(40))
    p.mark("m")
    t = run(p, 3)
    assert t[1].marks == (MarkResolved("m", True),)
    assert not t[2].underrun
    assert p.statistics().underruns == 0


def test_no_underrun_when_mark_arrives_after_everything_played() -> None:
    p = make(jitter_ms=0)
    p.push(ms(20))
    p.tick()
    assert p.mark("late") == (MarkResolved("late", True),)
    assert not p.tick().underrun


def test_no_underrun_after_clear() -> None:
    p = make(jitter_ms=0)
    p.push(ms(100))
    p.tick()
    p.clear()
    assert p.tick() == Tick(None, (), False)
    assert p.statistics().underruns == 0


# --- cap --------------------------------------------------------------------------------------


def test_cap_drops_newest() -> None:
    p = make(max_ms=100)
    assert p.push(ms(60, fill=1)) == 60 * BPMS
    assert p.push(ms(60, fill=2)) == 40 * BPMS
    assert p.push(ms(10, fill=3)) == 0
    s = p.statistics()
    assert s.bytes_dropped_overflow == 30 * BPMS
    assert s.bytes_in == 100 * BPMS
    assert s.depth_ms == 100.0 and s.max_depth_ms == 100.0
    out = b"".join(f for f in frames(run(p, 5)) if f is not None)
    assert out == ms(60, fill=1) + ms(40, fill=2)


def test_cap_frees_room_as_frames_play() -> None:
    p = make(max_ms=40, jitter_ms=0)
    p.push(ms(40))
    p.tick()
    assert p.push(ms(40)) == 20 * BPMS
    assert p.buffered_ms == 40.0


# --- marks ------------------------------------------------------------------------------------


def test_mark_on_empty_buffer_resolves_immediately() -> None:
    p = make()
    assert p.mark("x") == (MarkResolved("x", True),)
    assert p.statistics().marks_played == 1


def test_mark_waits_for_frame_with_last_byte() -> None:
    p = make(jitter_ms=0)
    p.push(ms(50))
    p.mark("m")
    p.push(ms(50))
    t = run(p, 3)
    assert [x.marks for x in t] == [(), (), (MarkResolved("m", True),)]


def test_marks_resolve_in_order_including_same_position() -> None:
    p = make(jitter_ms=0)
    p.push(ms(20))
    p.mark("a")
    p.mark("b")
    p.push(ms(20))
    p.mark("c")
    t = run(p, 2)
    assert t[0].marks == (MarkResolved("a", True), MarkResolved("b", True))
    assert t[1].marks == (MarkResolved("c", True),)


def test_a_mark_ahead_waits_for_its_audio_without_padding_a_tail() -> None:
    # 30 ms here and 5 ms still in the resampler: the 10 ms left after the
    # first frame is no tail, the mark's audio is not all here yet.
    p = make(jitter_ms=0)
    p.push(ms(30))
    assert p.mark("m", ahead=5 * RATE // 1000) == ()
    awaiting = [p.awaiting]
    first = p.tick()
    assert first.frame is not None and first.marks == ()
    assert p.tick().frame is None  # a short remainder: the grace, no silence spliced in
    p.push(ms(5, fill=2))
    awaiting.append(p.awaiting)
    assert awaiting == [True, False]
    last = p.tick()
    assert last.frame == ms(10) + ms(5, fill=2) + bytes(5 * BPMS)
    assert last.marks == (MarkResolved("m", True),)


def test_a_mark_ahead_on_an_empty_buffer_is_not_answered_before_its_audio() -> None:
    p = make(jitter_ms=0)
    assert p.mark("m", ahead=8) == ()
    assert p.tick() == Tick(None, (), False)
    p.push(ms(1))
    assert p.tick().marks == (MarkResolved("m", True),)


def test_a_mark_whose_audio_the_cap_refused_ends_with_the_accepted_audio() -> None:
    p = make(jitter_ms=0, max_ms=40)
    p.push(ms(30))
    p.mark("m", ahead=20 * RATE // 1000)
    p.push(ms(20))  # only 10 ms of it fit
    assert not p.awaiting
    assert [t.marks for t in run(p, 2)] == [(), (MarkResolved("m", True),)]


def test_a_mark_whose_audio_the_cap_refused_entirely_is_answered_with_what_was_accepted() -> None:
    p = make(jitter_ms=0, max_ms=40)
    p.push(ms(40))
    p.mark("m", ahead=20 * RATE // 1000)
    assert p.push(ms(20)) == 0  # none of it fit
    assert [t.marks for t in run(p, 2)] == [(), (MarkResolved("m", True),)]


def test_a_mark_never_overtakes_one_still_awaiting_its_audio() -> None:
    p = make(jitter_ms=0)
    p.mark("first", ahead=8)
    assert p.mark("second") == ()  # nothing buffered, but "first" is still owed audio
    p.push(ms(1))
    assert p.tick().marks == (MarkResolved("first", True), MarkResolved("second", True))


def test_a_negative_ahead_is_refused() -> None:
    with pytest.raises(ValueError, match="ahead"):
        make().mark("m", ahead=-1)


def test_pending_marks_are_capped_in_number_refused_and_counted() -> None:
    p = make()
    p.push(ms(20))
    for n in range(MAX_PENDING_MARKS):
        assert p.mark(f"m{n}") == ()
    assert p.mark("one too many") == (MarkResolved("one too many", False, refused=True),)
    assert p.statistics().marks_refused == 1
    # Room again once marks are answered: the first frame answers them all.
    assert len(run(p, 1)[0].marks) == MAX_PENDING_MARKS
    p.push(ms(20))
    assert p.mark("fits") == ()


def test_pending_marks_are_capped_by_their_names_length_too() -> None:
    p = make()
    p.push(ms(20))
    half = "x" * (MAX_PENDING_MARK_CHARS // 2)
    assert p.mark(half) == () and p.mark(half) == ()
    assert p.mark("y") == (MarkResolved("y", False, refused=True),)
    assert [m.name for m in p.clear()] == [half, half]
    # A clear frees their room.
    p.push(ms(20))
    assert p.mark(half + half) == ()
    assert p.statistics().marks_refused == 1


def test_clear_resolves_pending_marks_unplayed_in_order() -> None:
    p = make(jitter_ms=0)
    p.push(ms(50))
    p.mark("a")
    p.push(ms(50))
    p.mark("b")
    p.tick()
    assert p.clear() == (MarkResolved("a", False), MarkResolved("b", False))
    s = p.statistics()
    assert s.bytes_cleared == 80 * BPMS
    assert s.marks_cleared == 2 and s.marks_played == 0
    assert s.depth_ms == 0.0
    assert p.mark("after") == (MarkResolved("after", True),)
    assert p.clear() == ()


def test_clear_then_new_audio_goes_through_jitter_again() -> None:
    p = make(jitter_ms=40)
    p.push(ms(100, fill=1))
    p.tick()
    p.clear()
    p.push(ms(20, fill=2))
    assert p.tick().frame is None
    p.push(ms(20, fill=2))
    assert p.tick().frame == ms(20, fill=2)


# --- memory -----------------------------------------------------------------------------------


def test_tick_allocates_only_a_frame_from_a_large_buffer() -> None:
    p = Playout(jitter_ms=0)  # 48 kHz, 60 s cap
    assert p.push(bytes(p.frame_bytes * 3000)) == p.frame_bytes * 3000  # one 5.76 MB chunk
    p.tick()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(50):
            p.tick()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 8 * p.frame_bytes


# --- properties -------------------------------------------------------------------------------

_op = st.one_of(
    st.tuples(st.just("push"), st.integers(0, 70)),
    st.tuples(st.just("tick"), st.just(0)),
    st.tuples(st.just("mark"), st.just(0)),
    st.tuples(st.just("clear"), st.just(0)),
)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(ops=st.lists(_op, max_size=80), jitter=st.sampled_from([0, 20, 40, 50]))
def test_invariants(ops: list[tuple[str, int]], jitter: int) -> None:
    p = make(jitter_ms=jitter, max_ms=200)
    marks_queued = 0
    resolved: list[MarkResolved] = []
    for op, n in ops:
        if op == "push":
            p.push(ms(n))
        elif op == "tick":
            t = p.tick()
            assert t.frame is None or len(t.frame) == FRAME
            assert not (t.underrun and t.frame is not None)
            resolved.extend(t.marks)
        elif op == "mark":
            resolved.extend(p.mark(f"m{marks_queued}"))
            marks_queued += 1
        else:
            resolved.extend(p.clear())
        s = p.statistics()
        depth = round(s.depth_ms * BPMS)
        assert s.bytes_in + s.pad_bytes == s.bytes_out + s.bytes_cleared + depth
        assert s.max_depth_ms <= 200
    # Drain: with no new audio, everything goes out and every mark is answered, in order.
    for _ in range(20):
        resolved.extend(p.tick().marks)
    assert [m.name for m in resolved] == [f"m{i}" for i in range(marks_queued)]
    s = p.statistics()
    assert s.depth_ms == 0
    assert s.marks_played + s.marks_cleared == marks_queued


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    pieces=st.lists(st.integers(1, 70), min_size=1, max_size=30),
    schedule=st.lists(st.integers(0, 3), min_size=1, max_size=30),
    jitter=st.sampled_from([0, 20, 40]),
)
def test_audio_comes_out_intact_and_in_order(
    pieces: list[int], schedule: list[int], jitter: int
) -> None:
    p = make(jitter_ms=jitter)
    sent = bytearray()
    got = bytearray()
    counter = 0

    def tick() -> None:
        before = p.statistics().pad_bytes
        f = p.tick().frame
        if f is not None:
            pad = p.statistics().pad_bytes - before
            got.extend(f[: len(f) - pad])
            assert f[len(f) - pad :] == bytes(pad)  # padding only at the tail, and silent

    for i, n in enumerate(pieces):
        data = bytes((counter + k) % 251 + 1 for k in range(n * BPMS))
        counter += n * BPMS
        p.push(data)
        sent.extend(data)
        for _ in range(schedule[i % len(schedule)]):
            tick()
    for _ in range(len(sent) // FRAME + 10):
        tick()
    assert bytes(got) == bytes(sent)
