"""Durable state (cameras, apps, plans, model versions) in one SQLite file.

Why SQLite: every Ray actor can die, and ``max_restarts`` only re-runs its constructor, so
whatever must survive lives on disk; one file with WAL journaling gives crash-safe transactions
without running a database server. Why idempotent writes: ``max_task_retries`` re-sends a call
whose reply was lost, so every method here may run twice with the same arguments and must
leave the same state (upserts; ``save_plan`` and ``record_model_version`` recognise a repeat of
their latest row instead of adding another). What replicas need per request (token MACs, routes) is
also pushed to them (`stemcell.state.control`), so no request waits on this store.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from stemcell.control.errors import UnknownCamera
from stemcell.state import tokens
from stemcell.state.control import SLOT, TOKEN, Change, ControlFeed
from stemcell.state.events import EventLog, ensure_event_tables
from stemcell.state.records import (
    AppRecord,
    CameraRecord,
    ModelVersionRecord,
    StateSnapshot,
    canonical_json,
    validate_id,
    validate_path,
    validate_sha256,
    validate_timestamp,
)
from stemcell.state.schema import (
    APP_COLUMNS,
    CAMERA_COLUMNS,
    GLOBAL_SCOPE,
    MODEL_COLUMNS,
    SCHEMA_VERSION,
    app_from_row,
    camera_from_row,
    connect,
    ensure_control_tables,
    ensure_schema,
    model_from_row,
    scope_of,
)
from stemcell.state.replicas import ReplicaState
from stemcell.state.sections import PlanSections

if TYPE_CHECKING:
    from stemcell.control.placement import Placement



class UnknownCameraError(UnknownCamera):
    """A write referred to a camera id that is not registered."""


def default_state_path() -> Path:
    """``~/.stemcell/state.db``: per user, outside the source tree, on the node's own disk."""
    return Path.home() / ".stemcell" / "state.db"


