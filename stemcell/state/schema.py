"""SQLite schema of the state database: tables, row <-> record mapping, and the version check.

A newer Stemcell may add tables or change meanings; an older binary writing into such a file
could corrupt it silently, so opening a database stamped with a different version fails loudly.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from stemcell.state.records import (
    AppRecord,
    CameraRecord,
    ModelVersionRecord,
    PlanRecord,
    validate_id,
)

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another process's transaction
SCHEMA_VERSION = 1
GLOBAL_SCOPE = ""  # how the camera_id column stores "no camera" (apps and models for all cameras)

# Scoped rows (apps, model versions) store the global scope as '' rather than NULL because
# SQLite treats NULLs in a primary key as distinct, which would break upserts of global apps.
DDL = """
CREATE TABLE schema_version (
    version     INTEGER NOT NULL
);
CREATE TABLE cameras (
    camera_id   TEXT PRIMARY KEY,
    config_json TEXT NOT NULL,
    token_hash  TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE apps (
    name            TEXT NOT NULL,
    camera_id       TEXT NOT NULL,
    package_path    TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    branchpoint     TEXT NOT NULL,
    config_json     TEXT NOT NULL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    PRIMARY KEY (name, camera_id)
);
CREATE TABLE plans (
    version     INTEGER PRIMARY KEY,
    created_at  REAL NOT NULL,
    sha256      TEXT NOT NULL,
    plan_json   TEXT NOT NULL
);
CREATE TABLE model_versions (
    app         TEXT NOT NULL,
    camera_id   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    path        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (app, camera_id, version)
);
"""


# Added after version 1, additively (like `stemcell.state.events`): older files gain them on open.
# `camera_plans` holds each camera's plan entry as its own row (the plan's `cameras` section), so a
# camera's change writes one row instead of a new copy of the whole plan; `plans.has_cameras` says
# whether a plan version includes that section; `control_keys` holds the token HMAC key;
# `decision_cameras` the Planner's last per-camera decision, one row each (out of its plan section).
CONTROL_DDL = (
    "CREATE TABLE IF NOT EXISTS camera_plans (camera_id TEXT PRIMARY KEY, plan_json TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS control_keys (name TEXT PRIMARY KEY, key BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS decision_cameras (camera_id TEXT PRIMARY KEY, decision_json TEXT NOT NULL)",
)


def ensure_control_tables(conn: sqlite3.Connection, new_key: bytes) -> bytes:
    """Create the additive tables and column if missing, and return the token HMAC key (stored now
    when the file has none: `new_key`). One transaction, so two processes opening a file agree."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in CONTROL_DDL:
            conn.execute(statement)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(plans)")}
        if "has_cameras" not in columns:
            conn.execute("ALTER TABLE plans ADD COLUMN has_cameras INTEGER NOT NULL DEFAULT 0")
        conn.execute("INSERT OR IGNORE INTO control_keys (name, key) VALUES ('token_hmac', ?)", (new_key,))
        key = conn.execute("SELECT key FROM control_keys WHERE name = 'token_hmac'").fetchone()[0]
        _split_legacy_plan(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return bytes(key)


def _split_legacy_plan(conn: sqlite3.Connection) -> None:
    """A file from before `camera_plans` keeps the cameras inside its latest plan: move them to rows."""
    latest = conn.execute("SELECT version, plan_json, has_cameras FROM plans ORDER BY version DESC LIMIT 1").fetchone()
    if latest is None or latest[2]:
        return
    plan = json.loads(latest[1])
    cameras = plan.pop("cameras", None)
    if not isinstance(cameras, dict):
        return
    conn.executemany("INSERT OR REPLACE INTO camera_plans (camera_id, plan_json) VALUES (?, ?)",
                     [(cam, json.dumps(entry, sort_keys=True, separators=(",", ":"))) for cam, entry in cameras.items()])
    rest = json.dumps(plan, sort_keys=True, separators=(",", ":"))
    conn.execute("UPDATE plans SET plan_json = ?, sha256 = ?, has_cameras = 1 WHERE version = ?",
                 (rest, plan_digest(rest, True), latest[0]))
    log.info("moved %d camera plan entries of plan version %d to rows", len(cameras), latest[0])


def plan_digest(rest_json: str, has_cameras: bool) -> str:
    """What makes a plan row "the same plan": its sections other than `cameras`, and whether it has them."""
    return hashlib.sha256(f"{int(has_cameras)}{rest_json}".encode()).hexdigest()


class SchemaVersionError(RuntimeError):
    """The database was written by a Stemcell with a different schema version."""


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the schema in an empty database, or verify the version of an existing one.

    Runs inside ``BEGIN IMMEDIATE`` so two processes opening a fresh file at once cannot both
    create the tables.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if exists is None:
            # executescript() would COMMIT first and break the transaction, so run one by one.
            for statement in filter(str.strip, DDL.split(";")):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        else:
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            _check_version(None if row is None else row[0], path)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _check_version(found: int | None, path: str) -> None:
    if found == SCHEMA_VERSION:
        return
    if found is not None and found > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"state database {path} has schema version {found}, but this Stemcell only knows "
            f"versions up to {SCHEMA_VERSION}: upgrade Stemcell (or point it at another file)"
        )
    raise SchemaVersionError(
        f"state database {path} has an unknown schema version {found!r} "
        f"(expected {SCHEMA_VERSION}); it was not written by this Stemcell"
    )


# ---------------------------------------------------------------- rows <-> records
def scope_of(camera_id: str | None) -> str:
    """The stored camera_id column value for an optional camera id (validated)."""
    return GLOBAL_SCOPE if camera_id is None else validate_id("camera_id", camera_id)


def camera_of(stored: str) -> str | None:
    """Inverse of :func:`scope_of`."""
    return None if stored == GLOBAL_SCOPE else stored


CAMERA_COLUMNS = "camera_id, config_json, token_hash IS NOT NULL, created_at, updated_at"
APP_COLUMNS = (
    "name, camera_id, package_path, manifest_sha256, branchpoint, config_json, "
    "created_at, updated_at"
)
PLAN_COLUMNS = "version, created_at, sha256, plan_json, has_cameras"
MODEL_COLUMNS = "app, camera_id, version, path, sha256, created_at"


def camera_from_row(row: tuple[Any, ...]) -> CameraRecord:
    camera_id, config_json, has_token, created_at, updated_at = row
    config = json.loads(config_json)
    return CameraRecord(camera_id, config, bool(has_token), created_at, updated_at)


def app_from_row(row: tuple[Any, ...]) -> AppRecord:
    name, scope, package_path, manifest, branchpoint, config_json, created_at, updated_at = row
    return AppRecord(
        name, camera_of(scope), package_path, manifest, branchpoint,
        json.loads(config_json), created_at, updated_at,
    )


def plan_from_row(row: tuple[Any, ...], cameras: dict[str, Any] | None = None) -> PlanRecord:
    """A plan row as a record; `cameras` (the current camera plan rows) is added when the row has them."""
    version, created_at, digest, plan_json, has_cameras = row
    plan = json.loads(plan_json)
    if has_cameras:
        plan["cameras"] = cameras or {}
    return PlanRecord(version, created_at, digest, plan)


def model_from_row(row: tuple[Any, ...]) -> ModelVersionRecord:
    app, scope, version, path, digest, created_at = row
    return ModelVersionRecord(app, camera_of(scope), version, path, digest, created_at)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating owner-only) the database file: WAL journal, full sync, our own transactions."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The file holds token hashes: create it owner-only before SQLite creates it with the umask.
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    # isolation_level=None: we issue BEGIN/COMMIT ourselves (BEGIN IMMEDIATE for writers).
    conn = sqlite3.connect(
        str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        log.warning("no WAL for %s (journal_mode=%s); writes stay atomic", path, mode)
    # FULL: a committed write survives a power cut, not only a process crash.
    conn.execute("PRAGMA synchronous=FULL")
    return conn
