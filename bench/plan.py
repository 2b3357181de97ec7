"""How long each part of the bench runs: the full run and `--quick`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Plan:
    quick: bool
    floor_seconds: float
    startup_runs: int
    idle_s: float
    warmup_s: float
    uplink_s: float
    duplex_s: float
    soak_s: float
    """The default configuration's duplex phase doubles as the memory soak."""
    other_qualities_s: float
    """Uplink and duplex phases for the non-default qualities."""
    flat_audio_s: float
    rss_interval_s: float
    scale_ns: tuple[int, ...]
    scale_s: float
    participants_n: int
    participants_s: float
    """One sidecar: `participants_n` participant streams plus the mixed one, this long."""
    count_runs: int = 2
    """Processes counted (bench.counted), each through uplink and duplex phases."""
    compare_s: float = 10.0
    """Each phase of the chunk sweep (uplink) and of before/now and peers (uplink, duplex)."""
    peer_rounds: int = 3
    """Rounds of the peers section: each contender once a round, alternated."""
    stats_interval_s: float = 5.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def with_soak(self, seconds: float) -> Plan:
        return replace(self, soak_s=seconds)


FULL = Plan(
    quick=False,
    floor_seconds=10.0,
    startup_runs=5,
    idle_s=4.0,
    warmup_s=1.0,
    uplink_s=10.0,
    duplex_s=10.0,
    soak_s=600.0,
    other_qualities_s=8.0,
    flat_audio_s=30.0,
    rss_interval_s=5.0,
    scale_ns=(10, 20, 40),
    scale_s=10.0,
    participants_n=16,
    participants_s=20.0,
)

QUICK = Plan(
    quick=True,
    floor_seconds=4.0,
    startup_runs=3,
    idle_s=1.5,
    warmup_s=0.5,
    uplink_s=4.0,
    duplex_s=4.0,
    soak_s=8.0,
    other_qualities_s=3.0,
    flat_audio_s=8.0,
    rss_interval_s=1.0,
    scale_ns=(10,),
    scale_s=5.0,
    participants_n=16,
    participants_s=5.0,
    count_runs=1,
    compare_s=3.0,
    peer_rounds=1,
)
