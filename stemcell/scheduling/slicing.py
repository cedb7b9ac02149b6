"""RECL retraining scheduler: time-share one GPU among retraining jobs in micro-windows.

RECL (Algorithm 1) gives every retraining job one micro-window to measure how fast it learns
("in-band profiling", no separate profiler run), then keeps granting the next micro-window to the
job whose *next* window is expected to raise accuracy the most. Training curves are concave, so a
job that has converged (or whose model already fits its scene) stops receiving GPU time and the
steep jobs get it instead; this approximately maximises the summed accuracy improvement (Eq. 1).

The expected gain of a job's next window comes from an estimator (`gain_curves`): by default
("blend", the Planner's) the job's prior, how far its deployed model's agreement with the teacher
dropped since its last update, shrunk towards by the gains measured since (Bayesian, the prior worth
`prior_weight` windows); "curve" fits a decaying curve to the measured gains alone, "last" is
Algorithm 1 literally, "prior" the prior alone. Measured gains alone are too noisy to rank jobs (a
window's gain on a few dozen held-out labels after a few SGD steps; benchmarks/recl_slicing.py):
the prior says which camera needs retraining before any GPU time is spent. Every job still gets
`min_windows` windows of each update window first (the probe), so a camera the prior calls
adapted is still trained a little and measured.

Keep-best (optional, `run_micro_windows(checkpoints=...)`): a retraining job keeps its best
checkpoint and rolls back a micro-window that lowered its held-out accuracy, so it never deploys a
model worse than the one it started from (RECL's safety checker deploys a retrained model only when
it beats the current one). It is job mechanics, identical under every policy; the gain-driven
policy then sees each window's gain over the best so far, so one unlucky window reads as "no
gain" rather than as a loss that starves the job while it sits in the worsened state.

Policies are plain functions `policy(SlicingContext) -> SliceDecision` returning the whole plan for
the windows available. In-band use re-plans after every micro-window: run `order[0]`, observe the
accuracy change, call the policy again with one window fewer (`run_micro_windows` does exactly
this). All three policies are consistent under that re-planning: the baselines give the same
allocation whether executed whole or one window at a time.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from stemcell.scheduling.gain_curves import (
    GainCurve,
    blended_gain_curve,
    fit_gain_curve,
    last_gain_estimate,
)

GainEstimator = Callable[[Sequence[float], float], GainCurve | None]
ESTIMATORS: dict[str, GainEstimator] = {"curve": fit_gain_curve, "last": last_gain_estimate}
# "prior": a job's expected gain comes from its `prior_gain` (e.g. how far its agreement with the
# teacher dropped since its last update), decaying by `prior_rate` per window it is granted; the
# probes' measured gains are ignored. A job without a prior falls back to the curve fit.
# "blend" (the default, the Planner's): the prior shrunk towards by the gains measured since
# (`blended_gain_curve`); a job without a prior is planned from its measured gains, or, before any
# window was measured, with the fleet's mean prior.
ESTIMATOR_NAMES = (*ESTIMATORS, "prior", "blend")


def expected_gain_curve(job: RetrainJob, ctx: SlicingContext) -> GainCurve | None:
    """The gain curve the gain-driven policy plans `job` with, by `ctx.estimator`."""
    if ctx.estimator == "blend":
        unmeasured = job.windows_used == 0 and not job.recent_gains
        prior = job.prior_gain if job.prior_gain is not None else ctx.fleet_prior() if unmeasured else None
        return blended_gain_curve(job.recent_gains, prior, rate=ctx.prior_rate, weight=ctx.prior_weight,
                                  first_window=job.windows_used - len(job.recent_gains))
    if ctx.estimator == "prior" and job.prior_gain is not None:
        return GainCurve(next=job.prior_gain * ctx.prior_rate**job.windows_used, rate=ctx.prior_rate)
    return ESTIMATORS["curve" if ctx.estimator == "prior" else ctx.estimator](job.recent_gains, ctx.prior_rate)


@dataclass(frozen=True)
class RetrainJob:
    """One camera's retraining request for the current update window."""

    job_id: str  # who is retrained (e.g. "cam3/car")
    recent_gains: tuple[float, ...] = ()  # accuracy gain of each micro-window spent on this job so far, in order
    windows_used: int = 0  # micro-windows already spent on this job in this update window (>= len(recent_gains))
    prior_gain: float | None = None  # expected gain of a first window before any is observed (None: unknown)


