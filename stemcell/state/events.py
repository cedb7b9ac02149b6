"""Events and webhooks in the state database (a mixin of `StateStore`, like `sections.PlanSections`).

Tables are created with `IF NOT EXISTS` when the store opens, so a database written before they
existed gains them without a schema-version change (additive: older code never reads them).
Every write is an idempotent upsert, because Ray may retry a call whose answer was lost. Each change
of an event (its start, its end) is also appended to `event_log` under a growing `seq`, so a follower
(the SSE stream) asks "what changed after seq N" and sees the start even when the end came before it
asked (the `events` row then already holds the end). The log keeps the newest `LOG_ROWS` changes; the
`events` table is capped by `prune_events` (rows and age, `events.max_rows` / `events.max_age_s`), which
the event hub calls now and then.
"""
from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

from stemcell.events.tracker import Event
from stemcell.events.webhooks import WebhookSpec

if TYPE_CHECKING:
    from stemcell.state.store import StateStore

EVENT_DDL = (
    "CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, camera_id TEXT NOT NULL, "
    "app TEXT NOT NULL, start_ts REAL NOT NULL, end_ts REAL, peak_score REAL NOT NULL, peak_count INTEGER, snapshot TEXT)",
    "CREATE INDEX IF NOT EXISTS events_by_camera ON events (camera_id, start_ts)",
    "CREATE INDEX IF NOT EXISTS events_by_start ON events (start_ts)",
    "CREATE INDEX IF NOT EXISTS events_by_seq ON events (seq)",
    "CREATE TABLE IF NOT EXISTS event_log (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, camera_id TEXT NOT NULL, "
    "app TEXT NOT NULL, start_ts REAL NOT NULL, end_ts REAL, peak_score REAL NOT NULL, peak_count INTEGER, snapshot TEXT)",
    "CREATE TABLE IF NOT EXISTS webhooks (webhook_id TEXT PRIMARY KEY, url TEXT NOT NULL, secret TEXT NOT NULL, "
    "apps_json TEXT NOT NULL, cameras_json TEXT NOT NULL)",
)
_EVENT_COLUMNS = "event_id, camera_id, app, start_ts, end_ts, peak_score, peak_count, snapshot"
MAX_EVENTS_PER_QUERY = 1000
LOG_ROWS = 100_000  # changes a follower can catch up on after a disconnect


def ensure_event_tables(conn: sqlite3.Connection) -> None:
    with conn:
        for statement in EVENT_DDL:
            conn.execute(statement)


def _event(row: tuple) -> Event:
    return Event(*row)


class EventLog:
    """Append, update and query events; keep the webhook list."""

    def put_event(self: StateStore, event: Event) -> int:
        """Insert or update an event (start, then its end); returns its seq (unchanged on a repeat)."""
        row = (event.camera_id, event.app, event.start_ts, event.end_ts, event.peak_score, event.peak_count, event.snapshot)
        with self._transaction() as conn:
            found = conn.execute(f"SELECT seq, {_EVENT_COLUMNS} FROM events WHERE event_id = ?", (event.event_id,)).fetchone()
            if found is not None and tuple(found[2:]) == row:
                return int(found[0])
            seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM event_log").fetchone()[0])
            for table in ("events", "event_log"):
                conn.execute(f"INSERT OR REPLACE INTO {table} (seq, {_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (seq, event.event_id, *row))
            conn.execute("DELETE FROM event_log WHERE seq <= ?", (seq - LOG_ROWS,))
            return seq

    def prune_events(self: StateStore, max_rows: int, max_age_s: float) -> int:
        """Delete events that started more than `max_age_s` ago, then all but the newest `max_rows`
        (by start); returns how many went. The event log is capped on its own (`LOG_ROWS`)."""
        if max_rows < 1 or max_age_s <= 0:
            raise ValueError(f"event limits must be positive, got {max_rows} rows, {max_age_s} s")
        with self._transaction() as conn:
            removed = conn.execute("DELETE FROM events WHERE start_ts < ?", (self._now() - max_age_s,)).rowcount
            cutoff = conn.execute("SELECT start_ts, seq FROM events ORDER BY start_ts DESC, seq DESC LIMIT 1 OFFSET ?",
                                  (int(max_rows) - 1,)).fetchone()
            if cutoff is not None:
                removed += conn.execute("DELETE FROM events WHERE start_ts < ? OR (start_ts = ? AND seq < ?)",
                                        (cutoff[0], cutoff[0], cutoff[1])).rowcount
        return removed

    def query_events(self: StateStore, camera_id: str | None = None, app: str | None = None, since: float | None = None,
                     until: float | None = None, limit: int = 100) -> list[Event]:
        """Events overlapping [since, until] (an open event lasts until now), newest start first."""
        where, args = ["1 = 1"], []
        for column, value in (("camera_id", camera_id), ("app", app)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("(end_ts IS NULL OR end_ts >= ?)")
            args.append(float(since))
        if until is not None:
            where.append("start_ts <= ?")
            args.append(float(until))
        limit = max(1, min(int(limit), MAX_EVENTS_PER_QUERY))
        with self._lock:
            rows = self._conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} "
                                      "ORDER BY start_ts DESC, seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [_event(r) for r in rows]

    def open_events(self: StateStore) -> list[Event]:
        """Events whose end was not seen yet (what a restarted event hub picks up again)."""
        with self._lock:
            rows = self._conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE end_ts IS NULL "
                                      "ORDER BY start_ts, seq").fetchall()
        return [_event(r) for r in rows]

    def events_after(self: StateStore, seq: int, limit: int = 100) -> list[tuple[int, Event]]:
        """(seq, event as it was then) of the changes after `seq`, oldest first (what a follower has not seen)."""
        with self._lock:
            rows = self._conn.execute(f"SELECT seq, {_EVENT_COLUMNS} FROM event_log WHERE seq > ? ORDER BY seq LIMIT ?",
                                      (int(seq), max(1, min(int(limit), MAX_EVENTS_PER_QUERY)))).fetchall()
        return [(int(r[0]), _event(r[1:])) for r in rows]

    def last_event_seq(self: StateStore) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM event_log").fetchone()[0])

    def put_webhook(self: StateStore, spec: WebhookSpec) -> WebhookSpec:
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO webhooks (webhook_id, url, secret, apps_json, cameras_json) "
                         "VALUES (?, ?, ?, ?, ?)", (spec.webhook_id, spec.url, spec.secret,
                                                    json.dumps(list(spec.apps)), json.dumps(list(spec.cameras))))
        return spec

    def list_webhooks(self: StateStore) -> list[WebhookSpec]:
        with self._lock:
            rows = self._conn.execute("SELECT webhook_id, url, secret, apps_json, cameras_json FROM webhooks "
                                      "ORDER BY webhook_id").fetchall()
        return [WebhookSpec(r[0], r[1], r[2], tuple(json.loads(r[3])), tuple(json.loads(r[4]))) for r in rows]

    def delete_webhook(self: StateStore, webhook_id: str) -> bool:
        with self._transaction() as conn:
            return conn.execute("DELETE FROM webhooks WHERE webhook_id = ?", (webhook_id,)).rowcount > 0
