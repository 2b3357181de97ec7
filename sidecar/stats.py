"""The `stats` event from the counters each part keeps: pure, no clock, no I/O.

`service.py` collects the parts' statistics; here they become the event's
fields, so what each field means is decided (and tested) in one place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sidecar import events
from sidecar.pcm import SAMPLE_BYTES

if TYPE_CHECKING:
    # Types only: this module must not pull the trio shells in.
    from sidecar.control import ControlStatistics
    from sidecar.downlink import DownlinkStatistics
    from sidecar.gate import GateStatistics
    from sidecar.link import LinkStatistics
    from sidecar.outbox import OutboxStatistics
    from sidecar.uplink import UplinkStatistics
    from sidecar.voice import VoiceStatistics


def stats_event(
    links: Sequence[LinkStatistics],
    uplink: UplinkStatistics,
    downlink: DownlinkStatistics,
    voice: VoiceStatistics,
    outboxes: Sequence[OutboxStatistics],
    gate: GateStatistics | None,
    events_dropped: int,
    control: ControlStatistics | None = None,
    dialect_commands_dropped: int = 0,
) -> events.Stats:
    """Build one `stats` event.

    `links` and `outboxes` start with the main connection's; a separate
    per-participant connection's follow. `connected` and `reconnects` describe
    the main connection, the traffic counters every connection together.
    `gate` is None when --pause-threshold is off; `control` when the run
    has no control channel (the tool calls' counts are in it all the same).
    """
    if not links:
        raise ValueError("stats need the main link's statistics")
    main = links[0]
    play = voice.playout
    dropped: Counter[str] = Counter()
    by_stream: Counter[str] = Counter()
    control_dropped = 0
    results_unsent = 0
    for box in outboxes:
        for reason, n in box.dropped_samples.items():
            dropped[f"uplink_{reason}"] += n
        by_stream.update(box.dropped_by_stream)
        control_dropped += box.dropped_messages.get("control_overflow", 0)
        control_dropped += box.dropped_messages.get("control_bytes", 0)
        results_unsent += box.dropped_messages.get("session_ended", 0)
    dropped["downlink_overflow"] += play.bytes_dropped_overflow // SAMPLE_BYTES
    dropped["downlink_cleared"] += play.bytes_cleared // SAMPLE_BYTES
    for reason, n in downlink.dropped_samples.items():
        dropped[f"downlink_{reason}"] += n
    # At the bot's own rate, like samples_in: refused before any resampling.
    dropped["audio_in_refused"] += sum(uplink.refused_samples.values())
    # Captured at the rate sent, like the outbox's drops: muted instead of queued.
    dropped["uplink_muted"] += uplink.muted_samples
    by_stream.update(uplink.muted_by_stream)
    participants = {
        key: {
            "frames": c.frames,
            "samples": c.samples,
            "chunks": c.chunks,
            "dropped": by_stream[key],
        }
        for key, c in uplink.streams.items()
    }
    return events.Stats(
        connected=main.connected,
        reconnects=max(0, main.connects - 1),
        frames_in=uplink.frames_in,
        bytes_in=uplink.bytes_in,
        samples_in=uplink.samples_in,
        messages_out=sum(s.messages_out for s in links),
        bytes_out=sum(s.bytes_out for s in links),
        samples_out=sum(s.samples_out for s in links),
        samples_filled=uplink.samples_filled,
        unconfirmed_samples=sum(s.unconfirmed_samples for s in links),
        encode_failures=sum(s.encode_failures for s in links),
        messages_in=sum(s.messages_in for s in links),
        # Audio of a reply already cut counts too: the server sent it, and it
        # is among the drops (downlink_cleared), so the identity holds.
        bot_output_samples=voice.samples_received + downlink.cut_samples,
        # Refused samples count too: accepted from the server, then capped.
        bot_output_resampled=(play.bytes_in + play.bytes_dropped_overflow) // SAMPLE_BYTES
        + downlink.cut_resampled,
        invalid_messages=downlink.invalid_messages,
        invalid_frames=uplink.invalid_frames,
        dtmf_in=uplink.dtmf,
        frames_out=downlink.frames_written,
        samples_played=downlink.samples_written,
        underruns=play.underruns,
        replay_depth_ms=round(sum(box.depth_ms for box in outboxes)),
        playout_depth_ms=round(play.depth_ms),
        # A map: a reason appears once it has counted a sample.
        dropped={k: v for k, v in dropped.items() if v},
        error_replies_suppressed=downlink.error_replies_suppressed,
        events_dropped=events_dropped,
        control_dropped=control_dropped,
        marks_refused=play.marks_refused,
        commands_dropped=dialect_commands_dropped
        + results_unsent
        + sum(s.commands_dropped for s in links),
        segment_starts_dropped=downlink.segment_starts_dropped,
        clock_restarts=downlink.clock_restarts,
        pauses=0 if gate is None else gate.pauses,
        paused_ms=0 if gate is None else round(gate.paused_s * 1000),
        participants=participants,
        muted=uplink.muted,
        commands=0 if control is None else control.commands,
        commands_refused={} if control is None else dict(control.refused),
        tool_calls_pending=0 if control is None else control.calls.pending,
        tool_calls_unanswered=0
        if control is None
        else control.calls.timed_out + control.calls.overflowed,
        control_events_dropped=0 if control is None else control.events_dropped,
    )
