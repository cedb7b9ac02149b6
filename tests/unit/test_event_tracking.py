"""EventTracker: starts and ends from `event_active`, peaks kept, snapshots taken once per start."""
from __future__ import annotations

from itertools import count

from stemcell.events import EventTracker


def frame(ts: float, *results: tuple[str, bool, float, int | None]) -> dict:
    return {"frame_ts": ts, "results": [{"app": a, "event_active": on, "score": s, "count": c} for a, on, s, c in results]}


def tracker() -> EventTracker:
    ids = count()
    return EventTracker(new_id=lambda: f"e{next(ids)}")


def test_event_starts_and_ends_with_event_active_and_keeps_peaks() -> None:
    t = tracker()
    seen = t.observe("cam", [frame(1.0, ("car", False, 0.1, None), ("crowd", True, 0.6, 3)),
                             frame(2.0, ("car", True, 0.7, None), ("crowd", True, 0.9, 5))])
    assert [(c.kind, c.event.app, c.event.start_ts) for c in seen] == [("start", "crowd", 1.0), ("start", "car", 2.0)]
    seen = t.observe("cam", [frame(3.0, ("car", True, 0.95, None), ("crowd", True, 0.5, 4)),
                             frame(4.0, ("car", False, 0.2, None), ("crowd", True, 0.5, 2))])
    assert len(seen) == 1 and seen[0].kind == "end"
    car = seen[0].event
    assert (car.event_id, car.start_ts, car.end_ts, car.peak_score, car.peak_count) == ("e1", 2.0, 4.0, 0.95, None)
    (crowd,) = t.open_events()
    assert (crowd.event_id, crowd.peak_score, crowd.peak_count, crowd.end_ts) == ("e0", 0.9, 5, None)


def test_cameras_are_separate_and_close_camera_ends_only_its_events() -> None:
    t = tracker()
    t.observe("a", [frame(1.0, ("car", True, 0.8, None))])
    t.observe("b", [frame(1.5, ("car", True, 0.8, None))])
    assert t.observe("b", [frame(2.0, ("car", True, 0.9, None))]) == []  # still the same event
    ended = t.close_camera("a", 5.0)
    assert [(c.kind, c.event.camera_id, c.event.end_ts) for c in ended] == [("end", "a", 5.0)]
    assert [e.camera_id for e in t.open_events()] == ["b"]


def test_snapshot_is_taken_once_at_start_with_the_starting_frame() -> None:
    calls: list[tuple[str, int]] = []

    def snap(event_id: str, index: int) -> str:
        calls.append((event_id, index))
        return f"/snaps/{event_id}.jpg"

    t = tracker()
    seen = t.observe("cam", [frame(1.0, ("car", False, 0.1, None)), frame(2.0, ("car", True, 0.9, None)),
                             frame(3.0, ("car", True, 0.9, None))], snap)
    assert calls == [("e0", 1)]
    assert seen[0].event.snapshot == "/snaps/e0.jpg"


def test_restored_event_ends_under_its_own_id_and_tracked_ones_win() -> None:
    from stemcell.events.tracker import Event

    t = tracker()
    t.observe("cam", [frame(1.0, ("car", True, 0.7, None))])  # e0, open here
    left_open = [Event("old-car", "cam", "car", 0.5, None, 0.9), Event("old-bus", "cam", "bus", 0.2, None, 0.8),
                 Event("done", "cam", "person", 0.1, 0.3, 0.5)]
    assert t.restore(left_open) == 1  # the car is tracked already; an ended event is not open
    changes = t.observe("cam", [frame(2.0, ("bus", True, 0.95, None)), frame(3.0, ("bus", False, 0.1, None))])
    assert [(c.kind, c.event.event_id, c.event.end_ts, c.event.peak_score) for c in changes] == [
        ("end", "old-bus", 3.0, 0.95)]
    assert [e.event_id for e in t.open_events()] == ["e0"]
