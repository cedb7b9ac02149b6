"""The store's control-plane API: two writers share the saved plan, each replacing its own section;
routes are read from the Planner's section; a camera commit is a compare-and-set."""
from __future__ import annotations

from pathlib import Path

from stemcell.control.contracts import AppRun, CameraSpec, Routes
from stemcell.state import CAMERAS, PLANNER, StateStore


def test_sections_do_not_erase_each_other(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        assert store.plan_section(PLANNER) is None and store.routes() == Routes()
        v1 = store.save_plan_section(CAMERAS, {"cam-1": {"fps": 10.0}})
        v2 = store.save_plan_section(PLANNER, {"routes": {"ex-0": "ex-0-g1"}, "roles": {}})
        v3 = store.save_plan_section(CAMERAS, {"cam-1": {"fps": 5.0}})
        assert v1 < v2 < v3
        assert store.latest_plan().plan == {CAMERAS: {"cam-1": {"fps": 5.0}},
                                            PLANNER: {"routes": {"ex-0": "ex-0-g1"}, "roles": {}}}
        assert store.routes() == Routes({"ex-0": "ex-0-g1"})
        # an unchanged section is not a new version (a retried or idle round writes nothing)
        assert store.save_plan_section(PLANNER, {"routes": {"ex-0": "ex-0-g1"}, "roles": {}}) == v3


def test_sections_survive_reopening(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        store.save_plan_section(PLANNER, {"routes": {"ex-0": "ex-0-g4"}})
        assert store.location() == str(tmp_path / "state.db")
    with StateStore(tmp_path / "state.db") as store:
        assert store.routes() == Routes({"ex-0": "ex-0-g4"})


def _camera(camera_id: str, *apps: AppRun) -> CameraSpec:
    return CameraSpec(camera_id, 10.0, apps)


def test_camera_commit_is_a_compare_and_set_that_keeps_the_token(tmp_path: Path) -> None:
    before, after = _camera("cam-1", AppRun("car", 0, 10.0)), _camera("cam-1", AppRun("car", 6, 2.5))
    entry = {"fps": 10.0, "apps": {"car": {"branchpoint": 6, "fps": 2.5}}}
    with StateStore(tmp_path / "state.db") as store:
        store.put_camera("cam-1", before.as_config(), token="s" * 16)
        assert store.compare_and_set_camera(before, after, entry)
        record = store.get_camera("cam-1")
        assert CameraSpec.from_config("cam-1", record.config) == after and record.has_token
        assert store.plan_section(CAMERAS) == {"cam-1": entry}
        # the camera no longer runs `before` (an admin changed it, or this commit ran already): no write
        admin = _camera("cam-1", AppRun("car", 3, 5.0, pinned=True))
        store.put_camera("cam-1", admin.as_config())
        assert not store.compare_and_set_camera(before, after, entry)
        assert CameraSpec.from_config("cam-1", store.get_camera("cam-1").config) == admin
        assert not store.compare_and_set_camera(_camera("gone", *before.apps), _camera("gone", *after.apps), entry)
        assert store.get_camera("gone") is None


def test_the_planners_per_camera_decision_is_rows_beside_its_section(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        decision = {f"cam-{i}": {"budget": 0.01, "apps": {"car": {"branchpoint": 3}}} for i in range(50)}
        assert store.put_decision_cameras(decision) == 50
        assert store.put_decision_cameras(decision) == 0  # a retry (or an unchanged round) writes nothing
        changed = decision | {"cam-1": {"budget": 0.02, "apps": {}}}
        del changed["cam-2"]
        assert store.put_decision_cameras(changed) == 2  # one changed, one gone
    with StateStore(tmp_path / "state.db") as store:
        assert store.decision_cameras() == changed
