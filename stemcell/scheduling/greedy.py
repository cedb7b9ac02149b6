"""Mainstream's M-Scheduler: greedy cost-benefit refinement starting from Max-sharing.

The paper's greedy starts from the cheapest schedule (every app at its deepest-branchpoint
candidate and the lowest frame rate). Each step considers, for every app, two moves:
  * share less: switch to the nearest shallower candidate that has a higher event F1 at the app's
    current rate (shallower candidates that are no better at this rate only cost more, and skipping
    them keeps one noisy validation number from stalling the app);
  * sample more: go one level up the frame-rate menu.
Among moves that improve the objective and keep cost within budget, one that costs nothing (or
saves) is taken first (largest gain), else the one with the largest gain per added cost. It stops
when no such move exists.

Cost has economies of scale (a shared segment is paid once, at the top rate of its sharers), which
a one-app-at-a-time ascent cannot see: the first app to raise its rate pays for the whole shared
stem, and an app leaving a stem still shared by others pays for its own copy. So the same ascent
is also run from both ends of the sharing spectrum, Max-sharing and No-sharing, each at the lowest
rate and at its best common rate within budget, and the best result is returned. The ascent never
lowers the objective, so Mainstream is never worse than either static baseline (on the 200 random
instances of benchmarks/scheduler_quality.py they lift the worst case from 0.84 to 0.96 of optimal). Move gains and
own-part prices are precomputed per (app, candidate, rate) and the shared part comes from
`IncrementalCost`, so a step is O(n) numpy work plus O(S + R) Python.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stemcell.scheduling.baselines import uniform_rate_config
from stemcell.scheduling.cost import IncrementalCost, own_cost, stem_cost
from stemcell.scheduling.problem import Schedule, ScheduleProblem
from stemcell.scheduling.tables import (
    ProblemTables,
    budget_limit,
    build_tables,
    cheapest_config,
    make_schedule,
    objective_of,
    preferred_candidates,
    within_budget,
)

POLICY = "mainstream"
_MIN_GAIN = 1e-12  # objective gains below this are float noise, not improvements


@dataclass(frozen=True, eq=False)
class _Moves:
    """For every (app, candidate, rate level): where its moves lead, what they gain and own-cost."""

    target: np.ndarray  # (n, C, R) candidate after "share less" (itself when there is none)
    target_b: np.ndarray  # (n, C, R) that candidate's branchpoint
    gain: np.ndarray  # (2, n, C, R) weighted objective gain of [share less, sample more]; 0 = no move
    own: np.ndarray  # (2, n, C, R) change of the app's own-part cost; inf = no improving move


def _moves(problem: ScheduleProblem, tables: ProblemTables) -> _Moves:
    n, width, num_levels = tables.f1.shape
    apps, cands, levels = np.ogrid[:n, :width, :num_levels]
    up = np.minimum(levels + 1, num_levels - 1)
    target = np.where(tables.shallower >= 0, tables.shallower, cands)
    target_b = tables.branchpoint[apps, target]
    b = tables.branchpoint[:, :, None]
    rates = np.asarray(problem.frame_rates)
    here = own_cost(problem.segment_latency_s, problem.head_latency_s, b, rates[levels])
    weight = tables.weight[:, None, None]
    gain = np.stack([tables.f1[apps, target, levels] - tables.f1, tables.f1[apps, cands, up] - tables.f1]) * weight
    own_up = own_cost(problem.segment_latency_s, problem.head_latency_s, b, rates[up]) - here
    own_shallower = own_cost(problem.segment_latency_s, problem.head_latency_s, target_b, rates[levels]) - here
    own = np.stack([own_shallower, own_up])
    return _Moves(target, target_b, gain, np.where(gain > _MIN_GAIN, own, np.inf))  # inf: never within budget


def _ascend(
    problem: ScheduleProblem, tables: ProblemTables, moves: _Moves, candidates: np.ndarray, levels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy cost-benefit ascent from a within-budget configuration; returns the final one."""
    n = len(candidates)
    apps = np.arange(n)
    cand, lvl = candidates.copy(), levels.copy()
    cost = IncrementalCost(
        problem.segment_latency_s, problem.head_latency_s, problem.frame_rates, tables.branchpoint[apps, cand], lvl
    )
    limit = budget_limit(problem.budget)
    tgt, tgt_b = moves.target[apps, cand, lvl], moves.target_b[apps, cand, lvl]
    gain, own = moves.gain[:, apps, cand, lvl].ravel(), moves.own[:, apps, cand, lvl].ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        while True:
            delta = own + np.concatenate((cost.shared_shallower(tgt_b), cost.shared_rate_up()))
            allowed = delta <= limit - cost.total
            if not allowed.any():
                return cand, lvl
            free = allowed & (delta <= 0.0)
            score = np.where(free, gain, -np.inf) if free.any() else np.where(allowed, gain / delta, -np.inf)
            pick = int(score.argmax())
            a = pick % n
            if pick < n:
                cand[a] = tgt[a]
            else:
                lvl[a] += 1
            c, j = int(cand[a]), int(lvl[a])
            cost.move(a, int(tables.branchpoint[a, c]), j, float(delta[pick]))
            tgt[a], tgt_b[a] = moves.target[a, c, j], moves.target_b[a, c, j]
            gain[a], own[a] = moves.gain[0, a, c, j], moves.own[0, a, c, j]
            gain[n + a], own[n + a] = moves.gain[1, a, c, j], moves.own[1, a, c, j]


def mainstream_greedy(problem: ScheduleProblem, *, baseline_seeds: bool = True) -> Schedule:
    """Plan branchpoints and frame rates with Mainstream's greedy; infeasible budget -> cheapest plan.

    `baseline_seeds=False` runs only the paper's ascent from Max-sharing at the lowest rate (for
    ablations); the default also ascends from the Max-/No-sharing starts above and keeps the best.
    """
    tables = build_tables(problem)
    start = cheapest_config(tables)  # the paper's start: Max-sharing at the lowest rate
    branchpoints = tables.branchpoint[np.arange(len(problem.apps)), start[0]]
    cheapest = stem_cost(problem.segment_latency_s, problem.head_latency_s, branchpoints, problem.frame_rates[0])
    if not within_budget(cheapest, problem.budget):
        return make_schedule(problem, tables, *start, POLICY)  # even the cheapest plan is over budget
    moves = _moves(problem, tables)
    seeds = [start]
    for prefer in ("deepest", "shallowest") if baseline_seeds else ():
        candidates, levels, feasible = uniform_rate_config(problem, tables, prefer)
        if not feasible:
            continue
        lowest = (preferred_candidates(tables, 0, prefer), np.zeros_like(levels))  # fits: cost rises with rate
        for seed in (lowest, (candidates, levels)):
            if not any(np.array_equal(seed[0], c) and np.array_equal(seed[1], lv) for c, lv in seeds):
                seeds.append(seed)
    results = [_ascend(problem, tables, moves, c, lv) for c, lv in seeds]
    best = max(results, key=lambda cl: objective_of(tables, *cl))  # first wins ties: the paper's own start
    return make_schedule(problem, tables, *best, POLICY)
