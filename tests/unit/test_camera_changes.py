"""Which cameras a planning round reconfigures, and pins (the store's compare-and-set: test_plan_state)."""
from __future__ import annotations

from stemcell.control.camera_changes import CameraChange, plan_changes, respect_pins
from stemcell.control.contracts import AppRun, CameraSpec
from stemcell.scheduling import mainstream_greedy
from stemcell.scheduling.problem import AppChoice, Schedule, build_problem


def _schedule(*choices: tuple[str, int, float]) -> Schedule:
    picks = tuple(AppChoice(app, 0, b, fps, 0.5, 0.5, 0.5) for app, b, fps in choices)
    return Schedule(picks, cost=0.1, budget=0.1, objective=0.5, policy="test", feasible=True)


def _camera(*apps: AppRun, stream_fps: float = 10.0, camera_id: str = "c") -> CameraSpec:
    return CameraSpec(camera_id, stream_fps, apps)


def _problem(budget: float):  # noqa: ANN202 - a ScheduleProblem
    rows = [{"app": app, "branchpoint": b, "precision": p, "recall": p}
            for app in ("car", "person") for b, p in ((0, 0.95), (3, 0.9), (6, 0.7))]
    return build_problem(rows, segment_latency_s=(0.004,) * 6, head_latency_s=0.001,
                         frame_rates=(1.25, 2.5, 5.0, 10.0), stream_fps=10.0, budget=budget,
                         event_length_frames=20.0)


def test_only_differing_cameras_change_and_only_their_moved_apps() -> None:
    same = _camera(AppRun("car", 3, 10.0), AppRun("person", 6, 5.0), camera_id="cam-same")
    moved = _camera(AppRun("car", 3, 10.0), AppRun("person", 6, 5.0), camera_id="cam-moved")
    decided = {"cam-same": _schedule(("car", 3, 10.0), ("person", 6, 5.0)),
               "cam-moved": _schedule(("car", 6, 2.5), ("person", 6, 5.0))}
    [change] = plan_changes({"cam-same": same, "cam-moved": moved}, decided)
    assert change == CameraChange(moved, _camera(AppRun("car", 6, 2.5), AppRun("person", 6, 5.0), camera_id="cam-moved"))
    assert change.camera_id == "cam-moved"
    assert change.describe() == "car 3@10 -> 6@2.5"


def test_pinned_apps_keep_their_setting() -> None:
    cam = _camera(AppRun("car", 0, 10.0, pinned=True), AppRun("person", 0, 10.0))
    [change] = plan_changes({"c": cam}, {"c": _schedule(("car", 6, 1.25), ("person", 6, 1.25))})
    assert change.after.apps == (AppRun("car", 0, 10.0, pinned=True), AppRun("person", 6, 1.25))
    all_pinned = _camera(AppRun("car", 0, 10.0, pinned=True))
    assert plan_changes({"c": all_pinned}, {"c": _schedule(("car", 6, 1.25))}) == []


def test_unplanned_removed_and_unmentioned_are_left_alone_and_rates_capped() -> None:
    cam = _camera(AppRun("car", 3, 5.0), AppRun("person", 3, 5.0), stream_fps=5.0)
    decided = {"c": _schedule(("car", 3, 10.0)), "gone": _schedule(("car", 6, 1.25))}
    assert plan_changes({"c": cam, "new": cam}, decided) == []  # 10 fps capped to the 5 fps stream: no move
    [change] = plan_changes({"c": cam}, {"c": _schedule(("car", 6, 10.0))})
    assert change.after.apps == (AppRun("car", 6, 5.0), AppRun("person", 3, 5.0))


def test_a_tight_budget_moves_an_expensive_camera_to_mainstreams_choice() -> None:
    expensive = _camera(AppRun("car", 0, 10.0), AppRun("person", 0, 10.0))
    schedule = mainstream_greedy(_problem(budget=0.01))
    [change] = plan_changes({"c": expensive}, {"c": schedule})
    assert {(a.app, a.branchpoint, a.fps) for a in change.after.apps} == \
        {(c.app, c.branchpoint, c.fps) for c in schedule.choices}
    assert all(a.fps < 10.0 or a.branchpoint > 0 for a in change.after.apps)


def test_respect_pins_restricts_the_pinned_app_to_its_candidate() -> None:
    setting = _camera(AppRun("car", 0, 10.0, pinned=True), AppRun("person", 0, 10.0))
    problem = respect_pins(_problem(budget=0.01), setting)
    car, person = problem.apps
    assert [c.branchpoint for c in car.candidates] == [0]
    assert [c.branchpoint for c in person.candidates] == [0, 3, 6]
    assert mainstream_greedy(problem).choices[0].branchpoint == 0  # the pinned stem is what gets costed


def test_the_stored_form_round_trips_and_old_configs_count_as_unpinned() -> None:
    stored = {"fps": 10.0, "apps": [AppRun("car", 3, 5.0, pinned=True).as_dict(),
                                    {"app": "person", "branchpoint": 6, "fps": 2.5}]}  # stored before pins existed
    camera = CameraSpec.from_config("cam-1", stored)
    assert camera.apps == (AppRun("car", 3, 5.0, True), AppRun("person", 6, 2.5, False))
    assert CameraSpec.from_config("cam-1", camera.as_config()) == camera