@dataclass(frozen=True)
class SlicingContext:
    """Everything a slicing policy may look at; built fresh for every (re-)planning call."""

    jobs: tuple[RetrainJob, ...]  # competing jobs; their order breaks ties
    windows_available: int  # micro-windows left in this update window
    window_s: float = 1.0  # micro-window length mu in seconds (one epoch over the job's frames in RECL)
    elapsed_windows: int = 0  # global micro-window counter: round-robin rotates with it across update windows
    prior_rate: float = 0.7  # decay per window of a job's expected gain (prior, blend; one observed gain)
    estimator: str = "blend"  # how the gain-driven policy estimates gains (`ESTIMATOR_NAMES`)
    prior_weight: float = 4.0  # "blend": windows of measured gains the prior is worth
    min_windows: int = 1  # every job gets this many windows of the update window first (probe, check)

    def __post_init__(self) -> None:
        if self.windows_available < 0:
            raise ValueError(f"windows_available must be >= 0, got {self.windows_available}")
        ids = [j.job_id for j in self.jobs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"job ids must be unique, got {ids}")
        if self.estimator not in ESTIMATOR_NAMES:
            raise ValueError(f"unknown estimator {self.estimator!r}; choose one of {sorted(ESTIMATOR_NAMES)}")
        if self.prior_weight < 0 or self.min_windows < 0:
            raise ValueError(f"prior_weight and min_windows must be >= 0, got {self.prior_weight}, {self.min_windows}")

    def fleet_prior(self) -> float | None:
        """Mean prior of the jobs that have one: the expectation for a job not measured yet."""
        priors = [j.prior_gain for j in self.jobs if j.prior_gain is not None]
        return sum(priors) / len(priors) if priors else None


@dataclass(frozen=True)
class SliceDecision:
    """A plan for the remaining micro-windows of one update window."""

    grants: tuple[tuple[str, int], ...]  # (job_id, micro-windows granted) for every job, in context order
    order: tuple[str, ...]  # micro-window i trains order[i]; in-band callers run order[0] and re-plan
    expected_gain: float  # summed predicted accuracy gain of the plan (unknown jobs count 0)
    window_s: float = 1.0  # micro-window length, to turn grants into GPU-seconds
    next_gains: tuple[tuple[str, float | None], ...] = ()  # (job_id, expected gain of its next window); gain-driven only

    def windows_for(self, job_id: str) -> int:
        return dict(self.grants)[job_id]

    def seconds_for(self, job_id: str) -> float:
        return self.windows_for(job_id) * self.window_s


def _decision(ctx: SlicingContext, order: Sequence[str], expected: float,
              next_gains: Sequence[tuple[str, float | None]] = ()) -> SliceDecision:
    counts = {j.job_id: 0 for j in ctx.jobs}
    for job_id in order:
        counts[job_id] += 1
    return SliceDecision(tuple(counts.items()), tuple(order), float(expected), ctx.window_s, tuple(next_gains))


def gain_driven_slicing(ctx: SlicingContext) -> SliceDecision:
    """RECL Algorithm 1: every job's minimum windows first, then greedily the best expected gain.

    Jobs with fewer than `ctx.min_windows` windows so far get theirs first, one round over the jobs
    at a time (with the default 1: Algorithm 1's probe of every unprofiled job, lines 10-12, which
    also checks a job whose prior says it needs nothing, e.g. a static camera); if the windows run
    out (more jobs than windows in a Planner round), jobs known by nothing, then those with the
    highest expected gain, then the earlier ones in context order get them. The remaining windows go one
    by one to the job with the highest expected gain of its next window (`expected_gain_curve`),
    each job's curve advancing as the plan grants it windows. Equal expected gains (e.g. several
    jobs whose accuracy did not move) go to the job with fewer windows so far, then to the earlier
    job, so a flat tie is shared rather than handed to the first job every time.
    """
    order: list[str] = []
    expected = 0.0
    curves = {pos: expected_gain_curve(job, ctx) for pos, job in enumerate(ctx.jobs)}
    ahead = {pos: 0 for pos in curves}  # windows of its curve this plan already granted each job
    budget = ctx.windows_available
    # the minimum windows' order: jobs known by nothing first (Algorithm 1 probes them), then by
    # expected gain, then context order; it matters only when the windows run out first
    def priority(pos: int) -> tuple[bool, float, int]:
        curve = curves[pos]
        return curve is not None, -curve.next if curve is not None else 0.0, pos

    first = sorted(curves, key=priority)
    for round_ in range(ctx.min_windows):
        for pos in first:
            job = ctx.jobs[pos]
            if job.windows_used <= round_ and budget > 0:
                order.append(job.job_id)
                budget -= 1
                curve = curves[pos]
                expected += curve.gain(ahead[pos]) if curve is not None else 0.0
                ahead[pos] += 1
    heap = [(-c.gain(ahead[pos]), ctx.jobs[pos].windows_used + ahead[pos], pos, ahead[pos])
            for pos, c in curves.items() if c is not None]  # (-expected gain, windows so far, position, ahead)
    heapq.heapify(heap)
    while budget > 0 and heap:
        neg_gain, used, pos, step = heapq.heappop(heap)
        order.append(ctx.jobs[pos].job_id)
        expected -= neg_gain
        budget -= 1
        curve = curves[pos]
        assert curve is not None
        heapq.heappush(heap, (-curve.gain(step + 1), used + 1, pos, step + 1))
    # Windows are always spent (idle GPU time helps no one), even when every expected gain is <= 0.
    # Budget is left only when no job has a curve yet (all unknown, just probed): spread it
    # round-robin; in-band re-planning replaces this guess once the probes are measured.
    unknown = [ctx.jobs[pos].job_id for pos, curve in curves.items() if curve is None]
    order += [unknown[i % len(unknown)] for i in range(budget)] if unknown else []
    next_gains = [(job.job_id, c.next if (c := curves[pos]) is not None else None) for pos, job in enumerate(ctx.jobs)]
    return _decision(ctx, order, expected, next_gains)


