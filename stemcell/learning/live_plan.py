"""Plans from live accuracy: the Planner's candidates carry the precision/recall measured against the
teacher on the camera's own samples, once there are enough of them, instead of the package's
validation figures (which, on a camera the package never saw, are far off).

Estimates come from the RetrainWorker (`stemcell.learning.live_stats.Estimate`): camera -> app ->
branchpoint -> estimate. A candidate with fewer than
`min_samples` live samples, or without a defined precision or recall yet (no positive sample or no
positive prediction), keeps its validation figures.

What replaces them is what the event-F1 model (`stemcell.scheduling.event_f1`) needs from *this*
camera: the candidate's frame recall, its *event* precision where a predicted event was seen (the
model takes event precision = frame precision, which fails on an unfamiliar scene: long stretches of
"yes" have low frame but high event precision; frame precision otherwise), its miss correlation
where enough events were seen (the problem's otherwise), and the app's event length, from the
camera's teacher-labelled events (the package's is its training videos'). Measured in
benchmarks/live_learning.py `--only plan` (README, issue 17).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from stemcell.learning.live_stats import Estimate
from stemcell.scheduling.planner import CameraDemand
from stemcell.scheduling.problem import AppSpec

Estimates = Mapping[str, Mapping[int, Estimate]]  # app -> branchpoint -> estimate


def usable(estimate: Estimate | None, min_samples: int) -> bool:
    return (estimate is not None and estimate.samples >= min_samples
            and estimate.precision is not None and estimate.recall is not None)


def planning_precision(estimate: Estimate) -> float:
    """The precision the event-F1 model should get: event precision once a predicted event was seen."""
    chosen = estimate.event_precision if estimate.event_precision is not None else estimate.precision
    return float(chosen)  # type: ignore[arg-type]


def live_app(spec: AppSpec, estimates: Mapping[int, Estimate], min_samples: int, stream_fps: float) -> AppSpec:
    """The app with live figures on every candidate that has enough live samples, and the camera's own
    event length (`stream_fps` frames per second) from the best-sampled such candidate's teacher events
    (the same samples for every candidate)."""
    live = {bp: e for bp, e in estimates.items() if usable(e, min_samples)}
    candidates = tuple(
        dataclasses.replace(c, precision=planning_precision(e), recall=float(e.recall),  # type: ignore[arg-type]
                            correlation=e.miss_correlation)
        if (e := live.get(c.branchpoint)) is not None else c
        for c in spec.candidates)
    timed = [e.event_length_s for e in sorted(live.values(), key=lambda e: e.samples) if e.event_length_s is not None]
    length = timed[-1] * stream_fps if timed else spec.event_length_frames
    return dataclasses.replace(spec, candidates=candidates, event_length_frames=float(length))


def with_live_estimates(demand: CameraDemand, estimates: Estimates, min_samples: int) -> CameraDemand:
    """One camera's planning problem with its live estimates in place of validation figures."""
    if not estimates:
        return demand
    fps = demand.problem.stream_fps
    apps = tuple(live_app(s, estimates[s.name], min_samples, fps) if s.name in estimates else s
                 for s in demand.problem.apps)
    return dataclasses.replace(demand, problem=dataclasses.replace(demand.problem, apps=apps))


def plan_fields(validation_f1: float | None, estimate: Estimate | None, min_samples: int) -> dict[str, Any]:
    """`GET /admin/plan`'s per camera app figures: validation F1 beside the live one (null until
    `min_samples` live samples; then with its interval), and the event figures the plan uses
    (`event_precision_live`, `miss_correlation_live`, `event_length_s_live`; null where not measured)."""
    live = estimate if usable(estimate, min_samples) and estimate is not None and estimate.f1 is not None else None

    def figure(name: str) -> float | None:
        value = getattr(live, name) if live is not None else None
        return None if value is None else round(float(value), 4)

    return {"f1_validation": validation_f1, "f1_live": figure("f1"),
            "f1_live_ci": [round(float(x), 4) for x in live.f1_ci] if live is not None and live.f1_ci else None,
            "live_samples": estimate.samples if estimate is not None else 0,
            "event_precision_live": figure("event_precision"), "miss_correlation_live": figure("miss_correlation"),
            "event_length_s_live": figure("event_length_s")}


def annotate_plan(plan: dict[str, Any], estimates: Mapping[str, Estimates], min_samples: int) -> dict[str, Any]:
    """Add `plan_fields` to every camera app of a stored plan (`cameras` -> id -> `apps` -> app)."""
    for camera, entry in plan.get("cameras", {}).items():
        for app, row in entry.get("apps", {}).items():
            found = estimates.get(camera, {}).get(app, {}).get(int(row["branchpoint"]))
            row.update(plan_fields(row.get("frame_f1"), found, min_samples))
    return plan
