"""The Planner's pure parts: demand from what runs and what was measured, capacity, the plan view.

`actors.planner` only gathers these inputs over Ray and applies the result; everything that decides
a number lives here, as functions of frozen values, so it is unit tested without Ray.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from stemcell.control.camera_changes import respect_pins
from stemcell.control.contracts import CameraSpec, ExecutorStats, MemoryReport, ShareDecision, WorkerStats
from stemcell.package.manifest import Manifest
from stemcell.package.planning import DEFAULT_FRAME_RATES, problem_from_manifest
from stemcell.scheduling.planner import CameraDemand, PlanDecision, PlannerContext
from stemcell.scheduling.shares import ShareContext, measured_latency, placeable_shares, role_shares, stable_shares
from stemcell.scheduling.slicing import RetrainJob

_EPS = 1e-9
GAIN_HISTORY = 8  # phases of a job's gain history the slicing looks at


@dataclass(frozen=True)
class RoundInputs:
    """What one planning round starts from."""

    context: PlannerContext  # the frozen input of `plan_round`
    job_roles: Mapping[str, str]  # retraining job id -> the worker role running it
    memory_floors: Mapping[str, float]  # executor role -> least share its measured memory allows
    cameras: tuple[CameraSpec, ...] = ()  # the cameras planned (their demands are `context.cameras`)


def retrain_jobs(role: str, stats: WorkerStats | None) -> dict[str, tuple[str, RetrainJob]]:
    """A RetrainWorker's stats as the slicing sees them: job id -> (worker role, job).

    A job with live samples reports its agreement drop since its last update: a round is a fresh
    update window, and the drop is the prior of its first window (`blended_gain_curve`); its gains
    measured in earlier rounds were measured before that drop and are superseded by it. A job without
    one (samples uploaded by an edge only) is planned from its measured gains per training phase,
    `updates` being how many phases it ran (at least as many as gains are known)."""
    out = {}
    for job in (stats.jobs if stats is not None else ()):
        gains = tuple(job.recent_gains)[-GAIN_HISTORY:]
        out[job.job_id] = (role, RetrainJob(job.job_id, prior_gain=job.drop) if job.drop is not None
                           else RetrainJob(job.job_id, gains, max(job.updates, len(gains))))
    return out


def latency_rows(stats: Sequence[ExecutorStats | None]) -> list[tuple[str, float]]:
    """(segment, measured ms per frame) from every reachable executor, for `measured_latency`."""
    return [(row.segment, row.ewma_ms_per_frame) for st in stats if st is not None for row in st.segment_latency]


def camera_demand(manifest: Manifest, camera: CameraSpec, rows: Sequence[tuple[str, float]], *,
                  correlation: float) -> CameraDemand:
    """One camera's scheduling problem: its apps' candidates from the package, the frame-rate menu up to
    its stream rate, latencies as measured where measured, pinned apps restricted to their pin."""
    fps = camera.stream_fps
    rates = [r for r in DEFAULT_FRAME_RATES if r <= fps] or [fps]
    problem = problem_from_manifest(manifest, [a.app for a in camera.apps], 0.0, frame_rates=rates,
                                    batch_size=max(manifest.latency.batch_sizes), correlation=correlation)
    names = [b.removeprefix("after_") for b in manifest.base.branchpoints[1:]]
    problem = dataclasses.replace(measured_latency(problem, names, rows), stream_fps=max(fps, rates[-1]))
    return CameraDemand(camera.camera_id, respect_pins(problem, camera))


def memory_floor(report: MemoryReport | None, *, margin: float = 1.25) -> float:
    """Least GPU share an executor can run with, from its measured memory report.

    Why: a share is also a memory cap (`torch.cuda.set_per_process_memory_fraction(share)`), so a
    share below what the executor holds (merged weights + activations at its running batch, or the
    CUDA peak it measured, whichever is larger) would make it fail with out-of-memory however little
    compute it needs. `margin` leaves room for allocator fragmentation and batch growth. 0 when the
    report has no GPU size (CPU executors, unreachable ones): nothing to protect. A swapping executor
    (`executors.weight_cap_mb`) counts only the weights it keeps on the device.
    """
    if report is None or not report.gpu_total_bytes:
        return 0.0
    weights, swap = report.bytes_merged, report.details.get("swap")
    if swap:  # a swapping executor keeps only its resident layers and staging slots on the device
        weights = min(weights, int(swap["resident_bytes"]) + int(swap["staging_bytes"]))
    need = max(weights + report.activation_peak, report.cuda_max_memory_allocated or 0)
    return min(1.0, margin * need / float(report.gpu_total_bytes))


def capacity(total_gpu: float, cluster_gpus: float | None) -> float:
    """GPU the Planner may hand out now: `total_gpu`, or less when the cluster has lost nodes
    (`cluster_gpus` None: a cluster without GPUs, where shares are bookkeeping only)."""
    return total_gpu if cluster_gpus is None else min(total_gpu, cluster_gpus)


def plannable(capacity_gpu: float, *, headroom: float, teacher_share: float, floor: float) -> float:
    """What a round may split: capacity less the headroom and the teacher's fixed share. Raises
    ValueError when less than one role's floor is left (nothing could be planned)."""
    left = capacity_gpu - headroom - teacher_share
    if left < floor:
        raise ValueError(f"nothing left to plan: capacity {capacity_gpu} - headroom {headroom} - teacher "
                         f"share {teacher_share} < floor {floor}")
    return left


