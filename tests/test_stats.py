"""The stats event, built from the parts' statistics: pure and synchronous."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from sidecar import events
from sidecar.downlink import DownlinkStatistics
from sidecar.gate import GateStatistics
from sidecar.link import LinkStatistics
from sidecar.outbox import OutboxStatistics
from sidecar.playout import PlayoutStatistics
from sidecar.stats import stats_event
from sidecar.uplink import StreamCounters, UplinkStatistics
from sidecar.voice import Voice, VoiceStatistics

SCHEMA = Path(__file__).resolve().parent.parent / "proto" / "schema" / "events.schema.json"


def playout(**counts: float) -> PlayoutStatistics:
    fields: dict[str, Any] = dict.fromkeys(PlayoutStatistics.__slots__, 0)
    return PlayoutStatistics(**{**fields, **counts})


def voice(samples_received: int = 0, **counts: float) -> VoiceStatistics:
    return VoiceStatistics(playout(**counts), samples_received, 0)


def outbox(
    dropped_samples: dict[str, int] | None = None,
    dropped_messages: dict[str, int] | None = None,
    dropped_by_stream: dict[str, int] | None = None,
    depth_ms: float = 0.0,
) -> OutboxStatistics:
    return OutboxStatistics(
        depth_ms=depth_ms,
        audio_messages=0,
        control_messages=0,
        dropped_samples=dropped_samples or {},
        dropped_messages=dropped_messages or {},
        dropped_by_stream=dropped_by_stream or {},
    )


def idle(**overrides: Any) -> events.Stats:
    """The stats of a sidecar that has done nothing yet, with some parts replaced."""
    parts: dict[str, Any] = {
        "links": [LinkStatistics()],
        "uplink": UplinkStatistics(),
        "downlink": DownlinkStatistics(),
        "voice": voice(),
        "outboxes": [outbox()],
        "gate": None,
        "events_dropped": 0,
    }
    return stats_event(**{**parts, **overrides})


def line(event: events.Event) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(msgspec.json.encode(event))
    return result


def test_an_idle_sidecar_reports_every_field_as_zero() -> None:
    stats = line(idle())
    schema = json.loads(SCHEMA.read_text())["$defs"]["Stats"]
    # A reader in another language sees every field, zero or not.
    assert set(stats) == set(schema["properties"]) == set(schema["required"])
    assert stats["dropped"] == {} and stats["participants"] == {}
    assert stats["connected"] is False
    numbers = {k: v for k, v in stats.items() if k not in ("event", "connected")}
    assert all(v == 0 for k, v in numbers.items() if not isinstance(v, dict)), numbers


def test_bot_output_is_counted_at_its_own_rate_and_at_the_output_rate() -> None:
    # 8 kHz from the server, 48 kHz to the bot: the numbers differ sixfold.
    sent = 8000 * 3
    out = Voice(out_rate=48000, max_ms=1000)
    pcm = (np.sin(np.arange(sent) * 0.1) * 8000).astype("<i2").tobytes()
    for i in range(0, len(pcm), 1600):
        out.audio(pcm[i : i + 1600], 8000)
    stats = idle(voice=out.statistics())
    assert stats.bot_output_samples == sent
    # The cap (1 s) refused most of it, and the refused part counts as received.
    refused = stats.dropped["downlink_overflow"]
    assert refused > 0
    assert stats.bot_output_resampled == 48000 + refused
    # Within what the resampler still holds back (a few ms), six to one.
    assert 0 <= 6 * sent - stats.bot_output_resampled < 48000 * 0.01


def test_drops_are_named_by_direction_and_reason_and_zeros_left_out() -> None:
    stats = idle(
        outboxes=[
            outbox({"disconnected": 10, "backpressure": 0}, {"control_overflow": 2}, {"mixed": 10}),
            outbox({"disconnected": 5, "stopped": 1}, {"control_overflow": 1}, {"p1": 6}),
        ],
        voice=voice(bytes_dropped_overflow=8, bytes_cleared=6),
        downlink=DownlinkStatistics(dropped_samples=Counter(no_bot=7, bot_not_reading=0)),
        uplink=UplinkStatistics(
            streams={"mixed": StreamCounters(3, 300, 2), "p1": StreamCounters(1, 100, 1)},
            refused_samples=Counter(busy=960, too_many_streams=480),
        ),
    )
    assert stats.dropped == {
        "uplink_disconnected": 15,
        "uplink_stopped": 1,
        "downlink_overflow": 4,
        "downlink_cleared": 3,
        "downlink_no_bot": 7,
        "audio_in_refused": 1440,
    }
    assert stats.control_dropped == 3
    assert stats.participants == {
        "mixed": {"frames": 3, "samples": 300, "chunks": 2, "dropped": 10},
        "p1": {"frames": 1, "samples": 100, "chunks": 1, "dropped": 6},
    }


def test_the_main_link_says_connected_and_all_links_add_up() -> None:
    main = LinkStatistics(
        connected=True, connects=3, messages_out=10, bytes_out=100, samples_out=1000, messages_in=3
    )
    participants = LinkStatistics(
        connected=False, connects=9, messages_out=1, bytes_out=2, samples_out=3, messages_in=1
    )
    participants.unconfirmed_samples = 4
    stats = idle(
        links=[main, participants], outboxes=[outbox(depth_ms=20.4), outbox(depth_ms=40.3)]
    )
    assert (stats.connected, stats.reconnects) == (True, 2)
    assert (stats.messages_out, stats.bytes_out, stats.samples_out) == (11, 102, 1003)
    assert stats.unconfirmed_samples == 4
    assert stats.replay_depth_ms == 61
    # A websocket message, whatever the dialect decodes it into, counts once.
    assert stats.messages_in == 4


def test_pauses_and_the_remaining_counters() -> None:
    stats = idle(
        gate=GateStatistics(pauses=2, paused_s=1.2346),
        events_dropped=5,
        downlink=DownlinkStatistics(
            invalid_messages=1,
            error_replies_suppressed=1,
            frames_written=6,
            samples_written=5760,
            clock_restarts=1,
        ),
        voice=voice(underruns=2, depth_ms=59.6),
        uplink=UplinkStatistics(frames_in=7, bytes_in=14, samples_in=7, invalid_frames=1, dtmf=3),
    )
    assert (stats.pauses, stats.paused_ms) == (2, 1235)
    assert stats.events_dropped == 5
    assert (stats.invalid_messages, stats.error_replies_suppressed) == (1, 1)
    assert (stats.frames_out, stats.samples_played, stats.clock_restarts) == (6, 5760, 1)
    assert (stats.underruns, stats.playout_depth_ms) == (2, 60)
    assert (stats.frames_in, stats.bytes_in, stats.samples_in, stats.invalid_frames) == (
        7,
        14,
        7,
        1,
    )
    assert stats.dtmf_in == 3


def test_control_messages_dropped_for_either_limit_are_control_dropped() -> None:
    stats = idle(outboxes=[outbox(dropped_messages={"control_overflow": 2, "control_bytes": 3})])
    assert stats.control_dropped == 5
