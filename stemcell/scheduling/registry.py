"""Policies by name (schedulers, retraining slicing), so the planner, CLI, serve.yaml and benchmarks
select one from config, and tests walk every registered one."""
from __future__ import annotations

from collections.abc import Callable

from stemcell.scheduling.baselines import max_sharing, no_sharing
from stemcell.scheduling.exhaustive import exhaustive
from stemcell.scheduling.greedy import mainstream_greedy
from stemcell.scheduling.optimal import optimal
from stemcell.scheduling.problem import Schedule, ScheduleProblem
from stemcell.scheduling.slicing import SLICING_POLICIES, SlicingPolicy

Scheduler = Callable[[ScheduleProblem], Schedule]

SCHEDULERS: dict[str, Scheduler] = {
    "mainstream": mainstream_greedy,
    "max_sharing": max_sharing,
    "no_sharing": no_sharing,
    "exhaustive": exhaustive,
    "optimal": optimal,
}


def get_scheduler(name: str) -> Scheduler:
    """The scheduler registered as `name`; ValueError lists the known names."""
    try:
        return SCHEDULERS[name]
    except KeyError:
        raise ValueError(f"scheduler: unknown {name!r}; known: {sorted(SCHEDULERS)}") from None


def get_slicing(name: str) -> SlicingPolicy:
    """The retraining slicing policy registered as `name`; ValueError lists the known names."""
    try:
        return SLICING_POLICIES[name]
    except KeyError:
        raise ValueError(f"slicing: unknown {name!r}; known: {sorted(SLICING_POLICIES)}") from None