def held(shares: Mapping[str, float], teacher_share: float, down: Collection[str] = ()) -> float:
    """GPU the roles (less the `down` ones, which hold nothing while they wait) and the teacher hold."""
    return sum(s for r, s in shares.items() if r not in down) + teacher_share


def free_gpu(capacity_gpu: float, held_gpu: float, ray_free: float | None) -> float:
    """GPU a new actor can take now: unassigned capacity, and no more than Ray has free (None: no GPUs)."""
    free = capacity_gpu - held_gpu
    return free if ray_free is None else min(free, ray_free)


def outgrown(capacity_gpu: float, held_gpu: float) -> bool:
    """The plan holds more than the cluster has (a node died): only then are stranded roles looked for."""
    return held_gpu > capacity_gpu + _EPS


def check_shares(current: Mapping[str, float], target: Mapping[str, float], total_gpu: float, *,
                 free: float, quantum: float) -> None:
    """An operator's share request: known roles, positive shares, the sum within `total_gpu`, and
    placeable make-before-break now (every new actor beside its old one in the `free` GPU)."""
    unknown = sorted(set(target) - set(current))
    if unknown:
        raise ValueError(f"unknown roles {unknown}; known: {sorted(current)}")
    after = {**current, **target}
    if any(v <= 0 or not math.isfinite(v) for v in target.values()) or sum(after.values()) > total_gpu + _EPS:
        raise ValueError(f"shares must be > 0 and sum to <= {total_gpu}, got {after}")
    if placeable_shares(current, target, free=free, quantum=quantum) != dict(target):
        raise ValueError(f"{dict(target)} cannot be placed make-before-break: the new actors need their "
                         f"share beside the old ones, and only {free:.2f} GPU is free")


def decide_shares(split: ShareContext, current: Mapping[str, float], *, min_change: float, total: float,
                  free: float, down: Collection[str] = ()) -> ShareDecision:
    """A round's shares: the split of its decision over the roles, damped by hysteresis (`min_change`,
    never below a memory floor), and the part make-before-break can place in `free` GPU now."""
    target = stable_shares(current, role_shares(split), min_change=min_change, total=total,
                           floors=split.memory_floors)
    placeable = placeable_shares(current, target, free=free, quantum=split.quantum, down=down)
    return ShareDecision(target, placeable, frozenset(down))


def decision_view(decision: PlanDecision) -> dict[str, Any]:
    """The JSON form of a round (what /admin/plan shows and the StateStore keeps)."""
    cameras = {cam: {"objective": s.objective, "cost": s.cost, "budget": s.budget, "feasible": s.feasible,
                     "apps": {c.app: {"branchpoint": c.branchpoint, "fps": c.fps, "predicted_f1": c.predicted_f1}
                              for c in s.choices}}
               for cam, s in decision.schedules.items()}
    grants = dict(decision.slicing.grants) if decision.slicing else {}
    return {"inference_share": decision.inference_share, "retrain_share": decision.retrain_share,
            "objective": decision.objective, "cameras": cameras, "retrain_windows": grants,
            "retrain_jobs": retrain_view(decision)}


def retrain_view(decision: PlanDecision) -> dict[str, dict[str, float | int | None]]:
    """Per retraining job: the expected gain of its next micro-window (None: unknown, or a policy
    that does not estimate gains), the windows granted, and its share of the GPU (the retraining
    share split by windows)."""
    s = decision.slicing
    if s is None:
        return {}
    gains, total = dict(s.next_gains), sum(n for _, n in s.grants)
    return {job: {"expected_gain": gains.get(job), "windows": n,
                  "gpu_share": decision.retrain_share * n / total if total else 0.0} for job, n in s.grants}