class StateStore(PlanSections, ReplicaState, EventLog):
    """Durable, thread-safe, retry-safe store; one instance per process, any number per file.

    Within a process one connection is shared under a lock; across processes SQLite's file
    locks serialise writers (``BEGIN IMMEDIATE`` plus a busy timeout), so two actors or a CLI
    and an actor may open the same file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_plans: int = 16,
    ) -> None:
        """Open (creating if needed) the database at ``path`` (default ``~/.stemcell/state.db``).

        ``max_plans`` bounds the plan history: the planner saves every window, so without a
        bound the file would grow for as long as the cluster runs (versions hold the sections other
        than the cameras', which are one row each: a few versions are enough to look back).
        """
        if max_plans < 1:
            raise ValueError(f"max_plans must be >= 1, got {max_plans}")
        self.path = Path(path).expanduser() if path is not None else default_state_path()
        self._clock = clock
        self._max_plans = max_plans
        self._lock = threading.RLock()
        self._conn = connect(self.path)
        ensure_schema(self._conn, str(self.path))
        ensure_event_tables(self._conn)
        self._key = ensure_control_tables(self._conn, tokens.new_key())
        self._feed = ControlFeed()
        self._shared: Counter[tuple[str, int]] | None = None  # (app, branchpoint) -> camera plans; built on first use
        self._placement: Placement | None = None  # camera -> executor slot, once the executor count is known

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _now(self) -> float:
        return validate_timestamp("clock reading", self._clock())

    @contextmanager
    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """All-or-nothing unit of work; ``BEGIN IMMEDIATE`` takes the write lock up front so a
        reader-turned-writer cannot deadlock against another process. The feed changes it staged are
        published once it committed."""
        with self._lock:
            self._conn.execute(begin)
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                self._feed.discard()  # replicas never see a change that was rolled back
                if self._conn.in_transaction:  # also when COMMIT itself failed
                    self._conn.execute("ROLLBACK")
                raise
            self._feed.commit()

    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read across several statements (deferred: takes no write lock)."""
        return self._transaction("BEGIN")

    @staticmethod
    def _require_camera(conn: sqlite3.Connection, camera_id: str) -> None:
        row = conn.execute("SELECT 1 FROM cameras WHERE camera_id = ?", (camera_id,)).fetchone()
        if row is None:
            raise UnknownCameraError(camera_id)

    # ------------------------------------------------------------------ cameras
    def put_camera(
        self, camera_id: str, config: Mapping[str, Any] | None = None, *, token: str | None = None
    ) -> CameraRecord:
        """Insert or update a camera. ``token=None`` keeps the stored token hash (if any);
        a token replaces it (rotation). The raw token is MACed here and never stored."""
        return self.put_cameras([(camera_id, config or {}, token)])[0]

    def put_cameras(self, cameras: Sequence[tuple[str, Mapping[str, Any], str | None]],
                    plans: Mapping[str, Mapping[str, Any]] | None = None) -> list[CameraRecord]:
        """`put_camera` for many (camera_id, config, token) in one transaction (bulk registration:
        one commit instead of one per camera); new tokens are pushed to the replicas. `plans` (camera
        -> plan entry) are written in the same transaction (`put_camera_plans`): one commit per
        registration, whatever the fleet's size."""
        rows = []
        for camera_id, config, token in cameras:
            validate_id("camera_id", camera_id)
            token_hash = None if token is None else tokens.token_mac(self._key, camera_id, token)
            rows.append((camera_id, canonical_json("camera config", config), token_hash))
        now = self._now()
        with self._transaction() as conn:
            rows = self._slot_configs(rows)
            conn.executemany(
                "INSERT INTO cameras (camera_id, config_json, token_hash, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(camera_id) DO UPDATE SET "
                "config_json = excluded.config_json, "
                "token_hash = COALESCE(excluded.token_hash, cameras.token_hash), "
                "updated_at = excluded.updated_at",
                [(cam, config_json, token_hash, now, now) for cam, config_json, token_hash in rows],
            )
            self._feed.stage(Change(TOKEN, cam, mac) for cam, _, mac in rows if mac is not None)
            if self._placement is not None:
                self._feed.stage(Change(SLOT, cam, str(self._placement.slots[cam])) for cam, _, _ in rows)
            if plans:
                self._camera_plans_in(conn, plans)
            return [camera_from_row(conn.execute(f"SELECT {CAMERA_COLUMNS} FROM cameras WHERE camera_id = ?",
                                                 (cam,)).fetchone()) for cam, _, _ in rows]

    def get_camera(self, camera_id: str) -> CameraRecord | None:
        validate_id("camera_id", camera_id)
        with self._lock:
            row = self._conn.execute(
                f"SELECT {CAMERA_COLUMNS} FROM cameras WHERE camera_id = ?", (camera_id,)
            ).fetchone()
        return None if row is None else camera_from_row(row)

    def list_cameras(self) -> list[CameraRecord]:
        with self._lock:
            return self._list_cameras(self._conn)

    @staticmethod
    def _list_cameras(conn: sqlite3.Connection) -> list[CameraRecord]:
        rows = conn.execute(f"SELECT {CAMERA_COLUMNS} FROM cameras ORDER BY camera_id").fetchall()
        return [camera_from_row(row) for row in rows]

    def delete_camera(self, camera_id: str) -> bool:
        """Remove a camera with its camera-scoped apps and model versions (a camera re-created
        under the same id must not inherit the old one's models). False if it did not exist."""
        validate_id("camera_id", camera_id)
        with self._transaction() as conn:
            deleted = conn.execute("DELETE FROM cameras WHERE camera_id = ?", (camera_id,)).rowcount
            conn.execute("DELETE FROM apps WHERE camera_id = ?", (camera_id,))
            conn.execute("DELETE FROM model_versions WHERE camera_id = ?", (camera_id,))
            self._drop_camera_plan(conn, camera_id)
            if deleted:
                self._feed.stage([Change(TOKEN, camera_id, None)])
                self._unplace(camera_id)
        return deleted > 0

    # ------------------------------------------------------------------ apps
    def put_app(
        self,
        name: str,
        *,
        camera_id: str | None = None,
        package_path: str,
        manifest_sha256: str,
        branchpoint: str,
        config: Mapping[str, Any] | None = None,
    ) -> AppRecord:
        """Insert or update the app ``name`` for one camera (or globally when ``camera_id`` is
        None). Raises ``UnknownCameraError`` if the camera is not registered."""
        validate_id("app name", name)
        scope = scope_of(camera_id)
        validate_path("package_path", package_path)
        validate_sha256("manifest_sha256", manifest_sha256)
        validate_id("branchpoint", branchpoint)
        config_json = canonical_json("app config", config or {})
        now = self._now()
        with self._transaction() as conn:
            if camera_id is not None:
                self._require_camera(conn, camera_id)
            conn.execute(
                "INSERT INTO apps (name, camera_id, package_path, manifest_sha256, branchpoint, "
                "config_json, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(name, camera_id) DO UPDATE SET "
                "package_path = excluded.package_path, manifest_sha256 = excluded.manifest_sha256, "
                "branchpoint = excluded.branchpoint, config_json = excluded.config_json, "
                "updated_at = excluded.updated_at",
                (name, scope, package_path, manifest_sha256, branchpoint, config_json, now, now),
            )
            row = conn.execute(
                f"SELECT {APP_COLUMNS} FROM apps WHERE name = ? AND camera_id = ?", (name, scope)
            ).fetchone()
        return app_from_row(row)

    def get_app(self, name: str, camera_id: str | None = None) -> AppRecord | None:
        validate_id("app name", name)
        scope = scope_of(camera_id)
        with self._lock:
            row = self._conn.execute(
                f"SELECT {APP_COLUMNS} FROM apps WHERE name = ? AND camera_id = ?", (name, scope)
            ).fetchone()
        return None if row is None else app_from_row(row)

    def list_apps(self, camera_id: str | None = None) -> list[AppRecord]:
        """All apps; with ``camera_id``, the apps that run on that camera: its own plus the
        global ones."""
        if camera_id is None:
            where, params = "", ()
        else:
            where, params = "WHERE camera_id IN (?, ?)", (scope_of(camera_id), GLOBAL_SCOPE)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {APP_COLUMNS} FROM apps {where} ORDER BY name, camera_id", params
            ).fetchall()
        return [app_from_row(row) for row in rows]

    def delete_app(self, name: str, camera_id: str | None = None) -> bool:
        """Remove one app binding and its model versions. False if it did not exist."""
        validate_id("app name", name)
        scope = scope_of(camera_id)
        with self._transaction() as conn:
            deleted = conn.execute(
                "DELETE FROM apps WHERE name = ? AND camera_id = ?", (name, scope)
            ).rowcount
            conn.execute(
                "DELETE FROM model_versions WHERE app = ? AND camera_id = ?", (name, scope)
            )
        return deleted > 0

    # ------------------------------------------------------------------ model versions
    def record_model_version(
        self, app: str, camera_id: str | None = None, *, path: str, sha256: str
    ) -> ModelVersionRecord:
        """Publish a new model for (``app``, ``camera_id``) and return it with its version.

        Versions count up from 1 per (app, camera). Recording the same (path, sha256) as the
        latest version returns that version (retry-safe); going back to older weights is a new
        version, because "latest" means "what should be served now".
        """
        validate_id("app name", app)
        scope = scope_of(camera_id)
        validate_path("model path", path)
        validate_sha256("model sha256", sha256)
        now = self._now()
        with self._transaction() as conn:
            if camera_id is not None:
                self._require_camera(conn, camera_id)
            latest = self._latest_model(conn, app, scope)
            if latest is not None and (latest.path, latest.sha256) == (path, sha256):
                return latest
            version = 1 if latest is None else latest.version + 1
            conn.execute(
                "INSERT INTO model_versions (app, camera_id, version, path, sha256, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (app, scope, version, path, sha256, now),
            )
        return ModelVersionRecord(app, camera_id, version, path, sha256, now)

    def latest_model_version(
        self, app: str, camera_id: str | None = None
    ) -> ModelVersionRecord | None:
        validate_id("app name", app)
        scope = scope_of(camera_id)
        with self._lock:
            return self._latest_model(self._conn, app, scope)

    @staticmethod
    def _latest_model(conn: sqlite3.Connection, app: str, scope: str) -> ModelVersionRecord | None:
        row = conn.execute(
            f"SELECT {MODEL_COLUMNS} FROM model_versions WHERE app = ? AND camera_id = ? "
            "ORDER BY version DESC LIMIT 1",
            (app, scope),
        ).fetchone()
        return None if row is None else model_from_row(row)

    def list_model_versions(
        self, app: str, camera_id: str | None = None, *, since: int = 0
    ) -> list[ModelVersionRecord]:
        """Versions newer than ``since``, oldest first (what a client at ``since`` must fetch)."""
        validate_id("app name", app)
        scope = scope_of(camera_id)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {MODEL_COLUMNS} FROM model_versions "
                "WHERE app = ? AND camera_id = ? AND version > ? ORDER BY version",
                (app, scope, int(since)),
            ).fetchall()
        return [model_from_row(row) for row in rows]

    # ------------------------------------------------------------------ recovery
    def snapshot(self) -> StateSnapshot:
        """Everything a restarted actor needs, read in one transaction so it is consistent."""
        newest_models = (
            f"SELECT {MODEL_COLUMNS} FROM model_versions AS m WHERE version = (SELECT MAX(version) "
            "FROM model_versions WHERE app = m.app AND camera_id = m.camera_id) "
            "ORDER BY app, camera_id"
        )
        with self._read() as conn:
            apps = conn.execute(f"SELECT {APP_COLUMNS} FROM apps ORDER BY name, camera_id")
            models = conn.execute(newest_models).fetchall()
            return StateSnapshot(
                schema_version=SCHEMA_VERSION,
                cameras=tuple(self._list_cameras(conn)),
                apps=tuple(app_from_row(row) for row in apps.fetchall()),
                latest_plan=self._latest_plan(conn),
                latest_models=tuple(model_from_row(row) for row in models),
            )
