"""The bench keeps the newest few dated results of each kind and nothing else goes."""

from __future__ import annotations

from pathlib import Path

from bench.retention import prune

NAMES = (
    "20260101T000000Z.json",
    "20260102T000000Z.json",
    "20260103T000000Z.json",
    "20260101T000000Z-quick.json",
    "20260102T000000Z-quick.json",
    "20260104T000000Z-quick-partial.json",
    "latest.json",
    "profile-py-spy.txt",
)


def test_only_older_results_of_the_same_kind_go(tmp_path: Path) -> None:
    for name in NAMES:
        (tmp_path / name).write_text("{}")
    removed = prune(tmp_path, "20260103T000000Z.json", keep=2)
    assert [p.name for p in removed] == ["20260101T000000Z.json"]
    assert prune(tmp_path, "20260102T000000Z-quick.json", keep=2) == []
    removed = prune(tmp_path, "20260104T000000Z-quick-partial.json", keep=1)
    assert removed == []
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(set(NAMES) - {"20260101T000000Z.json"})