def round_robin_slicing(ctx: SlicingContext) -> SliceDecision:
    """AMS baseline: micro-windows rotate over the jobs, continuing where the last window stopped.

    The rotation position is `elapsed_windows` (a global counter), so with fewer windows than jobs
    every job still gets its turn across update windows. Gains are ignored.
    """
    n = len(ctx.jobs)
    order = [ctx.jobs[(ctx.elapsed_windows + i) % n].job_id for i in range(ctx.windows_available)] if n else []
    return _decision(ctx, order, 0.0)


def equal_share_slicing(ctx: SlicingContext) -> SliceDecision:
    """Ekya-like fixed split: every job gets an equal share of the update window in one block.

    Shares are computed over the whole update window (windows already used + available), so
    re-planning after each window reproduces the same split; the remainder goes to the first jobs
    in context order. Gains are ignored.
    """
    n = len(ctx.jobs)
    if not n:
        return _decision(ctx, [], 0.0)
    total = ctx.windows_available + sum(j.windows_used for j in ctx.jobs)
    share, extra = divmod(total, n)
    order: list[str] = []
    for pos, job in enumerate(ctx.jobs):
        target = share + (1 if pos < extra else 0)
        order += [job.job_id] * max(0, target - job.windows_used)
    return _decision(ctx, order[: ctx.windows_available], 0.0)


SlicingPolicy = Callable[[SlicingContext], SliceDecision]
SLICING_POLICIES: dict[str, SlicingPolicy] = {
    "gain": gain_driven_slicing,
    "round_robin": round_robin_slicing,
    "equal_share": equal_share_slicing,
}


