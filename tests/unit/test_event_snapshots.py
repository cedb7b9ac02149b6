"""SnapshotStore: the folder stays within its byte and age limits, oldest files first."""
from __future__ import annotations

from pathlib import Path

import pytest

from stemcell.events import SnapshotStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_oldest_snapshots_go_when_the_folder_is_over_its_byte_limit(tmp_path: Path) -> None:
    clock = Clock()
    store = SnapshotStore(tmp_path, max_bytes=2500, max_age_s=3600, clock=clock)
    for i in range(4):
        clock.now += 1
        assert store.save(f"e{i}", b"x" * 1000) == str(tmp_path / f"e{i}.jpg")
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == ["e2.jpg", "e3.jpg"]
    assert store.save("big", b"x" * 3000) is None  # alone over the limit: not kept, nothing else removed
    assert len(list(tmp_path.glob("*.jpg"))) == 2


def test_expired_snapshots_are_removed(tmp_path: Path) -> None:
    clock = Clock()
    store = SnapshotStore(tmp_path, max_bytes=10**6, max_age_s=60, clock=clock)
    store.save("old", b"x")
    clock.now += 61
    store.save("new", b"y")
    assert [p.name for p in tmp_path.glob("*.jpg")] == ["new.jpg"]


def test_event_ids_cannot_escape_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SnapshotStore(tmp_path, 1024, 1).save("../x", b"x")
