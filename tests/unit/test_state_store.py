"""StateStore: durable, retry-safe state in SQLite (cameras, apps, plans, model versions)."""
from __future__ import annotations

import json
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from stemcell.state import (
    SCHEMA_VERSION,
    SchemaVersionError,
    StateStore,
    UnknownCameraError,
    new_token,
    validate_id,
)

TOKEN = "camera-secret-token-0123456789"
SHA_A = "a" * 64
SHA_B = "b" * 64


class FakeClock:
    """Deterministic clock: every reading advances one second."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def store(db_path: Path) -> StateStore:
    with StateStore(db_path, clock=FakeClock()) as opened:
        yield opened


def _put_app(store: StateStore, name: str = "person", camera_id: str | None = "cam-1", **kw):
    fields = dict(package_path="/pkgs/person", manifest_sha256=SHA_A, branchpoint="layer3.1")
    fields.update(kw)
    return store.put_app(name, camera_id=camera_id, **fields)


# ---------------------------------------------------------------- cameras
def test_camera_round_trip_and_upsert_keeps_created_at(store: StateStore) -> None:
    first = store.put_camera("cam-1", {"fps": 5, "url": "rtsp://x"})
    again = store.put_camera("cam-1", {"fps": 10})
    assert store.get_camera("cam-1") == again
    assert again.config == {"fps": 10}
    assert again.created_at == first.created_at and again.updated_at > first.updated_at
    assert [c.camera_id for c in store.list_cameras()] == ["cam-1"]
    assert store.get_camera("cam-2") is None


def test_repeated_put_is_idempotent(store: StateStore) -> None:
    """Ray's at-least-once retries re-send the same call: the state must not change shape."""
    for _ in range(3):
        store.put_camera("cam-1", {"fps": 5})
        _put_app(store)
    assert len(store.list_cameras()) == 1
    assert len(store.list_apps()) == 1
    assert store.get_camera("cam-1").config == {"fps": 5}


def test_delete_camera_cascades_to_its_apps_and_models(store: StateStore) -> None:
    store.put_camera("cam-1")
    store.put_camera("cam-2")
    _put_app(store, camera_id="cam-1")
    _put_app(store, camera_id="cam-2")
    _put_app(store, name="vehicle", camera_id=None)
    store.record_model_version("person", "cam-1", path="/m/1.safetensors", sha256=SHA_A)
    assert store.delete_camera("cam-1") is True
    assert store.delete_camera("cam-1") is False  # retried delete: no error, reports nothing done
    assert [(a.name, a.camera_id) for a in store.list_apps()] == [
        ("person", "cam-2"),
        ("vehicle", None),
    ]
    store.put_camera("cam-1")  # re-created under the same id: must not inherit old models
    assert store.latest_model_version("person", "cam-1") is None


# ---------------------------------------------------------------- tokens
def test_token_is_verified_and_wrong_or_missing_tokens_are_rejected(store: StateStore) -> None:
    record = store.put_camera("cam-1", token=TOKEN)
    store.put_camera("cam-2")  # no token set
    assert record.has_token is True
    assert store.verify_camera_token("cam-1", TOKEN) is True
    assert store.verify_camera_token("cam-1", TOKEN + "x") is False
    assert store.verify_camera_token("cam-1", "") is False
    assert store.verify_camera_token("cam-2", TOKEN) is False
    assert store.verify_camera_token("nobody", TOKEN) is False


def test_upsert_without_token_keeps_it_and_a_new_token_rotates_it(store: StateStore) -> None:
    store.put_camera("cam-1", token=TOKEN)
    store.put_camera("cam-1", {"fps": 1})
    assert store.verify_camera_token("cam-1", TOKEN) is True
    rotated = new_token()
    store.put_camera("cam-1", token=rotated)
    assert store.verify_camera_token("cam-1", rotated) is True
    assert store.verify_camera_token("cam-1", TOKEN) is False


def test_raw_token_never_reaches_the_database_files(db_path: Path) -> None:
    with StateStore(db_path) as store:
        store.put_camera("cam-1", token=TOKEN)
        store.put_camera("cam-2", token=TOKEN)
        rows = sqlite3.connect(db_path).execute("SELECT token_hash FROM cameras").fetchall()
        hashes = [row[0] for row in rows]
        # WAL mode keeps recent pages in the -wal file: check every file SQLite wrote.
        written = b"".join(p.read_bytes() for p in db_path.parent.iterdir())
    assert TOKEN.encode() not in written
    assert all(h.startswith("hmac-sha256$") for h in hashes)
    assert hashes[0] != hashes[1]  # the camera id salts the MAC: equal tokens hash differently


