"""Exact optimum for medium instances, by enumerating shared-rate profiles instead of combinations.

Brute force (`exhaustive.py`) grows as (candidates x rates)^apps and stops at about four apps. The
cost couples apps only through the rate each shared segment runs at. Fix a *profile*: a rate level
P_k for every segment, non-increasing in k (deeper segments are shared by a subset of the apps
sharing shallower ones). Under a profile the shared part costs sum_k seg_k rate(P_k), and an app may
take option (candidate with branchpoint b, level j) iff b = 0 or P_{b-1} >= j (every segment it
shares runs at least as fast as it needs). The apps are then independent apart from the remaining
budget, which is a multiple-choice knapsack solved exactly by merging per-app Pareto frontiers
(cost, objective). Every schedule is feasible under its own tight profile at its true cost, and
under any other admissible profile it costs at least as much, so the best over all profiles is the
optimum. There are C(S + R, R) profiles (126 for 5 segments and 4 rates).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from stemcell.scheduling.cost import own_cost
from stemcell.scheduling.exhaustive import SearchTooLarge
from stemcell.scheduling.problem import Schedule, ScheduleProblem
from stemcell.scheduling.tables import budget_limit, build_tables, cheapest_config, make_schedule

POLICY = "optimal"
DEFAULT_MAX_PROFILES = 20_000


def _profiles(num_segments: int, num_levels: int) -> np.ndarray:
    """All non-increasing level sequences of length S over -1 (segment unused) .. R-1, shape (P, S)."""
    rows = itertools.combinations_with_replacement(range(num_levels, -1, -1), num_segments)
    return np.array(list(rows), dtype=np.int64).reshape(-1, num_segments) - 1


# (cost, value, chosen option per app so far); sorted by cost, value strictly rising with it
Frontier = tuple[np.ndarray, np.ndarray, np.ndarray]


def _merge(frontier: Frontier, cost: np.ndarray, value: np.ndarray, labels: np.ndarray, cap: float) -> Frontier:
    """Add one app, whose options are `labels` with `cost` and `value`, to a Pareto frontier within `cap`."""
    f_cost, f_value, f_choice = frontier
    total = (f_cost[:, None] + cost[None, :]).ravel()
    gained = (f_value[:, None] + value[None, :]).ravel()
    index = np.flatnonzero(total <= cap)
    order = index[np.lexsort((-gained[index], total[index]))]
    best_before = np.maximum.accumulate(np.concatenate([[-np.inf], gained[order]]))[:-1]
    order = order[gained[order] > best_before]  # strictly better than anything cheaper
    rows, option = np.divmod(order, len(cost))
    return total[order], gained[order], np.concatenate([f_choice[rows], labels[option][:, None]], axis=1)


def optimal(problem: ScheduleProblem, *, max_profiles: int = DEFAULT_MAX_PROFILES) -> Schedule:
    """Optimal schedule via profile enumeration; raises SearchTooLarge beyond `max_profiles`."""
    tables = build_tables(problem)
    n, num_levels, num_segments = len(problem.apps), len(problem.frame_rates), problem.num_segments
    count = math.comb(num_segments + num_levels, num_levels)
    if count > max_profiles:
        raise SearchTooLarge(f"optimal search needs {count:,} shared-rate profiles > max_profiles={max_profiles:,}")
    rates = np.asarray(problem.frame_rates)
    rate_or_zero = np.concatenate([[0.0], rates])
    seg = np.asarray(problem.segment_latency_s)
    cap = budget_limit(problem.budget)
    options = []  # per app: (candidate, level, branchpoint, own cost, weighted F1) of every option
    for a in range(n):
        cands, levels = np.nonzero(tables.valid[a][:, None] & np.ones(num_levels, dtype=bool))
        b = tables.branchpoint[a, cands]
        own = own_cost(seg, problem.head_latency_s, b, rates[levels])
        options.append((cands, levels, b, own, tables.weight[a] * tables.f1[a, cands, levels]))

    best_value, best_choice = -np.inf, None
    for profile in _profiles(num_segments, num_levels):
        budget_left = cap - float(seg @ rate_or_zero[profile + 1])
        if budget_left < 0:
            continue
        frontier = (np.zeros(1), np.zeros(1), np.zeros((1, 0), dtype=np.int64))
        for cands, levels, b, cost, value in options:
            allowed = (b == 0) | (profile[np.maximum(b - 1, 0)] >= levels)
            frontier = _merge(frontier, cost[allowed], value[allowed], np.flatnonzero(allowed), budget_left)
            if len(frontier[0]) == 0:
                break
        if len(frontier[0]) and frontier[1][-1] > best_value:
            best_value, best_choice = frontier[1][-1], frontier[2][-1]
    if best_choice is None:
        return make_schedule(problem, tables, *cheapest_config(tables), POLICY)  # nothing fits the budget
    candidates = np.array([opt[0][i] for opt, i in zip(options, best_choice.tolist())])
    levels = np.array([opt[1][i] for opt, i in zip(options, best_choice.tolist())])
    return make_schedule(problem, tables, candidates, levels, POLICY)
