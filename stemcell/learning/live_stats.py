"""What live samples say about the deployed models: agreement with the teacher, drift, and running
precision/recall estimates with confidence intervals.

Why: validation figures from training time describe the package's data, not this camera; on a
camera the package never saw they are far off (the Planner then plans on fiction). Every live
sample is a teacher-labelled frame the deployed model is measured on *before* it trains on it, so
the RetrainWorker gets, for free:

- per (camera, app) the deployed model's *agreement* with the teacher: a fast EWMA ("now"), the
  level drift is measured from (it follows "now" up at once, as retraining improves the model, and
  down only at the slow EWMA rate), the value while version 0 served, and a short history for the
  status page. Drift (RECL's trigger for a zoo switch) = "now" falls more than `threshold` below
  that level;
- per (camera, app, candidate branchpoint) running frame precision and recall against the teacher
  over the last `window` samples, with Wilson 95 % intervals; the deployed candidate is measured as
  it serves, the package's other candidates of the app on the same samples (they share the stem).
  F1's interval is [F1(P_lo, R_lo), F1(P_hi, R_hi)] (F1 grows with both; conservative). Each sample
  weighs the capture time it stands for (`live_events.sample_spans`: ASR samples some periods more
  densely, and a dense period must not outweigh an equally long sparse one); the intervals use the
  weighted counts' effective sample size (Kish). With the samples' capture times the estimate also
  carries the event figures the Planner's event-F1 model needs from the camera itself: event
  precision, the camera's event length and the candidate's miss correlation
  (`stemcell.learning.live_events`).

All state is plain numbers and lists (`state_dict`), so it rides in the worker's checkpoint and a
restarted worker keeps its estimates.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stemcell.learning.live_events import event_figures, miss_correlation, sample_spans

Z95 = 1.959963984540054
# per sample: 2 * predicted + teacher (0: tn, 1: fn, 2: fp, 3: tp)
_TN, _FN, _FP, _TP = 0, 1, 2, 3


def wilson(successes: float, trials: float, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion; None without trials."""
    if trials <= 0:
        return None
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def f1_of(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Estimate:
    """Running frame precision/recall of one candidate against the teacher."""

    samples: int
    precision: float | None
    recall: float | None
    f1: float | None
    precision_ci: tuple[float, float] | None
    recall_ci: tuple[float, float] | None
    f1_ci: tuple[float, float] | None
    # event figures on the same samples (`live_events`); None without such an event
    event_precision: float | None = None  # share of predicted events holding a teacher-positive sample
    event_precision_ci: tuple[float, float] | None = None
    event_recall: float | None = None  # at the sampling rate
    event_length_s: float | None = None  # the camera's mean event length (capture seconds)
    events: int = 0  # teacher events among the samples
    predicted_events: int = 0
    miss_correlation: float | None = None  # rho fitted to the sampled event recall (`live_events`)


def weighted_proportion(hits: np.ndarray, weights: np.ndarray) -> tuple[float | None, tuple[float, float] | None]:
    """Weighted share of `hits` and its Wilson interval at the Kish effective sample size."""
    total = float(weights.sum())
    if total <= 0:
        return None, None
    share = float(weights[hits].sum()) / total
    effective = total * total / float((weights * weights).sum())
    return share, wilson(share * effective, effective)


@dataclass
class Confusion:
    """The last `window` (prediction, teacher) pairs of one candidate, with their capture times."""

    window: int = 1000
    codes: deque[int] = field(default_factory=deque)
    stamps: deque[float] = field(default_factory=deque)  # capture time of each sample (s)

    def add(self, predicted: np.ndarray, teacher: np.ndarray, stamps: np.ndarray | None = None) -> None:
        """One batch in capture order; without `stamps` the samples are taken as 1 s apart."""
        codes = (2 * np.asarray(predicted, bool).astype(int) + np.asarray(teacher, bool).astype(int)).tolist()
        last = self.stamps[-1] if self.stamps else 0.0
        times = np.arange(1, len(codes) + 1) + last if stamps is None else np.asarray(stamps, float)
        self.codes.extend(codes)
        self.stamps.extend(float(t) for t in times)
        while len(self.codes) > self.window:
            self.codes.popleft()
            self.stamps.popleft()

    def until(self, ts: float) -> Confusion:
        """The samples captured before `ts`: what an estimate made at that moment saw."""
        kept = [(c, t) for c, t in zip(self.codes, self.stamps) if t < ts]
        return Confusion(self.window, deque(c for c, _ in kept), deque(t for _, t in kept))

    def estimate(self) -> Estimate:
        codes = np.asarray(self.codes, dtype=np.int64)
        stamps = np.asarray(self.stamps, dtype=float)
        spans, _ = sample_spans(stamps)
        predicted, teacher = codes >= _FP, codes % 2 == 1
        p, p_ci = weighted_proportion(teacher[predicted], spans[predicted])
        r, r_ci = weighted_proportion(predicted[teacher], spans[teacher])
        f1 = f1_of(p, r) if p is not None and r is not None else None
        f1_ci = (f1_of(p_ci[0], r_ci[0]), f1_of(p_ci[1], r_ci[1])) if p_ci and r_ci else None
        ev = event_figures(predicted, teacher, stamps)
        return Estimate(len(codes), p, r, f1, p_ci, r_ci, f1_ci, ev.event_precision,
                        wilson(ev.correct_events, ev.predicted_events), ev.event_recall, ev.event_length_s,
                        ev.events, ev.predicted_events, miss_correlation(r, ev))


@dataclass
class Agreement:
    """The deployed model's agreement with the teacher on one camera app's live samples."""

    fast: float = 0.3  # EWMA weight of a new batch in `now`
    slow: float = 0.05  # ... in `reference`
    keep: int = 120  # history points kept
    now: float | None = None
    reference: float | None = None
    v0: float | None = None  # `now` while version 0 served
    history: list[tuple[float, float]] = field(default_factory=list)  # (ts, now)

    def add(self, ts: float, agreement: float, version: int) -> None:
        self.now = agreement if self.now is None else (1 - self.fast) * self.now + self.fast * agreement
        # the level drift is measured from: follows improvements at once (retraining), falls only slowly
        self.reference = self.now if self.reference is None else max(
            self.now, (1 - self.slow) * self.reference + self.slow * agreement)
        if version == 0:
            self.v0 = self.now
        self.history = [*self.history, (float(ts), float(self.now))][-self.keep:]

    def drifted(self, threshold: float) -> bool:
        return self.now is not None and self.reference is not None and self.reference - self.now > threshold

    def switched(self) -> None:
        """Another model serves now: the levels measured on the old one no longer apply."""
        self.now = self.reference = None


class LiveStats:
    """All cameras' agreement and estimates (one per RetrainWorker)."""

    def __init__(self, window: int = 1000) -> None:
        self.window = window
        self.agreement: dict[tuple[str, str], Agreement] = {}
        self.confusion: dict[tuple[str, str, int], Confusion] = {}
        self.deployed: dict[tuple[str, str], int] = {}  # (camera, app) -> branchpoint of the model serving

    def observe(self, camera: str, app: str, branchpoint: int, version: int, ts: float, teacher: np.ndarray,
                deployed: np.ndarray, others: dict[int, np.ndarray] | None = None,
                stamps: np.ndarray | None = None) -> None:
        """One batch: `teacher` presence (N,), the deployed model's predictions (N,), the app's other
        candidates' predictions on the same frames (branchpoint -> (N,)), and the frames' capture times
        (`stamps`, for the event figures; without them the samples are taken as 1 s apart)."""
        teacher = np.asarray(teacher, bool)
        self.agreement.setdefault((camera, app), Agreement()).add(
            ts, float((np.asarray(deployed, bool) == teacher).mean()), version)
        if self.deployed.get((camera, app)) != branchpoint:
            self.confusion.pop((camera, app, branchpoint), None)  # measured as a non-deployed candidate until now
            self.deployed[(camera, app)] = branchpoint
        for bp, predicted in {**(others or {}), branchpoint: deployed}.items():
            self.confusion.setdefault((camera, app, bp), Confusion(self.window)).add(predicted, teacher, stamps)

    def estimates(self, camera: str, app: str) -> dict[int, Estimate]:
        """Branchpoint -> running estimate of each candidate of the camera's app."""
        return {bp: c.estimate() for (cam, a, bp), c in self.confusion.items() if (cam, a) == (camera, app)}

    def forget(self, camera: str) -> None:
        self.agreement = {k: v for k, v in self.agreement.items() if k[0] != camera}
        self.confusion = {k: v for k, v in self.confusion.items() if k[0] != camera}
        self.deployed = {k: v for k, v in self.deployed.items() if k[0] != camera}

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers and lists: `torch.load(weights_only=True)` reads it back."""
        return {
            "agreement": [[c, a, g.now, g.reference, g.v0, [list(p) for p in g.history]]
                          for (c, a), g in self.agreement.items()],
            "confusion": [[c, a, bp, list(k.codes), list(k.stamps)] for (c, a, bp), k in self.confusion.items()],
            "deployed": [[c, a, bp] for (c, a), bp in self.deployed.items()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for c, a, now, ref, v0, history in state.get("agreement", []):
            self.agreement[(c, a)] = Agreement(now=now, reference=ref, v0=v0, history=[(t, g) for t, g in history])
        for c, a, bp, codes, *stamps in state.get("confusion", []):  # checkpoints before the stamps: 1 s apart
            times = stamps[0] if stamps else range(1, len(codes) + 1)
            self.confusion[(c, a, int(bp))] = Confusion(self.window, deque(int(x) for x in codes),
                                                        deque(float(t) for t in times))
        for c, a, bp in state.get("deployed", []):
            self.deployed[(c, a)] = int(bp)