@dataclass
class JobGainTracker:
    """Online in-band profiler: turns observed (window, accuracy) pairs into per-job gain curves.

    `start(job, accuracy)` records accuracy before any training in this update window (window 0);
    `observe(job, window, accuracy)` records accuracy after `window` micro-windows. Gains are the
    differences of consecutive accuracies. Only the last `history` gains are kept in the job view
    (old points of a curve say little once the job has moved on).

    With `keep_best` the job's accuracy is that of its best checkpoint so far (the model it would
    deploy, see `run_micro_windows`): a window that measures worse than the best is recorded as
    gain 0, not as a loss, because the job keeps (or rolls back to) the better checkpoint.
    """

    history: int = 8
    keep_best: bool = False
    priors: Mapping[str, float] = field(default_factory=dict)  # prior_gain per job (estimator "prior")
    _accuracy: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def start(self, job_id: str, accuracy: float) -> None:
        self._accuracy[job_id] = [(0, float(accuracy))]

    def observe(self, job_id: str, window: int, accuracy: float) -> float:
        """Record accuracy after `window` micro-windows; returns the gain of that window."""
        points = self._accuracy.get(job_id)
        if not points:
            raise KeyError(f"job {job_id!r} was not started (call start() with its initial accuracy)")
        last_window, last_acc = points[-1]
        if window != last_window + 1:
            raise ValueError(f"job {job_id!r}: expected window {last_window + 1}, got {window}")
        kept = max(float(accuracy), last_acc) if self.keep_best else float(accuracy)
        points.append((window, kept))
        return kept - last_acc

    def gains(self, job_id: str) -> tuple[float, ...]:
        accs = [a for _, a in self._accuracy.get(job_id, [])]
        return tuple(float(b - a) for a, b in zip(accs, accs[1:]))

    def accuracy(self, job_id: str) -> float:
        return self._accuracy[job_id][-1][1]

    def job(self, job_id: str) -> RetrainJob:
        gains = self.gains(job_id)
        return RetrainJob(job_id, gains[-self.history :], windows_used=len(gains), prior_gain=self.priors.get(job_id))

    def expected_next_gain(self, job_id: str, prior_rate: float = 0.7) -> float | None:
        curve = fit_gain_curve(self.job(job_id).recent_gains, prior_rate)
        return None if curve is None else curve.gain()

    def context(self, job_ids: Sequence[str], windows_available: int, **kwargs: object) -> SlicingContext:
        """A planning context for `job_ids` as observed so far (extra SlicingContext fields via kwargs)."""
        return SlicingContext(tuple(self.job(j) for j in job_ids), windows_available, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SlicingRun:
    """What actually happened in one update window run in-band."""

    order: tuple[str, ...]  # job trained in each micro-window
    gains: tuple[float, ...]  # measured accuracy gain of each micro-window
    final_accuracy: Mapping[str, float]  # each job's accuracy after the update window

    def windows_for(self, job_id: str) -> int:
        return self.order.count(job_id)


class Checkpoints(Protocol):
    """Where a retraining job keeps its best model; the job's owner holds the weights.

    `save(job)` records the job's current model (with its optimizer state) as its best checkpoint;
    `restore(job)` puts the best checkpoint back as the current model.
    """

    def save(self, job_id: str) -> None: ...

    def restore(self, job_id: str) -> None: ...


def run_micro_windows(
    policy: SlicingPolicy,
    initial_accuracy: Mapping[str, float],
    windows: int,
    train_window: Callable[[str], float],
    *,
    elapsed_windows: int = 0,
    window_s: float = 1.0,
    checkpoints: Checkpoints | None = None,
    prior_gains: Mapping[str, float] | None = None,
    **planning: object,
) -> SlicingRun:
    """Execute one update window in-band: plan, train `order[0]` for one micro-window, re-plan.

    `initial_accuracy[job]` is each job's accuracy before training; `train_window(job)` trains that
    job for one micro-window and returns its accuracy afterwards (evaluated on held-out
    teacher-labelled frames). The policy only ever sees what has been measured so far.

    With `checkpoints` every job keeps its best checkpoint (keep-best): a window that measures at
    least as good as the job's best becomes the new best, a worse one is rolled back at once, so the
    next window retries from the best and the deployed model is never worse than the starting one
    on the held-out frames (RECL's safety checker likewise deploys a retrained model only when it
    beats the current one on the labelled frames). The policy then sees each window's gain over
    the best so far (0 for a rolled-back window). This is job mechanics, the same for every policy.

    `prior_gains[job]` is the job's `prior_gain` in every planning context (estimators "prior",
    "blend"); `planning` are further `SlicingContext` fields (estimator, prior_rate, prior_weight,
    min_windows).
    """
    tracker = JobGainTracker(keep_best=checkpoints is not None, priors=dict(prior_gains or {}))
    for job_id, acc in initial_accuracy.items():
        tracker.start(job_id, acc)
        if checkpoints is not None:
            checkpoints.save(job_id)
    job_ids = list(initial_accuracy)
    order: list[str] = []
    gains: list[float] = []
    for i in range(windows):
        ctx = tracker.context(
            job_ids, windows - i, window_s=window_s, elapsed_windows=elapsed_windows + i, **planning)
        plan = policy(ctx)
        if not plan.order:
            break
        job_id = plan.order[0]
        accuracy = train_window(job_id)
        best = tracker.accuracy(job_id)
        gains.append(tracker.observe(job_id, len(tracker.gains(job_id)) + 1, accuracy))
        order.append(job_id)
        if checkpoints is not None:
            (checkpoints.save if accuracy >= best else checkpoints.restore)(job_id)
    final = {j: tracker.accuracy(j) for j in job_ids}
    if any(math.isnan(a) for a in final.values()):
        raise ValueError("train_window returned NaN accuracy")
    return SlicingRun(tuple(order), tuple(gains), final)
