"""Planning in two levels, with schedules cached: what keeps a round under a second at 10,000 cameras.

One flat round cost 2.7 s to build every camera's problem and 9.6 s of Mainstream (55 s with
retraining jobs, which try five inference fractions) against a 10 s window, and gave every camera an
equal slice of the GPU (share / N) whatever its apps. Here:

1. Problems by class: cameras with the same apps, pins and stream rate have the same problem, so
   it is built once per class per round (`camera_demands`), not once per camera. Measured
   latencies are rounded to a 5% grid, so a round whose measurements moved by noise builds the same
   problems as the last one.
2. Global step: the GPU share is split across executors by their demand (each camera weighs its
   app-frames per second, `placement.camera_cost`); cost grows with executors, not cameras.
3. Per executor: its share is split over its cameras by the same weights (a 10-app camera gets more
   than a 3-app one), each budget rounded *down* to a 2% grid (so the plan never exceeds the GPU
   total), and Mainstream's greedy runs once per (problem, budget), cached across cameras, executors
   and rounds (`ScheduleCache`): only cameras whose inputs changed are really re-planned.

Pure: the Planner actor runs `TwoLevelPlanner.plan` in a worker thread, off its event loop.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from stemcell.control import planning
from stemcell.control.contracts import CameraSpec
from stemcell.control.placement import camera_cost
from stemcell.package.manifest import Manifest
from stemcell.scheduling.planner import (
    CameraDemand,
    PlanDecision,
    PlannerContext,
    plan_round,
)
from stemcell.scheduling.problem import Schedule, ScheduleProblem
from stemcell.scheduling.registry import get_scheduler

LATENCY_GRID = 0.05  # measured latencies are rounded to this relative grid before building problems
BUDGET_GRID = 0.02  # camera budgets are rounded down to this relative grid (cache hits, never over)


def _grid(value: float, step: float, down: bool = False) -> float:
    """`value` on the geometric grid (1 + step)^k (rounded down with `down`); 0 stays 0."""
    if value <= 0:
        return 0.0
    k = math.log(value) / math.log1p(step)
    return (1.0 + step) ** (math.floor(k + 1e-9) if down else round(k))


def camera_demands(manifest: Manifest, cameras: Sequence[CameraSpec], rows: Sequence[tuple[str, float]], *,
                   correlation: float) -> tuple[CameraDemand, ...]:
    """Every camera's problem, built once per class (apps, pins, stream rate) from gridded latencies."""
    gridded = [(segment, _grid(ms, LATENCY_GRID)) for segment, ms in rows]
    by_class: dict[tuple, ScheduleProblem] = {}
    out = []
    for camera in cameras:
        key = (tuple((a.app, a.branchpoint if a.pinned else None) for a in camera.apps), camera.stream_fps)
        problem = by_class.get(key)
        if problem is None:
            problem = by_class[key] = planning.camera_demand(manifest, camera, gridded, correlation=correlation).problem
        out.append(CameraDemand(camera.camera_id, problem))
    return tuple(out)


@dataclass
class ScheduleCache:
    """Schedules by (problem, budget): the same apps, pins, rates and latencies at the same budget get
    the same schedule, so it is computed once. Bounded: cleared when full (a new fleet shape)."""

    decide: Callable[[ScheduleProblem], Schedule]
    max_entries: int = 100_000
    hits: int = 0
    misses: int = 0
    _schedules: dict[tuple[ScheduleProblem, float], Schedule] = field(default_factory=dict)

    def schedule(self, problem: ScheduleProblem, budget: float) -> Schedule:
        key = (problem, budget)
        found = self._schedules.get(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        if len(self._schedules) >= self.max_entries:
            self._schedules.clear()
        found = self._schedules[key] = self.decide(dataclasses.replace(problem, budget=budget))
        return found


def split_by_weight(total: float, weights: Mapping[str, float]) -> dict[str, float]:
    """`total` split in proportion to `weights` (all zero: evenly); the parts sum to `total`."""
    mass = sum(weights.values())
    if not weights:
        return {}
    return {k: total * (w / mass if mass > 0 else 1.0 / len(weights)) for k, w in weights.items()}


@dataclass
class TwoLevelPlanner:
    """Global split by executor demand, then per-executor Mainstream over cached schedules."""

    scheduler: str = "mainstream"
    cache: ScheduleCache | None = None

    def __post_init__(self) -> None:
        if self.cache is None:
            self.cache = ScheduleCache(get_scheduler(self.scheduler))

    def inference(self, demands: Sequence[CameraDemand], roles: Mapping[str, str],
                  weights: Mapping[str, float]) -> Callable[[float], tuple[dict[str, Schedule], float]]:
        """The inference step of a round for `plan_round`: share -> (camera -> schedule, mean objective).
        `roles` maps each camera to its executor role, `weights` each camera to its demand."""
        # executor -> (problem, weight) group -> its cameras: cameras of one class and weight on one executor
        # get one budget, so one schedule (and one cache lookup) serves them all
        groups: dict[str, dict[tuple[int, float], list[CameraDemand]]] = {}
        for d in demands:
            groups.setdefault(roles[d.camera_id], {}).setdefault((id(d.problem), weights[d.camera_id]), []).append(d)
        role_weight = {r: sum(w * len(ds) for (_, w), ds in g.items()) for r, g in groups.items()}

        def plans(share: float) -> tuple[dict[str, Schedule], float]:
            out: dict[str, Schedule] = {}
            for role, role_share in split_by_weight(share, role_weight).items():
                for (_, weight), cams in groups[role].items():
                    budget = role_share * weight / role_weight[role] if role_weight[role] > 0 else 0.0
                    schedule = self.cache.schedule(cams[0].problem, _grid(budget, BUDGET_GRID, down=True))
                    out.update((d.camera_id, schedule) for d in cams)
            return out, sum(s.objective for s in out.values()) / max(1, len(out))

        return plans

    def plan(self, ctx: PlannerContext, cameras: Sequence[CameraSpec], roles: Mapping[str, str]) -> PlanDecision:
        """One round (`plan_round` with this inference step): `ctx.cameras` are the demands of `cameras`."""
        weights = {c.camera_id: camera_cost(c) for c in cameras}
        return plan_round(ctx, inference=self.inference(ctx.cameras, roles, weights))
