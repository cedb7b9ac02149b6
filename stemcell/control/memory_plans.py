"""Camera changes checked against their executor's memory cap before the Planner applies them.

A share is also a memory cap (`torch.cuda.set_per_process_memory_fraction`), so a round that moves
apps to shallower branchpoints (more unshared upper segments) can push an executor's weights past
its share and fail with out-of-memory at run time. Before a change is pushed, this estimates the
executor's weights after it and asks `stemcell.sharing.memory_fit.fit_memory`: a change that fits
is kept, one that does not is made to fit by a deeper branchpoint for the apps it moves (within the
accuracy the policy allows), or refused (the camera keeps running what it runs).

The estimate is an upper bound: the executor's merged bytes now, plus the trainable part of every
candidate a change moves an app to (4 bytes per parameter), minus nothing (the old branch may still
serve other cameras). Merging more is not offered (the MergeWorker's job; its result already shows
in the measured merged bytes). Swapping is offered where the executor swaps (`executors.weight_cap_mb`:
its memory report carries the swap plan): it holds at most that many weight bytes on the device
whatever the plan, at a throughput cost priced by the share of the weights it would have to copy per
batch (a proxy: on a GPU the copy overlaps compute, so the loss is smaller where compute dominates).
Without a GPU size (CPU executors, unreachable ones) there is no cap to protect, as in
`planning.memory_floor`.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stemcell.control.camera_changes import CameraChange
from stemcell.control.contracts import AppRun, MemoryReport
from stemcell.package.manifest import CandidateEntry, Manifest
from stemcell.sharing.memory_fit import MemoryFitContext, MemoryFitDecision, MemoryOption, fit_memory

log = logging.getLogger(__name__)
PARAM_BYTES = 4  # float32 weights: an upper bound for executors running fp16


@dataclass(frozen=True)
class ExecutorMemory:
    """One executor as the fit sees it: its last memory report and its current share of one GPU."""

    report: MemoryReport | None
    share: float

    @property
    def cap_bytes(self) -> int | None:
        if self.report is None or not self.report.gpu_total_bytes:
            return None
        return int(self.share * self.report.gpu_total_bytes)


@dataclass(frozen=True)
class FittedChanges:
    apply: tuple[CameraChange, ...]  # as decided, or with deeper branchpoints so that they fit
    refused: tuple[dict[str, Any], ...]  # the changes dropped, with the decision's reason (plan view)
    swapped: dict[str, str] = dataclasses.field(default_factory=dict)  # camera -> why it runs with swapping


def _swap_option(ex: ExecutorMemory, weight_bytes: int) -> MemoryOption | None:
    """Swapping on an executor that swaps: at most its weight cap on the device, the rest copied per batch."""
    swap = ex.report.details.get("swap") if ex.report is not None else None
    if not swap:
        return None
    cap = int(swap["cap_bytes"])
    if weight_bytes <= cap:
        return None  # nothing to swap: the plan does not fit for its activations
    resident = max(0, cap - int(swap["staging_bytes"]))
    return MemoryOption("swap", cap, 0.0, resident / weight_bytes,
                        f"{weight_bytes - resident} of {weight_bytes} weight bytes copied in per batch")


def _candidate(manifest: Manifest, app: str, branchpoint: int) -> CandidateEntry | None:
    return next((c for c in manifest.candidates_for(app) if c.branchpoint == branchpoint), None)


def _added_bytes(manifest: Manifest, change: CameraChange) -> int:
    """Weights the executor may have to hold on top of today's: every candidate an app moves to."""
    total = 0
    for before, after in zip(change.before.apps, change.after.apps):
        cand = _candidate(manifest, after.app, after.branchpoint)
        if before.branchpoint != after.branchpoint and cand is not None:
            total += PARAM_BYTES * cand.trainable_params
    return total


def _deeper_options(manifest: Manifest, change: CameraChange, base_bytes: int) -> list[tuple[MemoryOption, CameraChange]]:
    """For each depth d: every moved app at its shallowest candidate at least d deep (never shallower
    than decided, never deeper than it runs now), priced by the worst app's held-out accuracy loss."""
    moved = {b.app: (b, a) for b, a in zip(change.before.apps, change.after.apps) if b.branchpoint != a.branchpoint}
    depths = sorted({c.branchpoint for app, (_, a) in moved.items() for c in manifest.candidates_for(app)
                     if c.branchpoint > a.branchpoint})
    out = []
    for depth in depths:
        apps, cost = [], 0.0
        for run in change.after.apps:
            if run.app not in moved:
                apps.append(run)
                continue
            decided = _candidate(manifest, run.app, run.branchpoint)
            deeper = next((c for c in manifest.candidates_for(run.app) if c.branchpoint >= depth), None)
            if deeper is None or decided is None or deeper.branchpoint >= moved[run.app][0].branchpoint:
                apps.append(moved[run.app][0])  # no candidate in between: the app keeps what it runs
                continue
            apps.append(AppRun(run.app, deeper.branchpoint, run.fps))
            cost = max(cost, 100.0 * (decided.accuracy - deeper.accuracy))
        fitted = CameraChange(change.before, dataclasses.replace(change.after, apps=tuple(apps)))
        if fitted.after == change.before:
            continue
        option = MemoryOption("deeper_branchpoint", base_bytes + _added_bytes(manifest, fitted), max(cost, 0.0),
                              detail=fitted.describe())
        out.append((option, fitted))
    return out


def fit_changes(changes: Sequence[CameraChange], manifest: Manifest, executors: Mapping[str, ExecutorMemory],
                role_of: Mapping[str, str], *, max_accuracy_cost: float = 1.0) -> FittedChanges:
    """Check the round's changes in order, each executor's estimate growing with the changes it accepted."""
    weights = {role: (ex.report.bytes_merged if ex.report else 0) for role, ex in executors.items()}
    apply, refused, swapped = [], [], {}
    for change in changes:
        role = role_of[change.camera_id]
        ex = executors.get(role, ExecutorMemory(None, 0.0))
        cap = ex.cap_bytes
        if cap is None or ex.report is None:
            apply.append(change)
            continue
        base = weights[role]
        options = _deeper_options(manifest, change, base)
        swap = _swap_option(ex, base + _added_bytes(manifest, change))
        if swap is not None:
            options.append((swap, change))
        ctx = MemoryFitContext(base + _added_bytes(manifest, change), ex.report.activation_peak, cap,
                               tuple(o for o, _ in options), max_accuracy_cost=max_accuracy_cost)
        decision: MemoryFitDecision = fit_memory(ctx)
        if decision.action == "refuse":
            log.warning("camera %s change %s refused on %s: %s", change.camera_id, change.describe(), role,
                        decision.reason)
            refused.append({**change.as_dict(), "outcome": "refused_memory", "reason": decision.reason})
            continue
        if decision.option is not None:
            change = next(c for o, c in options if o is decision.option)
            log.info("camera %s made to fit on %s: %s", change.camera_id, role, decision.reason)
            if decision.action == "swap":
                swapped[change.camera_id] = decision.reason
        weights[role] = base + _added_bytes(manifest, change)
        apply.append(change)
    return FittedChanges(tuple(apply), tuple(refused), swapped)
