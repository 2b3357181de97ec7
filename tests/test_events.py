"""The event log's bounds: a parent that stopped reading stdout costs at most
EVENT_LINES lines and EVENT_BYTES bytes, the rest dropped oldest first, counted."""

from __future__ import annotations

import io
import json
import os
import tracemalloc

import trio
import trio.lowlevel

from sidecar import events

MIB = 1024 * 1024


async def test_a_parent_that_stopped_reading_holds_at_most_the_byte_bound() -> None:
    """400 transcripts of 1 MB held 437 MiB (812 MiB at peak, from joining the
    batch into one string) when only the line count was bounded."""
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "wb")
    log = events.EventLog(stream)
    text = "x" * MIB
    try:
        tracemalloc.start()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.serve)
            for n in range(60):
                log.emit(events.Transcript(role="assistant", text=text, item_id=str(n)))
                # The worker takes a batch, and blocks on the full pipe.
                await trio.lowlevel.checkpoint()
            _, peak = tracemalloc.get_traced_memory()
            # The lines (8 MiB), the batch being written, one line in the making: never twice.
            assert peak < 16 * MIB, f"{peak / MIB:.0f} MiB"
            held = log.held_bytes
            nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
        os.close(read_end)  # the abandoned writer's write fails, and it ends
    assert held <= events.EVENT_BYTES
    assert log.dropped >= 60 - events.EVENT_BYTES // MIB


async def test_small_events_are_bounded_in_lines_and_arrive_in_order() -> None:
    out = io.BytesIO()
    log = events.EventLog(out, limit=10)
    for n in range(25):
        log.emit(events.WarningEvent(message=str(n), code="config"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.serve)
        await log.drain()
        nursery.cancel_scope.cancel()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["message"] for e in lines] == [str(n) for n in range(15, 25)]
    assert log.dropped == 15
