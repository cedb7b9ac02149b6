"""The Planner's pure parts (stemcell.control.planning): demand, floors, capacity, share checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stemcell.control import planning
from stemcell.control.contracts import (AppRun, CameraSpec, ExecutorStats, JobStats, MemoryReport, SegmentLatency,
                                        WorkerStats)
from stemcell.scheduling.instances import random_problem
from stemcell.scheduling.planner import CameraDemand, PlannerContext, plan_round
from stemcell.scheduling.shares import ShareContext, role_shares
from tests.helpers.builders import tiny_package

GIB = 1 << 30


def _memory(weights: int, activations: int, gpu: int | None, peak: int | None = None) -> MemoryReport:
    return MemoryReport(bytes_merged=weights, activation_peak=activations, batch_size=8,
                        cuda_max_memory_allocated=peak, gpu_total_bytes=gpu)


def test_memory_floor_from_a_measured_report() -> None:
    assert planning.memory_floor(None) == 0.0
    assert planning.memory_floor(_memory(GIB, GIB, gpu=None)) == 0.0  # CPU executor: nothing to cap
    assert planning.memory_floor(_memory(12 * GIB, 4 * GIB, gpu=80 * GIB)) == pytest.approx(1.25 * 16 / 80)
    assert planning.memory_floor(_memory(GIB, GIB, gpu=80 * GIB, peak=40 * GIB)) == pytest.approx(1.25 * 40 / 80)
    assert planning.memory_floor(_memory(70 * GIB, 20 * GIB, gpu=80 * GIB)) == 1.0  # never above a whole GPU


def test_retrain_jobs_keep_the_recent_gains_and_count_phases() -> None:
    stats = WorkerStats((JobStats("c/car", tuple(0.01 * i for i in range(12)), 12), JobStats("c/bus", (0.2,), 0)))
    jobs = planning.retrain_jobs("retrain-w", stats)
    assert set(jobs) == {"c/car", "c/bus"} and {role for role, _ in jobs.values()} == {"retrain-w"}
    car = jobs["c/car"][1]
    assert car.recent_gains == pytest.approx([0.01 * i for i in range(4, 12)])  # the last GAIN_HISTORY phases
    assert car.windows_used == 12
    assert jobs["c/bus"][1].windows_used == 1  # at least as many phases as gains were measured
    assert planning.retrain_jobs("retrain-w", None) == {}


def test_retrain_jobs_with_a_drop_plan_a_fresh_window_from_it() -> None:
    # A job with live samples reports its agreement drop since its last update: the round is a new
    # update window whose first window is expected to gain that drop; older gains are superseded.
    stats = WorkerStats((JobStats("c/car", (0.3, 0.2), 9, drop=0.15), JobStats("c/bus", (0.01,), 4, drop=0.0)))
    jobs = {job_id: job for job_id, (_, job) in planning.retrain_jobs("retrain-w", stats).items()}
    assert jobs["c/car"].prior_gain == 0.15 and jobs["c/car"].windows_used == 0 and jobs["c/car"].recent_gains == ()
    assert jobs["c/bus"].prior_gain == 0.0


def test_plan_round_slices_by_drop_and_the_view_shows_gains_and_shares() -> None:
    # The Planner's default slicing ("gain", blended estimator): the drifted camera's job gets most
    # windows, the static one its minimum window; the plan view shows each job's expected gain and share.
    stats = WorkerStats((JobStats("static/car", (0.2,), 3, drop=0.0), JobStats("drifted/car", (0.0,), 3, drop=0.2)))
    jobs = planning.retrain_jobs("retrain-w", stats)
    rng = np.random.default_rng(0)
    cams = tuple(CameraDemand(f"cam{i}", random_problem(rng, num_apps=2, num_segments=4, candidates_per_app=3,
                                                           num_rates=3)) for i in range(2))
    decision = plan_round(PlannerContext(4.0, cams, retrain_jobs=tuple(j for _, j in jobs.values()), tolerance=0.5))
    view = planning.decision_view(decision)["retrain_jobs"]
    assert view["static/car"]["windows"] == 1 and view["drifted/car"]["windows"] > 5
    assert view["drifted/car"]["expected_gain"] == pytest.approx(0.2) and view["static/car"]["expected_gain"] == 0.0
    assert sum(v["gpu_share"] for v in view.values()) == pytest.approx(decision.retrain_share)
    assert view["drifted/car"]["gpu_share"] == pytest.approx(
        decision.retrain_share * view["drifted/car"]["windows"] / sum(v["windows"] for v in view.values()))


def _stats(*rows: tuple[str, float]) -> ExecutorStats:
    return ExecutorStats(1, 1, 1, 1.0, 0, 1.0, 1.0, 1, 0,
                         tuple(SegmentLatency(f"n{i}", seg, ("c/car",), ms * 4, ms) for i, (seg, ms) in enumerate(rows)))


def test_camera_demand_uses_measurements_and_pins(tmp_path: Path) -> None:
    manifest = tiny_package(tmp_path / "pkg", apps=("car", "person"))
    camera = CameraSpec("cam-1", 5.0, (AppRun("car", 3, 5.0, pinned=True), AppRun("person", 0, 5.0)))
    segment = manifest.base.branchpoints[1].removeprefix("after_")
    rows = planning.latency_rows([_stats((segment, 40.0)), None, _stats((segment, 60.0))])
    assert rows == [(segment, 40.0), (segment, 60.0)]  # unreachable executors contribute nothing
    demand = planning.camera_demand(manifest, camera, rows, correlation=0.5)
    assert demand.camera_id == "cam-1"
    problem = demand.problem
    assert problem.segment_latency_s[0] == pytest.approx(0.05)  # the median of what was measured, in seconds
    assert max(problem.frame_rates) <= 5.0  # no rate above the stream's
    car, person = problem.apps
    assert [c.branchpoint for c in car.candidates] == [3]  # pinned: only its own candidate is costed
    assert len(person.candidates) > 1
    plan_round(PlannerContext(1.0, (demand,)))  # a valid problem for a round


def test_capacity_and_free_gpu() -> None:
    assert planning.capacity(2.0, None) == 2.0  # no GPUs: shares are bookkeeping
    assert planning.capacity(2.0, 1.0) == 1.0  # a node was lost
    assert planning.plannable(1.0, headroom=0.25, teacher_share=0.25, floor=0.05) == 0.5
    with pytest.raises(ValueError, match="nothing left to plan"):
        planning.plannable(0.5, headroom=0.25, teacher_share=0.25, floor=0.05)
    shares = {"a": 0.5, "b": 0.25}
    assert planning.held(shares, 0.25) == 1.0 and planning.held(shares, 0.25, down={"a"}) == 0.5
    assert planning.free_gpu(1.5, 1.0, None) == 0.5 and planning.free_gpu(1.5, 1.0, 0.25) == 0.25
    assert planning.outgrown(1.0, 1.25) and not planning.outgrown(1.0, 1.0)


def test_check_shares_refuses_what_cannot_run() -> None:
    current = {"ex-0": 0.25, "ex-1": 0.25}
    planning.check_shares(current, {"ex-0": 0.5}, 1.0, free=0.5, quantum=0.05)
    for target, free, match in (({"ex-9": 0.1}, 1.0, "unknown roles"), ({"ex-0": 0.0}, 1.0, "must be > 0"),
                                ({"ex-0": 0.8}, 1.0, "sum to <= 1.0"), ({"ex-0": 0.5}, 0.25, "make-before-break")):
        with pytest.raises(ValueError, match=match):
            planning.check_shares(current, target, 1.0, free=free, quantum=0.05)


def test_decide_shares_damps_small_moves_and_places_what_fits() -> None:
    cams = tuple(CameraDemand(f"cam{i}", random_problem(np.random.default_rng(i), num_apps=2, num_segments=4,
                                                          candidates_per_app=3, num_rates=3)) for i in range(2))
    decision = plan_round(PlannerContext(1.0, cams))
    split = ShareContext(decision, {"cam0": "ex-0", "cam1": "ex-1"}, ("ex-0", "ex-1"), {}, quantum=0.05, floor=0.05)
    wanted = role_shares(split)
    assert sum(wanted.values()) <= 1.0 + 1e-9
    near = {r: s + 0.05 for r, s in wanted.items()}  # running within min_change of the target: nobody moves
    assert planning.decide_shares(split, near, min_change=0.1, total=2.0, free=1.0).placeable == near
    far = {"ex-0": 0.05, "ex-1": 0.05}
    roomy = planning.decide_shares(split, far, min_change=0.1, total=1.0, free=1.0)
    assert roomy.target == wanted and roomy.placeable == wanted and roomy.down == frozenset()
    cramped = planning.decide_shares(split, far, min_change=0.1, total=1.0, free=0.0)
    assert cramped.target == wanted and cramped.placeable == far  # nothing fits beside the running actors
