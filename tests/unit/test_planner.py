"""Planner round: GPU split respects the total; retraining gets only what inference can spare."""
from __future__ import annotations

import numpy as np
import pytest

from stemcell.scheduling import random_problem
from stemcell.scheduling.planner import CameraDemand, PlannerContext, plan_round
from stemcell.scheduling.registry import SCHEDULERS
from stemcell.scheduling.slicing import SLICING_POLICIES, RetrainJob, SlicingContext


def _cameras(n: int, seed: int = 0) -> tuple[CameraDemand, ...]:
    rng = np.random.default_rng(seed)
    return tuple(
        CameraDemand(f"cam{i}", random_problem(rng, num_apps=3, num_segments=5, candidates_per_app=4, num_rates=4))
        for i in range(n)
    )


@pytest.mark.parametrize(("total_gpu", "feasible"), [(0.1, 2), (0.3, 3), (2.0, 3)])
def test_shares_sum_to_total_and_each_camera_within_its_slice(total_gpu: float, feasible: int) -> None:
    ctx = PlannerContext(total_gpu, _cameras(3), retrain_jobs=(RetrainJob("cam0/car"), RetrainJob("cam1/car")))
    d = plan_round(ctx)
    assert d.inference_share + d.retrain_share == pytest.approx(total_gpu)
    assert 0 < d.inference_share <= total_gpu
    # these budgets let (some or all) cameras fit: each fitting schedule stays within its equal slice
    assert sum(s.feasible for s in d.schedules.values()) == feasible
    for schedule in d.schedules.values():
        assert not schedule.feasible or schedule.cost <= d.inference_share / 3 + 1e-12
    assert d.slicing is not None
    # every retraining window the share buys is granted (none when inference keeps the whole GPU)
    assert sum(w for _, w in d.slicing.grants) == int(d.retrain_share * ctx.round_s / ctx.window_s)


def test_a_budget_too_small_for_any_camera_still_plans_all_of_it_for_inference() -> None:
    ctx = PlannerContext(0.05, _cameras(3), retrain_jobs=(RetrainJob("cam0/car"),))
    d = plan_round(ctx)
    assert not any(s.feasible for s in d.schedules.values())  # no schedule fits 1/3 of 0.05
    assert d.inference_share == 0.05 and d.retrain_share == 0.0


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
@pytest.mark.parametrize("slicing", sorted(SLICING_POLICIES))
def test_every_registered_policy_plans_a_round(scheduler: str, slicing: str) -> None:
    jobs = (RetrainJob("cam0/car", (0.05, 0.04), 2), RetrainJob("cam1/car"))
    ctx = PlannerContext(2.0, _cameras(2, seed=1), retrain_jobs=jobs, scheduler=scheduler, slicing=slicing)
    d = plan_round(ctx)
    assert {s.policy for s in d.schedules.values()} == {SCHEDULERS[scheduler](_cameras(2, seed=1)[0].problem).policy}
    assert set(d.schedules) == {"cam0", "cam1"} and d.slicing is not None
    assert d.slicing == SLICING_POLICIES[slicing](SlicingContext(jobs, int(d.retrain_share * 10.0), window_s=1.0))


def test_without_retraining_jobs_inference_gets_everything() -> None:
    d = plan_round(PlannerContext(0.3, _cameras(2)))
    assert d.inference_share == 0.3 and d.retrain_share == 0 and d.slicing is None


def test_retraining_only_takes_what_costs_inference_within_tolerance() -> None:
    cams = _cameras(2, seed=3)
    full = plan_round(PlannerContext(10.0, cams)).objective
    d = plan_round(PlannerContext(10.0, cams, retrain_jobs=(RetrainJob("j"),), tolerance=0.01))
    assert d.objective >= full - 0.01
    assert d.retrain_share > 0  # a generous GPU leaves room for retraining


def test_decision_time_uses_the_injected_clock() -> None:
    ticks = iter([1.0, 1.25])
    d = plan_round(PlannerContext(0.3, _cameras(1)), clock=lambda: next(ticks))
    assert d.decision_ms == pytest.approx(250.0)


def test_context_validation() -> None:
    with pytest.raises(ValueError, match="total_gpu"):
        PlannerContext(0.0, _cameras(1))
    with pytest.raises(ValueError, match="inference_fractions"):
        PlannerContext(1.0, _cameras(1), inference_fractions=(0.5, 0.9))
    with pytest.raises(ValueError, match="slicing: unknown 'lottery'"):
        plan_round(PlannerContext(1.0, _cameras(1), retrain_jobs=(RetrainJob("j"),), slicing="lottery"))
