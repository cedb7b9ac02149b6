"""Seeded random scheduling problems with realistic shape, for tests and benchmarks.

Shape follows the Mainstream paper's measurements: a base model of S segments whose per-frame
latency is tens of milliseconds split unevenly across segments, a head that costs a few percent of
it, and per-app candidates whose frame accuracy stays almost flat while most of the network is
frozen and then falls steeply as only the last layers are left to train (Fig. 1: ~80% of the model
can be shared at little cost). Frame rates halve down from the stream rate (10, 5, 2.5, 1.25, ...).
The budget lies between Max-sharing at the lowest rate (always feasible) and No-sharing at the
highest rate (where everything fits), geometrically interpolated.
"""
from __future__ import annotations

import numpy as np

from stemcell.scheduling.cost import stem_cost
from stemcell.scheduling.problem import AppSpec, Candidate, ScheduleProblem


def _candidates(rng: np.random.Generator, num_segments: int, count: int) -> tuple[Candidate, ...]:
    """Candidates at `count` distinct branchpoints, always including 0 (no sharing) and S (max sharing)."""
    inner = rng.choice(np.arange(1, num_segments), size=max(count - 2, 0), replace=False) if count > 2 else []
    branchpoints = sorted({0, num_segments, *map(int, inner)}, reverse=True)[:count]
    recall0, precision0 = rng.uniform(0.75, 0.97, size=2)
    recall_drop, precision_drop = rng.uniform(0.10, 0.45), rng.uniform(0.05, 0.30)
    steepness = rng.uniform(1.5, 4.0)
    out = []
    for b in branchpoints:
        frozen = (b / num_segments) ** steepness
        r = float(np.clip(recall0 - recall_drop * frozen + rng.normal(0, 0.01), 0.01, 1.0))
        p = float(np.clip(precision0 - precision_drop * frozen + rng.normal(0, 0.01), 0.01, 1.0))
        out.append(Candidate(b, p, r, f"b{b}"))
    return tuple(out)


def random_problem(
    rng: np.random.Generator,
    *,
    num_apps: int,
    num_segments: int,
    candidates_per_app: int,
    num_rates: int,
    stream_fps: float = 10.0,
    budget_position: float | None = None,
) -> ScheduleProblem:
    """A random problem; `budget_position` in [0, 1] places the budget (default: uniform draw).

    0 puts it at the cost of Max-sharing at the lowest rate, 1 at No-sharing at the highest rate.
    """
    if not 2 <= candidates_per_app <= num_segments + 1:
        raise ValueError(f"candidates_per_app: must be in [2, num_segments + 1], got {candidates_per_app}")
    total_latency = rng.uniform(0.010, 0.040)
    segments = tuple(float(t) for t in total_latency * rng.dirichlet(np.full(num_segments, 2.0)))
    head = float(total_latency * rng.uniform(0.01, 0.05))
    rates = tuple(stream_fps / 2.0**i for i in reversed(range(num_rates)))
    apps = tuple(
        AppSpec(
            name=f"app{i}",
            candidates=_candidates(rng, num_segments, candidates_per_app),
            event_length_frames=float(np.exp(rng.uniform(np.log(2.0), np.log(60.0)))),
            weight=float(rng.uniform(0.5, 2.0)),
        )
        for i in range(num_apps)
    )
    ones = np.ones(num_apps)
    low = float(stem_cost(segments, head, num_segments * ones.astype(int), rates[0] * ones))
    high = float(stem_cost(segments, head, np.zeros(num_apps, dtype=int), rates[-1] * ones))
    position = rng.uniform() if budget_position is None else budget_position
    return ScheduleProblem(
        apps=apps,
        segment_latency_s=segments,
        head_latency_s=head,
        frame_rates=rates,
        stream_fps=stream_fps,
        budget=low * (high / low) ** position,
        correlation=float(rng.uniform(0.2, 0.8)),
    )
