"""Per-problem lookup tables shared by every scheduler, and the one way to turn indices into a Schedule.

Event F1 depends only on (app, candidate, frame rate), never on the other apps, so it is computed
once per problem as an (apps x candidates x rates) table; schedulers then work on integer indices
and never call the event model inside their search loops.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from stemcell.scheduling.cost import stem_cost
from stemcell.scheduling.event_f1 import event_precision, event_recall, harmonic_f1
from stemcell.scheduling.problem import AppChoice, Schedule, ScheduleProblem

_PAD_F1 = -1.0  # F1 of padding slots: below every real F1, so no search ever prefers one
_BUDGET_RTOL = 1e-9  # relative slack on "cost <= budget" so float rounding never flips feasibility


def budget_limit(budget: float) -> float:
    """The largest cost accepted as within `budget` (float rounding must never flip feasibility)."""
    return budget * (1.0 + _BUDGET_RTOL) + 1e-15


def within_budget(cost: float | np.ndarray, budget: float) -> bool | np.ndarray:
    """cost <= budget up to float rounding (one definition for every scheduler)."""
    return cost <= budget_limit(budget)


@dataclass(frozen=True, eq=False)
class ProblemTables:
    """Padded per-app arrays (apps with fewer candidates are padded; `valid` marks real slots)."""

    branchpoint: np.ndarray  # (n, C) int: candidate branchpoints, -1 in padding
    valid: np.ndarray  # (n, C) bool: slot holds a real candidate
    f1: np.ndarray  # (n, C, R): modelled event F1 per candidate and rate level, -1 in padding
    recall: np.ndarray  # (n, C, R): modelled event recall
    precision: np.ndarray  # (n, C): modelled event precision (rate-independent)
    weight: np.ndarray  # (n,): app weights normalised to sum to 1 (objective = weight . f1)
    shallower: np.ndarray  # (n, C, R) int: nearest shallower candidate with higher F1 at that rate, -1 if none


def build_tables(problem: ScheduleProblem) -> ProblemTables:
    """Compute every app's event-F1 table and its improving shallower step, vectorised over all apps."""
    n, width = len(problem.apps), max(len(a.candidates) for a in problem.apps)
    branchpoint = np.full((n, width), -1, dtype=np.int64)
    frame_p = np.zeros((n, width))
    frame_r = np.zeros((n, width))
    rho = np.full((n, width), problem.correlation)  # a candidate's own (measured live) where it has one
    for i, app in enumerate(problem.apps):
        for c, cand in enumerate(app.candidates):
            branchpoint[i, c], frame_p[i, c], frame_r[i, c] = cand.branchpoint, cand.precision, cand.recall
            rho[i, c] = problem.correlation if cand.correlation is None else cand.correlation
    valid = branchpoint >= 0
    stride = problem.stream_fps / np.asarray(problem.frame_rates)
    length = np.array([a.event_length_frames for a in problem.apps])
    recall = event_recall(frame_r[:, :, None], length[:, None, None], stride[None, None, :], rho[:, :, None])
    precision = event_precision(frame_p)
    f1 = np.where(valid[:, :, None], harmonic_f1(precision[:, :, None], recall), _PAD_F1)
    weight = np.array([a.weight for a in problem.apps])

    # For each (candidate c, rate j): among candidates c2 sharing less (b2 < b) that beat c's F1 at j,
    # take the deepest one (ties: higher F1). Key b2 * 2 + F1 orders by b2 first since F1 <= 1.
    better = (
        (branchpoint[:, None, :, None] < branchpoint[:, :, None, None])
        & valid[:, None, :, None]
        & (f1[:, None, :, :] > f1[:, :, None, :])
    )
    key = np.where(better, 2.0 * branchpoint[:, None, :, None] + f1[:, None, :, :], -np.inf)
    shallower = np.where(better.any(axis=2), key.argmax(axis=2), -1)
    return ProblemTables(branchpoint, valid, f1, recall, precision, weight / weight.sum(), shallower)


def preferred_candidates(tables: ProblemTables, level: int, prefer: Literal["deepest", "shallowest"]) -> np.ndarray:
    """Per app, the candidate with the deepest (or shallowest) branchpoint, best F1 at `level` among ties."""
    sign = 1.0 if prefer == "deepest" else -1.0
    key = np.where(tables.valid, sign * 2.0 * tables.branchpoint + tables.f1[:, :, level], -np.inf)
    return key.argmax(axis=1)


def cheapest_config(tables: ProblemTables) -> tuple[np.ndarray, np.ndarray]:
    """(candidates, rate levels) of the cheapest schedule: deepest candidates at the lowest rate.

    Cost never decreases when an app shares less or samples more (`cost.py`), so this is the global
    minimum: the plan returned, flagged infeasible, when nothing fits the budget.
    """
    candidates = preferred_candidates(tables, 0, "deepest")
    return candidates, np.zeros(len(candidates), dtype=np.int64)


def objective_of(tables: ProblemTables, candidates: np.ndarray, levels: np.ndarray) -> float:
    """Weighted mean event F1 of one configuration."""
    return float(tables.weight @ tables.f1[np.arange(len(candidates)), candidates, levels])


def make_schedule(
    problem: ScheduleProblem, tables: ProblemTables, candidates: np.ndarray, levels: np.ndarray, policy: str
) -> Schedule:
    """Build the Schedule for per-app candidate indices and rate levels (cost recomputed from scratch)."""
    apps = np.arange(len(problem.apps))
    rates = np.asarray(problem.frame_rates)[levels]
    branchpoints = tables.branchpoint[apps, candidates]
    cost = float(stem_cost(problem.segment_latency_s, problem.head_latency_s, branchpoints, rates))
    choices = tuple(
        AppChoice(
            app=app.name,
            candidate=int(c),
            branchpoint=int(branchpoints[i]),
            fps=float(rates[i]),
            predicted_f1=float(tables.f1[i, c, j]),
            event_recall=float(tables.recall[i, c, j]),
            event_precision=float(tables.precision[i, c]),
        )
        for i, (app, c, j) in enumerate(zip(problem.apps, candidates.tolist(), levels.tolist()))
    )
    return Schedule(
        choices=choices,
        cost=cost,
        budget=problem.budget,
        objective=objective_of(tables, candidates, levels),
        policy=policy,
        feasible=bool(within_budget(cost, problem.budget)),
    )
