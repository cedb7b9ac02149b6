"""Planner round: GPU split respects the total; retraining gets only what inference can spare."""
from __future__ import annotations

import numpy as np
import pytest

from stemcell.scheduling import random_problem
from stemcell.scheduling.planner import CameraDemand, PlannerContext, plan_round
from stemcell.scheduling.slicing import RetrainJob


def _cameras(n: int, seed: int = 0) -> tuple[CameraDemand, ...]:
    rng = np.random.default_rng(seed)
    return tuple(
        CameraDemand(f"cam{i}", random_problem(rng, num_apps=3, num_segments=5, candidates_per_app=4, num_rates=4))
        for i in range(n)
    )


@pytest.mark.parametrize("total_gpu", [0.05, 0.3, 2.0])
def test_shares_sum_to_total_and_each_camera_within_its_slice(total_gpu: float) -> None:
    ctx = PlannerContext(total_gpu, _cameras(3), retrain_jobs=(RetrainJob("cam0/car"), RetrainJob("cam1/car")))
    d = plan_round(ctx)
    assert d.inference_share + d.retrain_share == pytest.approx(total_gpu)
    assert 0 < d.inference_share <= total_gpu
    for schedule in d.schedules.values():
        assert not schedule.feasible or schedule.cost <= d.inference_share / 3 + 1e-12
    assert d.slicing is not None
    assert sum(w for _, w in d.slicing.grants) <= int(d.retrain_share * ctx.round_s / ctx.window_s)


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
