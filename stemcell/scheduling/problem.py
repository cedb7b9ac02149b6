"""What M-Scheduler is asked (`ScheduleProblem`) and what it answers (`Schedule`).

Both sides are frozen dataclasses so a scheduler is a plain function `decide(problem) -> Schedule`
(the Ray Serve autoscaling-policy shape): the planner builds the problem from measured latencies and
an M-Package's candidates, calls a policy, and applies or logs the decision. Inputs are validated
here, once, so the schedulers can trust them; errors name the bad field.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def _check(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{field_name}: {message}")


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@dataclass(frozen=True)
class Candidate:
    """One fine-tuned model in an app's M-Package: how much it shares and how good it is per frame."""

    branchpoint: int  # number of frozen, shareable base segments (0 = nothing shared, S = only the head is own)
    precision: float  # validation frame-level precision in [0, 1]
    recall: float  # validation frame-level recall in [0, 1]
    name: str = ""  # free label (e.g. the branchpoint's layer name or weights file), shown in plans
    correlation: float | None = None  # its own miss correlation, measured on a camera's live samples (None: the problem's)

    def __post_init__(self) -> None:
        b = self.branchpoint
        _check(isinstance(b, int) and b >= 0, "branchpoint", f"must be an int >= 0, got {b!r}")
        for name in ("precision", "recall"):
            value = getattr(self, name)
            _check(_finite(value) and 0.0 <= value <= 1.0, name, f"must be in [0, 1], got {value!r}")
        rho = self.correlation
        _check(rho is None or (_finite(rho) and 0.0 <= rho <= 1.0), "correlation", f"must be in [0, 1], got {rho!r}")


@dataclass(frozen=True)
class AppSpec:
    """An application on the stream: its candidates and what its events look like."""

    name: str  # unique app id
    candidates: tuple[Candidate, ...]  # the M-Package's model set (at least one)
    event_length_frames: float  # typical event length, in frames of the camera stream (> 0)
    weight: float = 1.0  # importance in the objective (weighted mean event F1), > 0

    def __post_init__(self) -> None:
        _check(isinstance(self.name, str) and bool(self.name), "name", "must be a non-empty string")
        app = f"app {self.name!r}"
        cands = self.candidates
        _check(isinstance(cands, tuple) and len(cands) > 0, "candidates", f"{app} needs a non-empty tuple")
        _check(all(isinstance(c, Candidate) for c in cands), "candidates", f"{app}: entries must be Candidate")
        length = self.event_length_frames
        _check(_finite(length) and length > 0, "event_length_frames", f"{app}: must be > 0, got {length!r}")
        _check(_finite(self.weight) and self.weight > 0, "weight", f"{app}: must be > 0, got {self.weight!r}")


@dataclass(frozen=True)
class ScheduleProblem:
    """Everything a scheduler needs for one planning round on one stream and one GPU share."""

    apps: tuple[AppSpec, ...]  # the concurrent applications (at least one, unique names)
    segment_latency_s: tuple[float, ...]  # per-frame latency of each base segment, len S (seconds)
    head_latency_s: float  # per-frame latency of one app's head (seconds)
    frame_rates: tuple[float, ...]  # frame-rate menu, strictly increasing, each in (0, stream_fps]
    stream_fps: float  # frame rate of the camera stream
    budget: float  # GPU-seconds per second available to inference on this stream (>= 0)
    correlation: float = 0.5  # rho in [0, 1]: how much a miss on one sampled frame predicts a miss on the next

    def __post_init__(self) -> None:
        _check(isinstance(self.apps, tuple) and len(self.apps) > 0, "apps", "needs a non-empty tuple of AppSpec")
        _check(all(isinstance(a, AppSpec) for a in self.apps), "apps", "every entry must be an AppSpec")
        names = [a.name for a in self.apps]
        _check(len(set(names)) == len(names), "apps", f"app names must be unique, got {names}")
        seg = self.segment_latency_s
        _check(isinstance(seg, tuple) and len(seg) > 0, "segment_latency_s", "needs one latency per segment")
        _check(all(_finite(t) and t >= 0 for t in seg), "segment_latency_s", f"must be finite and >= 0, got {seg}")
        head, fps = self.head_latency_s, self.stream_fps
        _check(_finite(head) and head >= 0, "head_latency_s", f"must be >= 0, got {head!r}")
        _check(_finite(fps) and fps > 0, "stream_fps", f"must be > 0, got {fps!r}")
        rates = self.frame_rates
        _check(isinstance(rates, tuple) and len(rates) > 0, "frame_rates", "needs a non-empty tuple")
        _check(all(_finite(f) and 0 < f <= fps for f in rates), "frame_rates", f"must be in (0, {fps}], got {rates}")
        _check(all(a < b for a, b in zip(rates, rates[1:])), "frame_rates", f"must strictly increase, got {rates}")
        _check(_finite(self.budget) and self.budget >= 0, "budget", f"must be finite and >= 0, got {self.budget!r}")
        rho = self.correlation
        _check(_finite(rho) and 0.0 <= rho <= 1.0, "correlation", f"must be in [0, 1], got {rho!r}")
        for app in self.apps:
            for c in app.candidates:
                _check(c.branchpoint <= len(seg), "branchpoint", f"app {app.name!r}: {c.branchpoint} > S={len(seg)}")

    @property
    def num_segments(self) -> int:
        """S, the number of base segments."""
        return len(self.segment_latency_s)


