"""StateStore events and webhooks: idempotent upserts, time-window queries, a change feed by seq."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from stemcell.events import Event, WebhookSpec
from stemcell.state import StateStore


def test_events_upsert_query_and_follow(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as store:
        start = Event("e1", "cam1", "car", 10.0, None, 0.8)
        assert store.put_event(start) == 1 and store.put_event(start) == 1  # a retried call changes nothing
        store.put_event(Event("e2", "cam2", "person", 20.0, 25.0, 0.6))
        seq = store.put_event(Event("e1", "cam1", "car", 10.0, 30.0, 0.95))  # the end
        assert seq == 3
        assert [e.event_id for e in store.query_events()] == ["e2", "e1"]
        assert [e.event_id for e in store.query_events(camera_id="cam1")] == ["e1"]
        assert [e.event_id for e in store.query_events(app="person")] == ["e2"]
        assert [e.event_id for e in store.query_events(since=26.0)] == ["e1"]  # e2 ended before
        assert [e.event_id for e in store.query_events(until=15.0)] == ["e1"]  # e2 started after
        assert store.query_events(camera_id="cam1")[0].end_ts == 30.0
        assert [(s, e.event_id, e.end_ts) for s, e in store.events_after(0)] == [
            (1, "e1", None), (2, "e2", 25.0), (3, "e1", 30.0)]  # e1's start stays in the feed after its end
        assert store.last_event_seq() == 3


def test_webhooks_round_trip_and_tables_appear_in_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    StateStore(path).close()
    with sqlite3.connect(path) as conn:  # a database from before events existed
        conn.execute("DROP TABLE events")
        conn.execute("DROP TABLE webhooks")
        conn.execute("DROP TABLE event_log")
    with StateStore(path) as store:
        spec = WebhookSpec("w1", "http://h/x", "secret" * 3, ("car",), ())
        store.put_webhook(spec)
        assert store.list_webhooks() == [spec]
        assert store.delete_webhook("w1") and not store.delete_webhook("w1")
        assert store.query_events() == []


def test_prune_events_caps_rows_and_age(tmp_path: Path) -> None:
    now = [1000.0]
    with StateStore(tmp_path / "s.db", clock=lambda: now[0]) as store:
        for i, start in enumerate([100.0, 200.0, 300.0, 300.0, 500.0, 600.0]):  # e2 and e3 share a start
            store.put_event(Event(f"e{i}", "cam", "car", start, None, 0.5))
        assert store.prune_events(max_rows=100, max_age_s=850.0) == 1  # e0 started 900 s ago
        assert store.prune_events(max_rows=3, max_age_s=850.0) == 2  # newest three by start (ties: newer seq)
        assert sorted(e.event_id for e in store.query_events()) == ["e3", "e4", "e5"]
        assert store.prune_events(max_rows=3, max_age_s=850.0) == 0
        now[0] = 1200.0
        assert store.prune_events(max_rows=3, max_age_s=850.0) == 1  # e3 (300) is now too old
        assert [e.event_id for e in store.query_events()] == ["e5", "e4"]


def test_open_events_are_those_without_an_end(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as store:
        store.put_event(Event("e1", "cam1", "car", 10.0, None, 0.8))
        store.put_event(Event("e2", "cam2", "person", 5.0, None, 0.6))
        store.put_event(Event("e3", "cam1", "bus", 1.0, 2.0, 0.7))
        assert [e.event_id for e in store.open_events()] == ["e2", "e1"]  # oldest start first
        store.put_event(Event("e1", "cam1", "car", 10.0, 12.0, 0.9))
        assert [e.event_id for e in store.open_events()] == ["e2"]
