"""Schedulers by name, so the planner, CLI and benchmarks select a policy from config."""
from __future__ import annotations

from collections.abc import Callable

from stemcell.scheduling.baselines import max_sharing, no_sharing
from stemcell.scheduling.exhaustive import exhaustive
from stemcell.scheduling.greedy import mainstream_greedy
from stemcell.scheduling.optimal import optimal
from stemcell.scheduling.problem import Schedule, ScheduleProblem

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