@dataclass(frozen=True)
class AppChoice:
    """The model and frame rate chosen for one app, with the event quality the model predicts."""

    app: str  # app name
    candidate: int  # index into the app's `candidates`
    branchpoint: int  # frozen, shared segments of the chosen candidate
    fps: float  # frames per second this app analyses
    predicted_f1: float  # modelled event F1 at this candidate and frame rate
    event_recall: float  # modelled event recall (chance an event is detected at least once)
    event_precision: float  # modelled event precision


@dataclass(frozen=True)
class Schedule:
    """A scheduler's decision for one planning round."""

    choices: tuple[AppChoice, ...]  # one per app, in the problem's app order
    cost: float  # GPU-seconds per second of the whole stem tree under this schedule
    budget: float  # the budget it was planned for
    objective: float  # weighted mean predicted event F1 across apps
    policy: str  # which scheduler produced it
    feasible: bool  # cost <= budget; False: the policy found nothing within budget (see each policy)


def build_problem(
    candidates: Iterable[Mapping[str, Any]],
    *,
    segment_latency_s: Sequence[float],
    head_latency_s: float,
    frame_rates: Sequence[float],
    stream_fps: float,
    budget: float,
    event_length_frames: float | Mapping[str, float],
    weights: Mapping[str, float] | None = None,
    correlation: float = 0.5,
) -> ScheduleProblem:
    """Group flat candidate rows (an M-Package manifest's `candidates`) into a `ScheduleProblem`.

    Each row needs `app`, `branchpoint`, `precision`, `recall` and may carry `name` (else
    "<app>@b<branchpoint>"). Apps appear in first-seen order; `event_length_frames` and `weights` are
    either one value for all apps or a per-app mapping (missing weights default to 1).
    """
    grouped: dict[str, list[Candidate]] = {}
    for row in candidates:
        try:
            app, b = str(row["app"]), int(row["branchpoint"])
            cand = Candidate(b, float(row["precision"]), float(row["recall"]), str(row.get("name") or f"{app}@b{b}"))
        except KeyError as exc:
            raise ValueError(f"candidates: row {dict(row)!r} lacks field {exc.args[0]!r}") from None
        grouped.setdefault(app, []).append(cand)
    weights = weights or {}

    def length(app: str) -> float:
        if isinstance(event_length_frames, Mapping):
            _check(app in event_length_frames, "event_length_frames", f"no event length for app {app!r}")
            return float(event_length_frames[app])
        return float(event_length_frames)

    apps = tuple(
        AppSpec(app, tuple(cands), length(app), float(weights.get(app, 1.0))) for app, cands in grouped.items()
    )
    return ScheduleProblem(
        apps=apps,
        segment_latency_s=tuple(float(t) for t in segment_latency_s),
        head_latency_s=float(head_latency_s),
        frame_rates=tuple(float(f) for f in frame_rates),
        stream_fps=float(stream_fps),
        budget=float(budget),
        correlation=float(correlation),
    )


def format_schedule(schedule: Schedule) -> str:
    """Plain-text plan for a terminal: one line per app, then objective and cost against budget."""
    header = ("app", "branchpoint", "fps", "event_recall", "event_prec", "pred_F1")
    rows = [
        (c.app, str(c.branchpoint), f"{c.fps:g}", *(f"{x:.3f}" for x in (c.event_recall, c.event_precision)), f"{c.predicted_f1:.3f}")
        for c in schedule.choices
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    rule = tuple("-" * w for w in widths)
    flag = "" if schedule.feasible else "  (INFEASIBLE: exceeds the budget)"
    lines = [f"plan by {schedule.policy}{flag}"]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in (header, rule, *rows)]
    share = schedule.cost / schedule.budget if schedule.budget > 0 else math.inf
    lines.append(f"objective (weighted mean event F1): {schedule.objective:.4f}")
    lines.append(f"cost: {schedule.cost:.4g} GPU-s/s of budget {schedule.budget:.4g} ({share:.1%})")
    return "\n".join(lines)
