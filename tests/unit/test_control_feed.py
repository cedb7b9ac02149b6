"""Replica-side token checks and pushed routes: the store's feed, the replicas' table, legacy tokens,
camera plans as rows."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from stemcell.state import CAMERAS, PLANNER, StateStore, new_token
from stemcell.state.control import ROUTE, TOKEN, Change, ControlDelta, ControlFeed, ControlTable
from stemcell.state.tokens import hash_token
from tests.helpers.feed import Follower


def _until(check, timeout_s: float = 2.0) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout_s, "not within the push latency"
        time.sleep(0.001)
    return time.monotonic() - start


def test_a_revoked_token_is_refused_by_every_replica_within_the_push_latency(tmp_path: Path) -> None:
    token = new_token()
    with StateStore(tmp_path / "state.db") as store:
        store.put_camera("cam-1", {"fps": 5}, token=token)
        replicas = [Follower(store) for _ in range(3)]
        for r in replicas:
            r.start()
        assert all(r.table.check_token("cam-1", token) is True for r in replicas)
        assert all(r.table.check_token("cam-1", "x" * 43) is False for r in replicas)
        assert store.revoke_camera_token("cam-1") and not store.revoke_camera_token("cam-1")
        waits = [_until(lambda r=r: r.table.check_token("cam-1", token) is False) for r in replicas]
        assert max(waits) < 0.5  # pushed: no replica waits for a cache to expire
        rotated = new_token()
        store.put_camera("cam-1", token=rotated)
        for r in replicas:
            _until(lambda r=r: r.table.check_token("cam-1", rotated) is True)
            assert r.table.check_token("cam-1", token) is False
        store.delete_camera("cam-1")
        for r in replicas:
            _until(lambda r=r: r.table.check_token("cam-1", rotated) is False)
            r.stop.set()


def test_a_late_replica_gets_the_full_table_and_routes_are_pushed(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        tokens = {f"cam-{i}": new_token() for i in range(50)}
        store.put_cameras([(cam, {}, tok) for cam, tok in tokens.items()])
        store.save_plan_section(PLANNER, {"routes": {"ex-0": "ex-0", "ex-1": "ex-1"}})
        early = ControlTable()
        early.load(store.control_snapshot())
        store.save_plan_section(PLANNER, {"routes": {"ex-0": "ex-0-g1", "ex-1": "ex-1"}})
        late = ControlTable()
        late.load(store.control_snapshot())  # started after every change: the snapshot has them all
        assert all(late.check_token(cam, tok) for cam, tok in tokens.items())
        assert late.routes().actors == {"ex-0": "ex-0-g1", "ex-1": "ex-1"}
        delta = store.control_changes(early.epoch, early.version, 0.0)
        assert delta.changes == (Change(ROUTE, "ex-0", "ex-0-g1"),)  # O(changed roles), not the table
        assert early.apply(delta) and early.routes() == late.routes() == store.routes()


def test_a_gap_or_a_restarted_store_asks_for_the_snapshot() -> None:
    feed = ControlFeed(max_log=2)
    feed.publish([Change(TOKEN, f"c{i}", "m") for i in range(5)])
    assert feed.since(feed.epoch, 1).changes is None  # fell behind the bounded log
    assert feed.since("another-epoch", 5).changes is None  # the store restarted
    assert feed.since(feed.epoch, 3).changes == (Change(TOKEN, "c3", "m"), Change(TOKEN, "c4", "m"))
    table = ControlTable()
    assert not table.apply(feed.since("another-epoch", 5))
    table.epoch, table.version = feed.epoch, 3
    newer, older = feed.since(feed.epoch, 3), ControlDelta(feed.epoch, 4, (Change(TOKEN, "c3", "stale"),))
    assert table.apply(newer) and table.apply(older)  # two overlapping syncs answered out of order
    assert table.token_macs == {"c3": "m", "c4": "m"} and table.version == 5
    started = time.monotonic()
    assert feed.wait(feed.epoch, 5, 0.05).changes == () and time.monotonic() - started >= 0.04  # waited


def test_a_legacy_scrypt_token_still_works_and_becomes_an_hmac(tmp_path: Path) -> None:
    token = new_token()
    db = tmp_path / "state.db"
    with StateStore(db) as store:
        store.put_camera("old", {})
        with sqlite3.connect(db) as conn:  # what a database from before HMAC tokens holds
            conn.execute("UPDATE cameras SET token_hash = ? WHERE camera_id = 'old'", (hash_token(token),))
    with StateStore(db) as store:  # restored
        replica = ControlTable()
        replica.load(store.control_snapshot())
        assert replica.check_token("old", token) is None  # only the store can check a scrypt hash
        assert not store.verify_camera_token("old", "w" * 43)
        assert store.verify_camera_token("old", token)  # right: migrated, and pushed
        replica.apply(store.control_changes(replica.epoch, replica.version, 0.0))
        assert replica.check_token("old", token) is True
    with StateStore(db) as store:
        assert store.verify_camera_token("old", token)
        assert store.control_snapshot().token_macs["old"].startswith("hmac-sha256$")


def test_camera_plans_are_rows_and_history_is_bounded(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db", max_plans=4) as store:
        store.put_camera_plans({f"cam-{i}": {"apps": {"car": {"branchpoint": 3 if i % 3 else 6}}} for i in range(30)})
        store.save_plan_section(PLANNER, {"routes": {"ex-0": "ex-0"}})
        v = store.put_camera_plans({"cam-1": {"apps": {"car": {"branchpoint": 6}}}})
        assert store.put_camera_plans({"cam-1": {"apps": {"car": {"branchpoint": 6}}}}) == v  # a retry writes nothing
        for i in range(10):
            store.put_camera_plans({"cam-2": {"apps": {"car": {"branchpoint": i}}}})
        plan = store.latest_plan().plan
        assert len(plan[CAMERAS]) == 30 and plan[PLANNER] == {"routes": {"ex-0": "ex-0"}}
        assert store.shared_branchpoints() == {"car": 3}
        assert store.camera_plan_entries(["cam-1", "ghost"]) == {"cam-1": {"apps": {"car": {"branchpoint": 6}}}}
        store.put_camera("cam-0")
        store.delete_camera("cam-0")
        assert "cam-0" not in store.plan_section(CAMERAS)
    with sqlite3.connect(tmp_path / "state.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM plans").fetchone()[0] == 4  # bounded
        assert conn.execute("SELECT COUNT(*) FROM camera_plans").fetchone()[0] == 29  # one row per camera
        assert all("cam-" not in row[0] for row in conn.execute("SELECT plan_json FROM plans"))


def test_a_plan_saved_before_camera_rows_is_split_on_open(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with StateStore(db) as store:
        store.save_plan({PLANNER: {"routes": {"ex-0": "ex-0-g2"}}})
    with sqlite3.connect(db) as conn:  # the shape older versions wrote: cameras inside the plan JSON
        conn.execute("UPDATE plans SET has_cameras = 0, plan_json = ?",
                     ('{"cameras":{"cam-1":{"fps":5.0}},"planner":{"routes":{"ex-0":"ex-0-g2"}}}',))
    with StateStore(db) as store:
        assert store.plan_section(CAMERAS) == {"cam-1": {"fps": 5.0}}
        assert store.routes().actors == {"ex-0": "ex-0-g2"}


def _spec(i: int) -> dict:
    apps = [{"app": a, "branchpoint": 3, "fps": 10.0} for a in ("car", "person", "bus")[: 1 + i % 3]]
    return {"fps": 10.0, "apps": apps}


def test_the_store_places_cameras_with_a_load_bound_and_pushes_their_slots(tmp_path: Path) -> None:
    from stemcell.control.contracts import CameraSpec
    from stemcell.control.placement import camera_slot

    db = tmp_path / "state.db"
    with StateStore(db) as store:
        store.put_camera("early", _spec(0))
        assert "slot" not in store.get_camera("early").config  # nothing placed before the count is known
        assert store.set_executor_count(8) == 1 and store.set_executor_count(8) == 0  # stored once; idempotent
        assert store.get_camera("early").config["slot"] == camera_slot("early", {}, 8)
        replica = ControlTable()
        replica.load(store.control_snapshot())
        reserved = store.place_cameras([CameraSpec.from_config(f"cam-{i}", _spec(i)) for i in range(400)])
        store.put_cameras([(f"cam-{i}", _spec(i), None) for i in range(400)])
        configs = {c.camera_id: c.config for c in store.list_cameras()}
        assert all(configs[cam]["slot"] == slot for cam, slot in reserved.items())  # stored where reserved
        replica.apply(store.control_changes(replica.epoch, replica.version, 0.0))
        assert {cam: replica.slot(cam) for cam in reserved} == dict(reserved)
        assert store._placement.max_load_over_mean() <= 1.25 + 1e-9
        moved = store.set_executor_count(9)
        assert 0 < moved <= 2 * 401 / 9
        replica.apply(store.control_changes(replica.epoch, replica.version, 0.0))
        now = {c.camera_id: c.config["slot"] for c in store.list_cameras()}
        assert sum(now[c] != configs[c]["slot"] for c in now) == moved
        assert all(replica.slot(cam) == slot for cam, slot in now.items())
        assert store.place_cameras([CameraSpec.from_config("failed", _spec(1))]) and store.release_cameras(["failed", "cam-1"]) == 1
        store.delete_camera("cam-1")
        replica.apply(store.control_changes(replica.epoch, replica.version, 0.0))
        assert replica.slot("cam-1") is None
    with StateStore(db) as store:  # restart: the stored slots come back, nothing moves
        assert store.set_executor_count(9) == 0
        assert {c.camera_id: camera_slot(c.camera_id, c.config, 9) for c in store.list_cameras()} == \
            {cam: slot for cam, slot in now.items() if cam != "cam-1"}
