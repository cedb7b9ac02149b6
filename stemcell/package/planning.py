"""From an M-Package to a Mainstream scheduling problem: the planner's only view of the models."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from stemcell.package.manifest import Manifest
from stemcell.scheduling import ScheduleProblem, build_problem

DEFAULT_FRAME_RATES = (1.25, 2.5, 5.0, 10.0)


def instance_names(apps: Sequence[str]) -> list[str]:
    """Name repeated apps `car`, `car#2`, ...: several tenants may run the same model set."""
    seen: Counter[str] = Counter()
    names = []
    for app in apps:
        seen[app] += 1
        names.append(app if seen[app] == 1 else f"{app}#{seen[app]}")
    return names


def head_latency_s(manifest: Manifest, task: str, batch_size: int) -> float:
    """Per-frame latency of one app's head at `batch_size`: the detect head's for detect apps (when the
    package measured it), else the linear head's."""
    latency = manifest.latency
    if task == "detect" and latency.detect_head_s is not None:
        return latency.detect_head_s[str(batch_size)] / batch_size
    return latency.head_s[str(batch_size)] / batch_size


def problem_from_manifest(
    manifest: Manifest,
    apps: Sequence[str],
    budget: float,
    *,
    frame_rates: Sequence[float] | None = None,
    batch_size: int = 8,
    correlation: float = 0.5,
) -> ScheduleProblem:
    """Candidates' validation precision/recall + the measured per-segment latency at `batch_size`.

    Latency is per frame at the batch size the executor typically runs (cross-camera batching),
    so the budget is in GPU-seconds per second of that executor. The problem has one head cost: the
    mean of its apps' heads (a detect app's CenterNet head costs far more than a linear head), exact
    when all apps have the same task.
    """
    known = {a.name: a for a in manifest.apps}
    unknown = [a for a in apps if a not in known]
    if unknown:
        raise ValueError(f"apps {unknown} are not in the package (it has {sorted(known)})")
    if str(batch_size) not in manifest.latency.segment_s:
        raise ValueError(f"batch size {batch_size} was not profiled; choose one of {manifest.latency.batch_sizes}")
    rates = tuple(sorted(frame_rates or [r for r in DEFAULT_FRAME_RATES if r <= manifest.fps]))
    rows, lengths = [], {}
    for name, app in zip(instance_names(apps), apps):
        lengths[name] = known[app].mean_event_frames
        rows += [
            {"app": name, "branchpoint": c.branchpoint, "precision": c.precision, "recall": c.recall,
             "name": c.branchpoint_name}
            for c in manifest.candidates_for(app)
        ]
    return build_problem(
        rows,
        segment_latency_s=manifest.latency.per_frame_segment_s(batch_size),
        head_latency_s=sum(head_latency_s(manifest, known[a].task, batch_size) for a in apps) / len(apps),
        frame_rates=rates,
        stream_fps=manifest.fps,
        budget=budget,
        event_length_frames=lengths,
        correlation=correlation,
    )
