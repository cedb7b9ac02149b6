"""The saved plan and the control plane's transactions on it: sections, camera rows, routes, compare-and-set.

The saved plan is one JSON document with one section per writer: the ingress writes `cameras`
(what each camera runs), the Planner writes `planner` (GPU shares, which actor serves each role,
the last round's decision). Each writer replaces only its own section in one call, so two writers
never erase each other. The `cameras` section is stored as one row per camera (`camera_plans`):
a camera's change writes its row and a new, small plan version (the other sections, whose size
grows with executors, not cameras); before, each change stored a new copy of the whole plan and up
to 1,000 copies were kept. Plan versions keep the other sections' history; a version's cameras are
the current rows. These are methods of `StateStore` (this mixin keeps store.py to the storage
itself); the store's lock is re-entrant and its actor's calls are serialised, so each method is one
step for every caller, in-process or through Ray.
"""
from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stemcell.control.contracts import CameraSpec, Routes
from stemcell.state.control import route_changes
from stemcell.state.records import PlanRecord, canonical_json
from stemcell.state.schema import PLAN_COLUMNS, plan_digest, plan_from_row

if TYPE_CHECKING:
    from stemcell.state.store import StateStore

CAMERAS = "cameras"  # section written by the ingress (app.service)
PLANNER = "planner"  # section written by the Planner actor


def _branchpoints(entry_json: str | None) -> list[tuple[str, int]]:
    """(app, branchpoint) pairs of one stored camera plan entry."""
    apps = json.loads(entry_json).get("apps", {}) if entry_json else {}
    return [(app, int(a["branchpoint"])) for app, a in apps.items() if isinstance(a, Mapping) and "branchpoint" in a]


def _routes_of(rest: Mapping[str, Any]) -> dict[str, str]:
    planner = rest.get(PLANNER)
    actors = planner.get("routes", {}) if isinstance(planner, Mapping) else {}
    return {str(k): str(v) for k, v in actors.items()} if isinstance(actors, Mapping) else {}


