"""How many dated result files `python -m bench` keeps (stdlib only, so it is testable
without the bench's own dependencies)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

# Dated results kept per kind (full, quick, partial); older ones live on in git history.
KEEP_RESULTS: Final = 2


def _kind(name: str) -> str:
    """ "20261125T151448Z-quick-partial.json" -> "quick-partial"; a full run's is ""."""
    return name.removesuffix(".json").partition("-")[2]


def prune(results_dir: Path, newest: str, keep: int = KEEP_RESULTS) -> list[Path]:
    """Remove dated results of `newest`'s kind beyond the newest `keep`; returns them."""
    kind = _kind(newest)
    same = sorted(p for p in results_dir.glob("2*.json") if _kind(p.name) == kind)
    stale = same[:-keep] if keep > 0 else same
    for path in stale:
        path.unlink()
    return stale