def test_short_tokens_are_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="token"):
        store.put_camera("cam-1", token="short")
    assert store.get_camera("cam-1") is None


# ---------------------------------------------------------------- ids and values
@pytest.mark.parametrize(
    "bad", ["../x", "a/b", "..", ".hidden", "", "a\x00b", "cam\n", "a b", "x" * 65, "caméra", 7]
)
def test_path_tricks_and_malformed_ids_are_rejected_naming_the_field(
    store: StateStore, bad: object
) -> None:
    with pytest.raises(ValueError, match="camera_id"):
        store.put_camera(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="app name"):
        _put_app(store, name=bad, camera_id=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="camera_id"):
        store.verify_camera_token(bad, TOKEN)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="branchpoint"):
        _put_app(store, camera_id=None, branchpoint=bad)
    assert store.list_cameras() == [] and store.list_apps() == []


def test_validate_id_accepts_ordinary_names() -> None:
    for good in ["cam-1", "Lobby_East.2", "a", "0" * 64]:
        assert validate_id("camera_id", good) == good


@pytest.mark.parametrize("config", [{"x": float("nan")}, {"x": object()}, ["not", "a", "dict"]])
def test_non_json_configs_are_rejected(store: StateStore, config: object) -> None:
    with pytest.raises(ValueError, match="camera config"):
        store.put_camera("cam-1", config)  # type: ignore[arg-type]


def test_app_requires_a_registered_camera_and_a_sha256_manifest(store: StateStore) -> None:
    with pytest.raises(UnknownCameraError):
        _put_app(store, camera_id="ghost")
    with pytest.raises(ValueError, match="manifest_sha256"):
        _put_app(store, camera_id=None, manifest_sha256="ABC")
    # The failed transaction was rolled back: nothing half-written, and the store still writes.
    assert store.list_apps() == []
    store.put_camera("ghost")
    assert _put_app(store, camera_id="ghost").camera_id == "ghost"


def test_list_apps_for_a_camera_includes_global_apps(store: StateStore) -> None:
    store.put_camera("cam-1")
    store.put_camera("cam-2")
    _put_app(store, name="person", camera_id="cam-1")
    _put_app(store, name="person", camera_id="cam-2", branchpoint="layer4")
    _put_app(store, name="vehicle", camera_id=None, config={"threshold": 0.5})
    names = [(a.name, a.camera_id) for a in store.list_apps("cam-1")]
    assert names == [("person", "cam-1"), ("vehicle", None)]
    assert store.get_app("person", "cam-2").branchpoint == "layer4"
    assert store.get_app("vehicle").config == {"threshold": 0.5}
    assert store.delete_app("person", "cam-1") is True
    assert store.get_app("person", "cam-1") is None


# ---------------------------------------------------------------- plans
def test_plan_versions_increase_and_retries_do_not_add_versions(store: StateStore) -> None:
    assert store.latest_plan() is None
    v1 = store.save_plan({"apps": {"person": {"branchpoint": "layer3", "fps": 5}}})
    # Same content, different key order: the same plan, so a retried save returns v1.
    assert store.save_plan({"apps": {"person": {"fps": 5, "branchpoint": "layer3"}}}) == v1 == 1
    assert store.save_plan({"apps": {}}) == 2
    assert store.save_plan({"apps": {"person": {"branchpoint": "layer3", "fps": 5}}}) == 3
    latest = store.latest_plan()
    assert latest.version == 3 and latest.plan["apps"]["person"]["fps"] == 5
    assert store.get_plan(2).plan == {"apps": {}}
    assert store.get_plan(1).created_at < store.get_plan(3).created_at


def test_plan_history_is_bounded(db_path: Path) -> None:
    with StateStore(db_path, max_plans=3) as store:
        versions = [store.save_plan({"round": i}) for i in range(6)]
        assert versions == [1, 2, 3, 4, 5, 6]
        assert [store.get_plan(v) is not None for v in versions] == [False] * 3 + [True] * 3
        assert store.save_plan({"round": 99}) == 7


# ---------------------------------------------------------------- model versions
def test_model_versions_are_scoped_retry_safe_and_revertible(store: StateStore) -> None:
    store.put_camera("cam-1")
    first = store.record_model_version("person", "cam-1", path="/m/a.safetensors", sha256=SHA_A)
    retry = store.record_model_version("person", "cam-1", path="/m/a.safetensors", sha256=SHA_A)
    second = store.record_model_version("person", "cam-1", path="/m/b.safetensors", sha256=SHA_B)
    back = store.record_model_version("person", "cam-1", path="/m/a.safetensors", sha256=SHA_A)
    assert (first.version, retry.version, second.version, back.version) == (1, 1, 2, 3)
    assert store.latest_model_version("person", "cam-1") == back
    assert store.latest_model_version("person") is None  # global scope is separate
    assert [m.version for m in store.list_model_versions("person", "cam-1", since=1)] == [2, 3]
    with pytest.raises(UnknownCameraError):
        store.record_model_version("person", "ghost", path="/m/a.safetensors", sha256=SHA_A)
    with pytest.raises(ValueError, match="model sha256"):
        store.record_model_version("person", path="/m/a.safetensors", sha256="00")


