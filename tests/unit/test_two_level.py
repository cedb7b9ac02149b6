"""Two-level planning: problems per class, a global split by executor demand, cached per-executor schedules."""
from __future__ import annotations


import pytest

from stemcell.control.contracts import AppRun, CameraSpec
from stemcell.control.two_level import TwoLevelPlanner, _grid, camera_demands, split_by_weight
from stemcell.scheduling.planner import PlannerContext
from stemcell.scheduling.slicing import RetrainJob
from tests.helpers.builders import tiny_package


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory):
    return tiny_package(tmp_path_factory.mktemp("pkg"), branchpoints=(0, 3), apps=("car", "person"))


def _fleet(n: int) -> list[CameraSpec]:
    """Cameras with one or two apps (one pinned on every fifth)."""
    out = []
    for i in range(n):
        apps = [AppRun(a, 0, 10.0) for a in ("car", "person")[: 1 + i % 2]]
        if i % 5 == 0:
            apps[0] = AppRun("car", 3, 10.0, pinned=True)
        out.append(CameraSpec(f"cam-{i}", 10.0, tuple(apps)))
    return out


def test_two_level_plan_never_exceeds_the_gpu_and_weighs_apps(manifest) -> None:
    cameras = _fleet(60)
    roles = {c.camera_id: f"ex-{i % 3}" for i, c in enumerate(cameras)}
    demands = camera_demands(manifest, cameras, [("conv3", 4.0)], correlation=0.5)
    assert len({id(d.problem) for d in demands}) == 4  # one problem per (apps, pins, rate) class, not per camera
    planner = TwoLevelPlanner()
    for total in (0.05, 0.5, 2.0):
        decision = planner.plan(PlannerContext(total, demands), cameras, roles)
        assert sum(s.budget for s in decision.schedules.values()) <= total + 1e-9
        assert sum(s.cost for s in decision.schedules.values() if s.feasible) <= total + 1e-9
    decision = planner.plan(PlannerContext(0.5, demands), cameras, roles)
    one, two = decision.schedules["cam-6"].budget, decision.schedules["cam-3"].budget  # same executor, 1 vs 2 apps
    assert roles["cam-6"] == roles["cam-3"] and two > 1.8 * one


def test_schedules_are_cached_across_cameras_and_rounds(manifest) -> None:
    cameras = _fleet(300)
    roles = {c.camera_id: f"ex-{i % 8}" for i, c in enumerate(cameras)}
    planner = TwoLevelPlanner()
    ctx = PlannerContext(2.0, camera_demands(manifest, cameras, [("conv3", 3.9)], correlation=0.5))
    planner.plan(ctx, cameras, roles)
    first = planner.cache.misses
    assert first < len(cameras) / 5  # cameras of a class on an executor share one computation
    # a new round whose latencies moved by noise (1%, within one 5% grid cell) builds the same problems:
    # nothing is re-planned
    again = PlannerContext(2.0, camera_demands(manifest, cameras, [("conv3", 3.94)], correlation=0.5))
    planner.plan(again, cameras, roles)
    assert planner.cache.misses == first and planner.cache.hits >= first  # every group answered from the cache
    jobs = PlannerContext(2.0, ctx.cameras, retrain_jobs=(RetrainJob("j", (0.1,), 1),))
    assert planner.plan(jobs, cameras, roles).retrain_share >= 0.0  # the fraction search runs on the cache too


def test_grids_and_splits() -> None:
    assert _grid(0.0, 0.02) == 0.0 and _grid(0.123, 0.02, down=True) <= 0.123 < _grid(0.123, 0.02, down=True) * 1.02
    assert split_by_weight(1.0, {"a": 1.0, "b": 3.0}) == {"a": 0.25, "b": 0.75}
    assert split_by_weight(1.0, {"a": 0.0, "b": 0.0}) == {"a": 0.5, "b": 0.5} and split_by_weight(1.0, {}) == {}
