"""The two static policies Mainstream is compared against, both at one common frame rate.

* Max-sharing: every app at its deepest-branchpoint candidate (only its head is its own), so the
  whole base runs once per frame; cheap, but each app gets its least specialised model.
* No-sharing: every app at its shallowest candidate (b = 0: a fully fine-tuned private model); most
  accurate per frame, but n full models compete for the GPU and the frame rate collapses.
Each picks the highest rate on the menu whose cost fits the budget (the lowest rate, flagged
infeasible, when none does).
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from stemcell.scheduling.cost import stem_cost
from stemcell.scheduling.problem import Schedule, ScheduleProblem
from stemcell.scheduling.tables import ProblemTables, build_tables, make_schedule, preferred_candidates, within_budget


def uniform_rate_config(
    problem: ScheduleProblem, tables: ProblemTables, prefer: Literal["deepest", "shallowest"]
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(candidates, rate levels, feasible) of the best common-rate configuration for `prefer`."""
    n, apps = len(problem.apps), np.arange(len(problem.apps))
    for level in reversed(range(len(problem.frame_rates))):
        candidates = preferred_candidates(tables, level, prefer)
        branchpoints = tables.branchpoint[apps, candidates]
        rates = np.full(n, problem.frame_rates[level])
        cost = stem_cost(problem.segment_latency_s, problem.head_latency_s, branchpoints, rates)
        if within_budget(cost, problem.budget):
            return candidates, np.full(n, level), True
    return candidates, np.zeros(n, dtype=np.int64), False


def _uniform_rate(problem: ScheduleProblem, prefer: Literal["deepest", "shallowest"], policy: str) -> Schedule:
    tables = build_tables(problem)
    candidates, levels, _ = uniform_rate_config(problem, tables, prefer)
    return make_schedule(problem, tables, candidates, levels, policy)


def max_sharing(problem: ScheduleProblem) -> Schedule:
    """Every app at its deepest candidate, at the highest common frame rate within budget."""
    return _uniform_rate(problem, "deepest", "max_sharing")


def no_sharing(problem: ScheduleProblem) -> Schedule:
    """Every app at its shallowest candidate, at the highest common frame rate within budget."""
    return _uniform_rate(problem, "shallowest", "no_sharing")
