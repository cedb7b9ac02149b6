"""Per-role GPU shares from a planning round: quantised, floored, never above the total."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stemcell.scheduling.instances import random_problem
from stemcell.scheduling.planner import CameraDemand, PlannerContext, plan_round
from stemcell.scheduling.shares import (
    ShareContext,
    measured_latency,
    placeable_shares,
    placement_index,
    role_shares,
    split_share,
    stable_shares,
)
from stemcell.scheduling.slicing import RetrainJob


def test_split_is_proportional_in_quanta_and_never_exceeds_the_total() -> None:
    assert split_share(1.0, {"a": 1, "b": 3}, quantum=0.05, floor=0.05) == {"a": 0.25, "b": 0.75}
    assert split_share(0.75, {"a": 0, "b": 0, "c": 0}, quantum=0.05, floor=0.05) == {"a": 0.25, "b": 0.25, "c": 0.25}
    for total in (0.1, 0.33, 0.7, 1.0, 2.0):
        shares = split_share(total, {"a": 0.01, "b": 3.0, "c": 5.0, "d": 0.0}, quantum=0.05, floor=0.1)
        assert sum(shares.values()) <= total + 1e-9
        assert all(abs(v / 0.05 - round(v / 0.05)) < 1e-6 for v in shares.values())
        if total >= 0.4:  # room for every floor
            assert min(shares.values()) >= 0.1 - 1e-9
            assert shares["c"] >= shares["b"] >= shares["a"]


def test_split_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        split_share(1.0, {"a": -1.0}, quantum=0.05, floor=0.0)
    with pytest.raises(ValueError):
        split_share(1.0, {"a": 1.0}, quantum=0.0, floor=0.0)
    assert split_share(1.0, {}, quantum=0.05, floor=0.05) == {}


def test_hysteresis_keeps_small_changes_but_not_past_the_total() -> None:
    assert stable_shares({"a": 0.3, "b": 0.4}, {"a": 0.35, "b": 0.6}, min_change=0.1, total=1.0) == {"a": 0.3, "b": 0.6}
    # keeping a's 0.45 would sum to 1.05 > 1.0: the target (which fits) wins
    assert stable_shares({"a": 0.45}, {"a": 0.4, "b": 0.6}, min_change=0.1, total=1.0) == {"a": 0.4, "b": 0.6}


def _problem(seed: int):  # noqa: ANN202
    rng = np.random.default_rng(seed)
    return random_problem(rng, num_apps=3, num_segments=5, candidates_per_app=4, num_rates=4)


def _decision(total: float, jobs: tuple[RetrainJob, ...] = ()):  # noqa: ANN202
    cams = tuple(CameraDemand(f"cam{i}", _problem(i)) for i in range(4))
    return plan_round(PlannerContext(total_gpu=total, cameras=cams, retrain_jobs=jobs, tolerance=0.5))


def test_role_shares_respect_the_total_gpu_with_retraining() -> None:
    jobs = (RetrainJob("j0", (0.05, 0.04), 2), RetrainJob("j1", (0.001,), 1))
    decision = _decision(1.0, jobs)
    assert decision.retrain_share > 0  # tolerance 0.5: inference gives GPU up
    roles = {f"cam{i}": f"ex-{placement_index(f'cam{i}', 2)}" for i in range(4)}
    shares = role_shares(ShareContext(decision, roles, ("ex-0", "ex-1"), {"j0": "retrain-j0", "j1": "retrain-j1"}))
    assert set(shares) == {"ex-0", "ex-1", "retrain-j0", "retrain-j1"}
    assert sum(shares.values()) <= 1.0 + 1e-9
    assert sum(shares[r] for r in ("ex-0", "ex-1")) <= decision.inference_share + 1e-9
    assert shares["retrain-j0"] >= shares["retrain-j1"]  # the steeper job got more micro-windows


def test_executor_with_more_planned_cost_gets_more() -> None:
    decision = _decision(0.8)
    costs = {cam: s.cost for cam, s in decision.schedules.items()}
    heavy = max(costs, key=costs.get)
    roles = {cam: ("ex-heavy" if cam == heavy else "ex-rest") for cam in costs}
    shares = role_shares(ShareContext(decision, roles, ("ex-heavy", "ex-rest", "ex-idle"), {}))
    assert shares["ex-idle"] == pytest.approx(0.05)  # an executor with no camera keeps only the floor
    assert sum(shares.values()) <= decision.inference_share + 1e-9


def test_split_share_honours_per_key_floors() -> None:
    assert split_share(1.0, {"a": 0.0, "b": 1.0}, quantum=0.05, floor=0.05, floors={"a": 0.38}) == {"a": 0.4, "b": 0.6}
    tight = split_share(0.5, {"a": 1.0, "b": 1.0}, quantum=0.05, floor=0.05, floors={"a": 0.6, "b": 0.2})
    assert sum(tight.values()) <= 0.5 + 1e-9 and tight["a"] > tight["b"]  # floors shrink in proportion


def test_an_executor_never_gets_less_than_its_models_memory() -> None:
    decision = _decision(0.8)
    roles = {cam: "ex-busy" for cam in decision.schedules}
    floors = {"ex-big-models": 0.3}
    shares = role_shares(ShareContext(decision, roles, ("ex-busy", "ex-big-models"), {}, memory_floors=floors))
    assert shares["ex-big-models"] >= 0.3  # no camera load, but a memory cap below 0.3 would OOM it
    assert sum(shares.values()) <= decision.inference_share + 1e-9
    # hysteresis does not keep a share under the floor, however small the move
    assert stable_shares({"ex-big-models": 0.25}, {"ex-big-models": 0.3}, min_change=0.1, total=1.0,
                         floors=floors) == {"ex-big-models": 0.3}
    assert stable_shares({"ex-big-models": 0.25}, {"ex-big-models": 0.3}, min_change=0.1, total=1.0) == {
        "ex-big-models": 0.25}


def test_measured_latency_replaces_only_measured_segments() -> None:
    problem = _problem(3)
    n = len(problem.segment_latency_s)
    names = [f"s{i}" for i in range(n)]
    rows = [("s0", 2.0), ("s0", 4.0), ("s0", 100.0), ("head", 0.5), ("s1", float("nan"))]
    out = measured_latency(problem, names, rows)
    assert out.segment_latency_s[0] == pytest.approx(0.004)  # median: one odd node does not steer it
    assert out.segment_latency_s[1:] == problem.segment_latency_s[1:]
    assert out.head_latency_s == pytest.approx(0.0005)
    assert dataclasses.replace(out, segment_latency_s=problem.segment_latency_s, head_latency_s=problem.head_latency_s) == problem
    with pytest.raises(ValueError):
        measured_latency(problem, names[:-1], rows)


def test_placement_is_stable_and_in_range() -> None:
    # pinned values: every replica and every restart (another process, another PYTHONHASHSEED) must agree,
    # so the slot may not depend on Python's salted hash(); a change here moves deployed cameras
    assert [placement_index(f"cam{i}", 3) for i in range(12)] == [0, 2, 2, 0, 2, 2, 2, 0, 0, 2, 2, 1]
    assert {placement_index(f"cam{i}", 3) for i in range(50)} == {0, 1, 2}


def test_placeable_shares_fit_new_actors_beside_the_old_ones() -> None:
    # one executor at 0.5 on one GPU: 0.75 would need 1.25 while both run, so it stays
    assert placeable_shares({"a": 0.5}, {"a": 0.75}, free=0.5, quantum=0.05) == {"a": 0.5}
    # a grow is cut to what fits above the current share
    assert placeable_shares({"a": 0.25}, {"a": 0.75}, free=0.6, quantum=0.05) == {"a": 0.6}
    # shrinks go first; the grow that no longer fits waits for a later round
    assert placeable_shares({"a": 0.5, "b": 0.25}, {"a": 0.25, "b": 0.5}, free=0.25, quantum=0.05) == {"a": 0.25, "b": 0.25}
    # everything new fits at once: all changes happen
    got = placeable_shares({"a": 0.25, "b": 0.25}, {"a": 0.1, "b": 0.4}, free=0.5, quantum=0.05)
    assert got == {"a": 0.1, "b": 0.4} and sum(got.values()) - 0.5 <= 0.5


def test_a_down_role_is_placed_first_at_what_fits() -> None:
    # a node died: b (0.75) waits for room the cluster no longer has, a (0.75) runs on the survivor
    current, target = {"a": 0.75, "b": 0.75}, {"a": 0.5, "b": 0.5}
    assert placeable_shares(current, target, free=0.25, quantum=0.05) == current  # nothing fits beside the old ones
    assert placeable_shares(current, target, free=0.25, quantum=0.05, down={"b"}) == {"a": 0.75, "b": 0.25}
    # with more room, the down role takes its target and the rest goes to the others as usual
    assert placeable_shares(current, target, free=1.0, quantum=0.05, down={"b"}) == {"a": 0.5, "b": 0.5}
    # less than a quantum free: it stays down (its cameras stay on failover) rather than get nothing
    assert placeable_shares(current, target, free=0.02, quantum=0.05, down={"b"}) == current
