"""One planning round of the Planner: split the GPU between inference and retraining, run
Mainstream per camera on the inference share, and RECL's gain-driven slicing on the rest
(both by name from `scheduling.registry`).

A plain function of a frozen context (`plan_round(ctx) -> PlanDecision`), as Ray Serve's
autoscaling policies are: the Planner actor builds the context from measured costs/accuracies,
calls this, persists the decision and applies it make-before-break (`reallocation.py`).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from stemcell.scheduling.problem import Schedule, ScheduleProblem
from stemcell.scheduling.registry import get_scheduler, get_slicing
from stemcell.scheduling.slicing import RetrainJob, SliceDecision, SlicingContext


@dataclass(frozen=True)
class CameraDemand:
    camera_id: str  # the stream
    problem: ScheduleProblem  # its apps/candidates/latencies; the budget field is ignored (the planner sets it)


@dataclass(frozen=True)
class PlannerContext:
    total_gpu: float  # GPU-seconds per second the cluster offers (e.g. 2.0 for two GPUs)
    cameras: tuple[CameraDemand, ...]  # every stream to serve
    retrain_jobs: tuple[RetrainJob, ...] = ()  # continuous-learning jobs competing for the rest
    inference_fractions: tuple[float, ...] = (0.5, 0.625, 0.75, 0.875, 1.0)  # splits tried, ascending
    tolerance: float = 0.01  # inference objective we may give up (absolute mean F1) to free GPU for retraining
    window_s: float = 1.0  # retraining micro-window length (seconds of the retraining share)
    round_s: float = 10.0  # planning period: retraining windows per round = share * round_s / window_s
    scheduler: str = "mainstream"  # inference policy name (see scheduling.registry)
    slicing: str = "gain"  # retraining micro-window policy name (`SLICING_POLICIES`; RECL's is "gain")

    def __post_init__(self) -> None:
        if self.total_gpu <= 0:
            raise ValueError(f"total_gpu must be > 0, got {self.total_gpu}")
        if not self.cameras:
            raise ValueError("cameras: at least one camera is needed to plan")
        fr = self.inference_fractions
        if not fr or any(not 0 < f <= 1 for f in fr) or list(fr) != sorted(fr) or fr[-1] != 1.0:
            raise ValueError(f"inference_fractions must ascend within (0, 1] and end at 1.0, got {fr}")


@dataclass(frozen=True)
class PlanDecision:
    inference_share: float  # GPU-seconds/s given to inference (StemExecutors)
    retrain_share: float  # GPU-seconds/s given to retraining (RetrainWorkers)
    schedules: dict[str, Schedule]  # camera -> Mainstream schedule on its slice of the inference share
    objective: float  # mean objective over cameras
    slicing: SliceDecision | None  # micro-window grants for the retraining jobs (None: no jobs)
    decision_ms: float  # wall time of this planning round (logged, exported as a metric)


def _inference_plans(ctx: PlannerContext, share: float) -> tuple[dict[str, Schedule], float]:
    """Mainstream per camera, each camera getting an equal slice of `share`."""
    decide = get_scheduler(ctx.scheduler)
    per_camera = share / len(ctx.cameras)
    plans = {c.camera_id: decide(dataclasses.replace(c.problem, budget=per_camera)) for c in ctx.cameras}
    return plans, sum(s.objective for s in plans.values()) / len(plans)


InferencePlans = Callable[[float], tuple[dict[str, Schedule], float]]  # share -> (schedules, mean objective)


def plan_round(ctx: PlannerContext, clock: Callable[[], float] = time.perf_counter, *,
               inference: InferencePlans | None = None) -> PlanDecision:
    """Smallest inference share within `tolerance` of the best objective; the rest retrains.

    Without retraining jobs all of the GPU goes to inference. With jobs, inference keeps the
    smallest tried fraction whose mean event F1 is within `tolerance` of what the full GPU would
    give, so retraining gets GPU time only where inference barely notices. `inference` plans the
    cameras on a share (default: an equal slice each; the Planner's is
    `stemcell.control.two_level.TwoLevelPlanner`).
    """
    start = clock()
    infer = inference or (lambda share: _inference_plans(ctx, share))
    best_plans, best = infer(ctx.total_gpu)
    share, plans, objective = ctx.total_gpu, best_plans, best
    if ctx.retrain_jobs:
        for fraction in ctx.inference_fractions:
            candidate_plans, candidate = infer(fraction * ctx.total_gpu)
            if candidate >= best - ctx.tolerance and all(s.feasible for s in candidate_plans.values()):
                share, plans, objective = fraction * ctx.total_gpu, candidate_plans, candidate
                break
    retrain = ctx.total_gpu - share
    slicing = None
    if ctx.retrain_jobs:
        windows = int(retrain * ctx.round_s / ctx.window_s)
        slicing = get_slicing(ctx.slicing)(SlicingContext(ctx.retrain_jobs, windows, window_s=ctx.window_s))
    return PlanDecision(share, retrain, plans, objective, slicing, 1e3 * (clock() - start))
