"""Brute-force reference scheduler for tiny instances: try every combination, keep the best in budget.

It is the ground truth the other schedulers are tested against, so it is deliberately the obvious
algorithm: enumerate every (candidate, rate) choice for every app, price each combination with
`stem_cost`, keep the highest objective within budget (ties: the cheaper). (candidates x rates)^apps
grows fast, so instances beyond `max_combinations` are refused; `optimal.py` solves larger ones
exactly by a smarter enumeration.
"""
from __future__ import annotations

import math

import numpy as np

from stemcell.scheduling.cost import stem_cost
from stemcell.scheduling.problem import Schedule, ScheduleProblem
from stemcell.scheduling.tables import build_tables, cheapest_config, make_schedule, within_budget

POLICY = "exhaustive"
DEFAULT_MAX_COMBINATIONS = 2_000_000
_CHUNK = 1 << 16  # combinations priced per numpy batch (bounded memory)
_TIE = 1e-12  # objectives closer than this are equal


class SearchTooLarge(ValueError):
    """The instance is larger than an exact search is allowed to enumerate."""


def exhaustive(problem: ScheduleProblem, *, max_combinations: int = DEFAULT_MAX_COMBINATIONS) -> Schedule:
    """Optimal schedule by enumerating every combination; raises SearchTooLarge beyond `max_combinations`."""
    tables = build_tables(problem)
    n, num_levels = len(problem.apps), len(problem.frame_rates)
    sizes = [len(a.candidates) * num_levels for a in problem.apps]
    total = math.prod(sizes)
    if total > max_combinations:
        raise SearchTooLarge(
            f"exhaustive search needs {total:,} combinations ({' x '.join(map(str, sizes))} options per app) "
            f"> max_combinations={max_combinations:,}; use `optimal` or `mainstream_greedy` for instances this large"
        )
    apps = np.arange(n)
    radix = np.array(sizes, dtype=np.int64)
    place = np.concatenate([[1], np.cumprod(radix[:-1])])  # mixed-radix place values: flat index -> option per app
    rates = np.asarray(problem.frame_rates)
    best: tuple[float, float, int] | None = None  # (objective, cost, flat index) of the best feasible so far
    for start in range(0, total, _CHUNK):
        flat = np.arange(start, min(start + _CHUNK, total), dtype=np.int64)
        candidates, levels = np.divmod((flat[:, None] // place) % radix, num_levels)
        branchpoints = tables.branchpoint[apps, candidates]
        cost = stem_cost(problem.segment_latency_s, problem.head_latency_s, branchpoints, rates[levels])
        objective = tables.f1[apps, candidates, levels] @ tables.weight
        feasible = within_budget(cost, problem.budget)
        if not feasible.any():
            continue
        top = float(objective[feasible].max())
        i = int(np.where(feasible & (objective >= top - _TIE), cost, np.inf).argmin())
        if best is None or top > best[0] + _TIE or (top >= best[0] - _TIE and cost[i] < best[1]):
            best = (top, float(cost[i]), int(flat[i]))
    if best is None:
        return make_schedule(problem, tables, *cheapest_config(tables), POLICY)  # nothing fits the budget
    candidates, levels = np.divmod((best[2] // place) % radix, num_levels)
    return make_schedule(problem, tables, candidates, levels, POLICY)