# ---------------------------------------------------------------- durability
def test_a_reopened_store_sees_everything(db_path: Path) -> None:
    with StateStore(db_path, clock=FakeClock()) as store:
        store.put_camera("cam-1", {"fps": 5}, token=TOKEN)
        _put_app(store)
        store.save_plan({"round": 1})
        store.record_model_version("person", "cam-1", path="/m/a.safetensors", sha256=SHA_A)
        before = store.snapshot()
    with StateStore(db_path) as reopened:
        after = reopened.snapshot()
        assert reopened.verify_camera_token("cam-1", TOKEN) is True
    assert after == before
    assert after.schema_version == SCHEMA_VERSION
    assert [m.version for m in after.latest_models] == [1]
    assert json.loads(json.dumps(after.to_dict()))["latest_plan"]["plan"] == {"round": 1}


def test_snapshot_holds_only_the_newest_model_per_app_and_camera(store: StateStore) -> None:
    store.put_camera("cam-1")
    store.record_model_version("person", "cam-1", path="/a", sha256=SHA_A)
    store.record_model_version("person", "cam-1", path="/b", sha256=SHA_B)
    store.record_model_version("person", None, path="/g", sha256=SHA_A)
    newest = {(m.camera_id, m.version, m.path) for m in store.snapshot().latest_models}
    assert newest == {("cam-1", 2, "/b"), (None, 1, "/g")}


def test_database_file_is_private_and_default_path_is_under_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with StateStore() as store:
        store.put_camera("cam-1")
        path = store.path
    assert path == tmp_path / ".stemcell" / "state.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_newer_schema_is_refused_with_a_clear_error(db_path: Path) -> None:
    StateStore(db_path).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade"):
        StateStore(db_path)


def test_a_broken_clock_is_refused(db_path: Path) -> None:
    with StateStore(db_path, clock=lambda: float("nan")) as store:
        with pytest.raises(ValueError, match="clock"):
            store.put_camera("cam-1")


def test_concurrent_writers_do_not_corrupt_or_lose_writes(db_path: Path) -> None:
    """Two threads on one store plus a second store (connection) on the same file."""
    per_writer = 25
    shared = StateStore(db_path, max_plans=3 * per_writer)  # keep every version: none may be lost
    other = StateStore(db_path, max_plans=3 * per_writer)
    errors: list[BaseException] = []

    def writer(store: StateStore, tag: str) -> None:
        try:
            for i in range(per_writer):
                store.put_camera(f"{tag}-{i}", {"i": i})
                store.save_plan({"writer": tag, "i": i})
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(store, tag))
        for store, tag in [(shared, "a"), (shared, "b"), (other, "c")]
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    shared.close()
    other.close()
    assert errors == []
    with StateStore(db_path) as reopened:
        assert len(reopened.list_cameras()) == 3 * per_writer
        assert reopened.latest_plan().version == 3 * per_writer  # no version lost or duplicated
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    versions = [v for (v,) in conn.execute("SELECT version FROM plans ORDER BY version")]
    assert versions == list(range(1, 3 * per_writer + 1))


def test_put_cameras_is_one_upsert_of_many(tmp_path: Path) -> None:
    """Bulk registration writes many cameras in one transaction; tokens are hashed only where given."""
    from stemcell.state import StateStore

    with StateStore(tmp_path / "bulk.db") as store:
        store.put_camera("c0", {"fps": 1}, token="t" * 32)
        records = store.put_cameras([("c0", {"fps": 5}, None), ("c1", {"fps": 2}, None), ("c2", {}, "u" * 32)])
        assert [(r.camera_id, r.config, r.has_token) for r in records] == [
            ("c0", {"fps": 5}, True), ("c1", {"fps": 2}, False), ("c2", {}, True)]  # c0 keeps its token
        assert store.verify_camera_token("c0", "t" * 32) and store.verify_camera_token("c2", "u" * 32)
        assert [r.camera_id for r in store.list_cameras()] == ["c0", "c1", "c2"]
        with pytest.raises(ValueError):
            store.put_cameras([("ok", {}, None), ("bad id!", {}, None)])  # checked before anything is written
        assert store.get_camera("ok") is None