class PlanSections:
    """Plan versions, sections and camera transactions; a base of `StateStore`."""

    # ------------------------------------------------------------------ plan rows
    @staticmethod
    def _latest_row(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
        return conn.execute(f"SELECT {PLAN_COLUMNS} FROM plans ORDER BY version DESC LIMIT 1").fetchone()

    @staticmethod
    def _camera_rows(conn: sqlite3.Connection) -> dict[str, Any]:
        return {cam: json.loads(entry) for cam, entry in
                conn.execute("SELECT camera_id, plan_json FROM camera_plans ORDER BY camera_id")}

    def _new_version(self: StateStore, conn: sqlite3.Connection, rest: Mapping[str, Any], has_cameras: bool,
                     *, force: bool = False) -> int:
        """Insert the next plan version holding `rest` (the non-camera sections) unless the latest holds
        the same and `force` is off; prune history past `max_plans`; publish changed routes."""
        rest_json = canonical_json("plan", rest)
        digest = plan_digest(rest_json, has_cameras)
        latest = self._latest_row(conn)
        if latest is not None and latest[2] == digest and not force:
            return int(latest[0])
        version = 1 if latest is None else int(latest[0]) + 1
        conn.execute("INSERT INTO plans (version, created_at, sha256, plan_json, has_cameras) VALUES (?, ?, ?, ?, ?)",
                     (version, self._now(), digest, rest_json, int(has_cameras)))
        conn.execute("DELETE FROM plans WHERE version <= ?", (version - self._max_plans,))
        before = {} if latest is None else _routes_of(json.loads(latest[3]))
        self._feed.stage(route_changes(before, _routes_of(rest)))
        return version

    def _write_camera_plans(self: StateStore, conn: sqlite3.Connection, entries: Mapping[str, Any],
                            *, replace: bool) -> bool:
        """Upsert the rows that differ (and with `replace`, drop the others); True if any row changed."""
        given = {cam: canonical_json("camera plan", entry) for cam, entry in entries.items()}
        if replace:
            stored = dict(conn.execute("SELECT camera_id, plan_json FROM camera_plans").fetchall())
        else:
            stored = {}
            for cam in given:
                row = conn.execute("SELECT plan_json FROM camera_plans WHERE camera_id = ?", (cam,)).fetchone()
                if row is not None:
                    stored[cam] = row[0]
        changed = [(cam, entry) for cam, entry in given.items() if stored.get(cam) != entry]
        gone = [(cam,) for cam in stored if cam not in given] if replace else []
        conn.executemany("INSERT OR REPLACE INTO camera_plans (camera_id, plan_json) VALUES (?, ?)", changed)
        conn.executemany("DELETE FROM camera_plans WHERE camera_id = ?", gone)
        for cam, entry in changed:
            self._count_branchpoints(stored.get(cam), entry)
        for (cam,) in gone:
            self._count_branchpoints(stored[cam], None)
        return bool(changed or gone)

    def _count_branchpoints(self: StateStore, old: str | None, new: str | None) -> None:
        """Keep the (app, branchpoint) counts behind `shared_branchpoints` current, in O(one camera)."""
        if self._shared is None:
            return
        for pair in _branchpoints(old):
            self._shared[pair] -= 1
        for pair in _branchpoints(new):
            self._shared[pair] += 1

    # ------------------------------------------------------------------ whole plans
    def save_plan(self: StateStore, plan: Mapping[str, Any]) -> int:
        """Store ``plan`` as the next version and return that version.

        If ``plan`` equals the latest saved plan, its version is returned and nothing is written:
        a retried call (or a planner round that changed nothing) does not create a new version.
        History beyond ``max_plans`` versions is dropped in the same transaction.
        """
        canonical_json("plan", plan)  # refuse what is not JSON before writing anything
        rest = {k: v for k, v in plan.items() if k != CAMERAS}
        cameras = plan.get(CAMERAS)
        with self._transaction() as conn:
            changed = self._write_camera_plans(conn, cameras if isinstance(cameras, Mapping) else {}, replace=True)
            return self._new_version(conn, rest, isinstance(cameras, Mapping), force=changed)

    def latest_plan(self: StateStore) -> PlanRecord | None:
        with self._lock:
            return self._latest_plan(self._conn)

    def _latest_plan(self: StateStore, conn: sqlite3.Connection) -> PlanRecord | None:
        row = self._latest_row(conn)
        return None if row is None else plan_from_row(row, self._camera_rows(conn) if row[4] else None)

    def get_plan(self: StateStore, version: int) -> PlanRecord | None:
        """A specific version (its cameras as they are now), or None if it never existed or was pruned."""
        with self._lock:
            row = self._conn.execute(f"SELECT {PLAN_COLUMNS} FROM plans WHERE version = ?", (int(version),)).fetchone()
            return None if row is None else plan_from_row(row, self._camera_rows(self._conn) if row[4] else None)

    # ------------------------------------------------------------------ sections
    def plan_section(self: StateStore, section: str) -> dict[str, Any] | None:
        """One section of the latest plan, None when nothing was saved under it."""
        with self._lock:
            row = self._latest_row(self._conn)
            if row is None:
                return None
            if section == CAMERAS:
                return self._camera_rows(self._conn) if row[4] else None
            value = json.loads(row[3]).get(section)
        return dict(value) if isinstance(value, Mapping) else None

    def save_plan_section(self: StateStore, section: str, value: Mapping[str, Any]) -> int:
        """Replace `section` of the latest plan with `value`, keep the others; returns the plan version
        (unchanged when the section already held `value`: a retried call writes nothing)."""
        if section == CAMERAS:
            return self.put_camera_plans(value, replace=True)
        with self._transaction() as conn:
            row = self._latest_row(conn)
            rest = json.loads(row[3]) if row is not None else {}
            return self._new_version(conn, rest | {section: dict(value)}, bool(row is not None and row[4]))

    def put_camera_plans(self: StateStore, entries: Mapping[str, Mapping[str, Any]], *, replace: bool = False) -> int:
        """Set the plan entries of the given cameras (others kept unless `replace`) in one transaction;
        a new plan version only when a row changed. Costs O(given cameras), not O(fleet)."""
        with self._transaction() as conn:
            return self._camera_plans_in(conn, entries, replace=replace)

    def _camera_plans_in(self: StateStore, conn: sqlite3.Connection, entries: Mapping[str, Mapping[str, Any]],
                         *, replace: bool = False) -> int:
        """`put_camera_plans` inside the caller's transaction."""
        changed = self._write_camera_plans(conn, entries, replace=replace)
        row = self._latest_row(conn)
        return self._new_version(conn, json.loads(row[3]) if row is not None else {}, True, force=changed)

    def _drop_camera_plan(self: StateStore, conn: sqlite3.Connection, camera_id: str) -> None:
        """A removed camera leaves the plan (called inside `delete_camera`'s transaction)."""
        old = conn.execute("SELECT plan_json FROM camera_plans WHERE camera_id = ?", (camera_id,)).fetchone()
        if old is not None:
            conn.execute("DELETE FROM camera_plans WHERE camera_id = ?", (camera_id,))
            self._count_branchpoints(old[0], None)
            row = self._latest_row(conn)
            self._new_version(conn, json.loads(row[3]) if row is not None else {}, True, force=True)

    def camera_plan_entries(self: StateStore, camera_ids: list[str]) -> Mapping[str, Any]:
        """The stored plan entries of these cameras (those that have one)."""
        with self._lock:
            out = {}
            for cam in camera_ids:
                row = self._conn.execute("SELECT plan_json FROM camera_plans WHERE camera_id = ?", (cam,)).fetchone()
                if row is not None:
                    out[cam] = json.loads(row[0])
            return out

    def shared_branchpoints(self: StateStore) -> Mapping[str, int]:
        """App -> the branchpoint most camera plans run it at (what a new camera shares by default).

        Counted once from the rows, then kept current by every write of this store, so a registration
        does not read the fleet's plans (another process's writes are not counted: a default only)."""
        with self._lock:
            if self._shared is None:
                self._shared = Counter()
                for (entry,) in self._conn.execute("SELECT plan_json FROM camera_plans"):
                    self._count_branchpoints(None, entry)
            best: dict[str, tuple[int, int]] = {}
            for (app, branchpoint), n in self._shared.items():
                if n > 0 and (app not in best or (-n, branchpoint) < (-best[app][1], best[app][0])):
                    best[app] = (branchpoint, n)
        return {app: bp for app, (bp, _) in sorted(best.items())}

    def put_decision_cameras(self: StateStore, entries: Mapping[str, Mapping[str, Any]]) -> int:
        """Replace the Planner's per-camera decision (one row per camera, only changed rows written):
        kept out of its plan section, whose every version would otherwise copy all cameras. Returns
        how many rows changed."""
        given = {cam: canonical_json("camera decision", entry) for cam, entry in entries.items()}
        with self._transaction() as conn:
            stored = dict(conn.execute("SELECT camera_id, decision_json FROM decision_cameras").fetchall())
            changed = [(cam, entry) for cam, entry in given.items() if stored.get(cam) != entry]
            gone = [(cam,) for cam in stored if cam not in given]
            conn.executemany("INSERT OR REPLACE INTO decision_cameras (camera_id, decision_json) VALUES (?, ?)", changed)
            conn.executemany("DELETE FROM decision_cameras WHERE camera_id = ?", gone)
        return len(changed) + len(gone)

    def decision_cameras(self: StateStore) -> Mapping[str, Any]:
        """The Planner's last per-camera decision (a restarted Planner shows it again)."""
        with self._lock:
            return {cam: json.loads(entry) for cam, entry in
                    self._conn.execute("SELECT camera_id, decision_json FROM decision_cameras ORDER BY camera_id")}

    def routes(self: StateStore) -> Routes:
        """Role (executor slot or retraining worker) -> the actor serving it, as the Planner last
        published in its section (empty: none published; every role is served by its generation 0)."""
        return Routes(_routes_of({PLANNER: self.plan_section(PLANNER) or {}}))

    def location(self: StateStore) -> str:
        """The database file's path on the store's node (start-up checks compare it with the config)."""
        return str(self.path)

    def compare_and_set_camera(self: StateStore, before: CameraSpec, after: CameraSpec, plan_entry: Mapping[str, Any]) -> bool:
        """Store `after` and the camera's plan entry if the camera still runs `before`; the token is kept.

        False means the camera was changed (or removed) meanwhile and nothing was written: an admin's
        concurrent change always wins over a Planner's.
        """
        return self.compare_and_set_cameras([(before, after, plan_entry)])[0]

    def compare_and_set_cameras(self: StateStore, changes: list[tuple[CameraSpec, CameraSpec, Mapping[str, Any]]]) -> list[bool]:
        """`compare_and_set_camera` for a planning round's changes in one transaction (one commit per
        round, not one per camera); one answer per change."""
        done, entries = [], {}
        with self._lock:
            for before, after, plan_entry in changes:
                record = self.get_camera(before.camera_id)
                ok = record is not None and CameraSpec.from_config(record.camera_id, record.config) == before
                if ok:
                    entries[after.camera_id] = (record, after, plan_entry)
                done.append(ok)
            if entries:
                self.put_cameras([(cam, {**rec.config, **after.as_config()}, None)  # keeps e.g. `source`
                                  for cam, (rec, after, _) in entries.items()],
                                 {cam: dict(entry) for cam, (_, _, entry) in entries.items()})
        return done
