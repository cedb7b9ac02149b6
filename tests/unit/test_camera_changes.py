"""Which cameras a planning round reconfigures, pins, and the store-side compare-and-set."""
from __future__ import annotations

from pathlib import Path

from stemcell.control.camera_plans import AppAssignment
from stemcell.scheduling import mainstream_greedy
from stemcell.control.camera_changes import (
    AppSetting,
    CameraChange,
    CameraSetting,
    commit_camera_change,
    plan_changes,
    respect_pins,
)
from stemcell.control.plan_state import CAMERAS, plan_section
from stemcell.scheduling.problem import AppChoice, Schedule, build_problem
from stemcell.state import StateStore


def _schedule(*choices: tuple[str, int, float]) -> Schedule:
    picks = tuple(AppChoice(app, 0, b, fps, 0.5, 0.5, 0.5) for app, b, fps in choices)
    return Schedule(picks, cost=0.1, budget=0.1, objective=0.5, policy="test", feasible=True)


def _camera(*apps: AppSetting, stream_fps: float = 10.0) -> CameraSetting:
    return CameraSetting(stream_fps, apps)


def _problem(budget: float):  # noqa: ANN202 - a ScheduleProblem
    rows = [{"app": app, "branchpoint": b, "precision": p, "recall": p}
            for app in ("car", "person") for b, p in ((0, 0.95), (3, 0.9), (6, 0.7))]
    return build_problem(rows, segment_latency_s=(0.004,) * 6, head_latency_s=0.001,
                         frame_rates=(1.25, 2.5, 5.0, 10.0), stream_fps=10.0, budget=budget,
                         event_length_frames=20.0)


def test_only_differing_cameras_change_and_only_their_moved_apps() -> None:
    same = _camera(AppSetting("car", 3, 10.0), AppSetting("person", 6, 5.0))
    moved = _camera(AppSetting("car", 3, 10.0), AppSetting("person", 6, 5.0))
    decided = {"cam-same": _schedule(("car", 3, 10.0), ("person", 6, 5.0)),
               "cam-moved": _schedule(("car", 6, 2.5), ("person", 6, 5.0))}
    [change] = plan_changes({"cam-same": same, "cam-moved": moved}, decided)
    assert change == CameraChange("cam-moved", moved,
                                  _camera(AppSetting("car", 6, 2.5), AppSetting("person", 6, 5.0)))
    assert change.describe() == "car 3@10 -> 6@2.5"


def test_pinned_apps_keep_their_setting() -> None:
    cam = _camera(AppSetting("car", 0, 10.0, pinned=True), AppSetting("person", 0, 10.0))
    [change] = plan_changes({"c": cam}, {"c": _schedule(("car", 6, 1.25), ("person", 6, 1.25))})
    assert change.after.apps == (AppSetting("car", 0, 10.0, pinned=True), AppSetting("person", 6, 1.25))
    all_pinned = _camera(AppSetting("car", 0, 10.0, pinned=True))
    assert plan_changes({"c": all_pinned}, {"c": _schedule(("car", 6, 1.25))}) == []


def test_unplanned_removed_and_unmentioned_are_left_alone_and_rates_capped() -> None:
    cam = _camera(AppSetting("car", 3, 5.0), AppSetting("person", 3, 5.0), stream_fps=5.0)
    decided = {"c": _schedule(("car", 3, 10.0)), "gone": _schedule(("car", 6, 1.25))}
    assert plan_changes({"c": cam, "new": cam}, decided) == []  # 10 fps capped to the 5 fps stream: no move
    [change] = plan_changes({"c": cam}, {"c": _schedule(("car", 6, 10.0))})
    assert change.after.apps == (AppSetting("car", 6, 5.0), AppSetting("person", 3, 5.0))


def test_a_tight_budget_moves_an_expensive_camera_to_mainstreams_choice() -> None:
    expensive = _camera(AppSetting("car", 0, 10.0), AppSetting("person", 0, 10.0))
    schedule = mainstream_greedy(_problem(budget=0.01))
    [change] = plan_changes({"c": expensive}, {"c": schedule})
    assert {(a.app, a.branchpoint, a.fps) for a in change.after.apps} == \
        {(c.app, c.branchpoint, c.fps) for c in schedule.choices}
    assert all(a.fps < 10.0 or a.branchpoint > 0 for a in change.after.apps)


def test_respect_pins_restricts_the_pinned_app_to_its_candidate() -> None:
    setting = _camera(AppSetting("car", 0, 10.0, pinned=True), AppSetting("person", 0, 10.0))
    problem = respect_pins(_problem(budget=0.01), setting)
    car, person = problem.apps
    assert [c.branchpoint for c in car.candidates] == [0]
    assert [c.branchpoint for c in person.candidates] == [0, 3, 6]
    assert mainstream_greedy(problem).choices[0].branchpoint == 0  # the pinned stem is what gets costed


def test_stored_form_round_trips_with_the_ingress_assignment() -> None:
    stored = {"fps": 10.0, "apps": [AppAssignment("car", 3, 5.0, pinned=True).as_stored_dict(),
                                    {"app": "person", "branchpoint": 6, "fps": 2.5}]}  # stored before pins existed
    setting = CameraSetting.from_config(stored)
    assert setting.apps == (AppSetting("car", 3, 5.0, True), AppSetting("person", 6, 2.5, False))
    assert CameraSetting.from_config(setting.as_config()) == setting


def test_commit_is_a_compare_and_set_that_keeps_the_token(tmp_path: Path) -> None:
    before = _camera(AppSetting("car", 0, 10.0))
    change = CameraChange("cam-1", before, _camera(AppSetting("car", 6, 2.5)))
    entry = {"fps": 10.0, "apps": {"car": {"branchpoint": 6, "fps": 2.5}}}
    with StateStore(tmp_path / "state.db") as store:
        store.put_camera("cam-1", before.as_config(), token="s" * 16)
        assert commit_camera_change(store, change, entry)
        record = store.get_camera("cam-1")
        assert CameraSetting.from_config(record.config) == change.after and record.has_token
        assert plan_section(store, CAMERAS) == {"cam-1": entry}
        # the camera no longer runs `before` (an admin changed it, or this commit ran already): no write
        admin = _camera(AppSetting("car", 3, 5.0, pinned=True))
        store.put_camera("cam-1", admin.as_config())
        assert not commit_camera_change(store, change, entry)
        assert CameraSetting.from_config(store.get_camera("cam-1").config) == admin
        assert not commit_camera_change(store, CameraChange("gone", before, change.after), entry)
