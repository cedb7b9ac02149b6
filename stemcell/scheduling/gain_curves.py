"""What a retraining job is expected to gain from its next micro-windows: the estimators RECL's
slicing (`stemcell.scheduling.slicing`) plans with.

- `fit_gain_curve` ("curve"): a decaying curve fitted to the job's measured per-window gains.
- `last_gain_estimate` ("last"): Algorithm 1 literally, the next window gains what the last did.
- `blended_gain_curve` ("blend", the Planner's): the prior (how far the deployed model's agreement
  with the teacher dropped since its last update, known before any window is spent) shrunk towards
  by the gains measured since, as a Bayesian posterior of the curve's level.
- `headroom_prior`: another prior, the deployed model's disagreement with the teacher now (measured,
  not the Planner's).

Why the blend: a window's measured gain is the difference of two accuracies on a few dozen
held-out teacher labels after a few SGD steps, so its noise (sd ~10-15 points) dwarfs the
differences between jobs; on the mixed fleet of benchmarks/slicing_fleet.py the probe's gain does
not predict the next window's (corr. ~0), and planning on it alone is no better than round-robin.
The drop since the last update measures *need* as the teacher sees it (a camera whose model got
worse since it was last retrained), on every live sample rather than a held-out few, and is known
before any GPU time is spent; the measured gains still correct it, with the weight their noise
deserves. Measured: benchmarks/recl_slicing.py.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Scale of `headroom_prior`: puts the disagreement on the scale of the drop prior it stands beside
# (on the mixed fleet of benchmarks/slicing_fleet.py the agreement drop averaged 0.13-0.16 and the
# disagreement 0.25-0.35: benchmarks/slicing_signals.py), so a blend weighs it against measured
# gains as it weighed the drop; the ranking of jobs does not depend on it.
HEADROOM_GAIN = 0.5

# Candidate decay rates for the curve fit: a grid keeps the fit robust to negative and noisy gains
# (no logarithms) and costs microseconds for the handful of points a job has.
_RATE_GRID = np.linspace(0.02, 0.98, 49)


@dataclass(frozen=True)
class GainCurve:
    """What a job is expected to gain from its next micro-windows."""

    next: float  # expected accuracy gain of the next (first unobserved) micro-window
    rate: float  # each further window is expected to gain `rate` times the previous one

    def gain(self, ahead: int = 0) -> float:
        """Expected gain of the window `ahead` windows after the next one."""
        return self.next * self.rate**ahead


def fit_gain_curve(gains: Sequence[float], prior_rate: float = 0.7) -> GainCurve | None:
    """Least-squares fit of `level * (1 - rate**t)` to the cumulative sum of `gains`.

    For each rate on a grid the best level is closed-form (the model is linear in it); the rate with
    the smallest squared error wins, and the next window is expected to gain
    `level * rate**n * (1 - rate)` after n observed windows. One observation cannot determine a
    rate, so `prior_rate` is assumed (next gain = `gains[0] * prior_rate`). None: nothing observed.
    """
    if not gains:
        return None
    g = np.asarray(gains, dtype=float)
    if len(g) == 1:
        return GainCurve(next=float(g[0]) * prior_rate, rate=prior_rate)
    cumulative = np.cumsum(g)
    t = np.arange(1, len(g) + 1, dtype=float)
    basis = 1.0 - _RATE_GRID[:, None] ** t[None, :]  # (rates, windows)
    levels = basis @ cumulative / np.sum(basis * basis, axis=1)
    errors = np.sum((levels[:, None] * basis - cumulative[None, :]) ** 2, axis=1)
    best = int(np.argmin(errors))
    rate = float(_RATE_GRID[best])
    return GainCurve(next=float(levels[best]) * rate ** len(g) * (1.0 - rate), rate=rate)


def last_gain_estimate(gains: Sequence[float], prior_rate: float = 0.7) -> GainCurve | None:
    """Algorithm 1's literal estimator: every further window gains what the last one did.

    `prior_rate` is accepted for a uniform estimator signature and not used: no decay is assumed.
    """
    if not gains:
        return None
    return GainCurve(next=float(gains[-1]), rate=1.0)


def blended_gain_curve(gains: Sequence[float], prior: float | None, *, rate: float, weight: float,
                       first_window: int = 0) -> GainCurve | None:
    """Posterior curve of a job whose window t is expected to gain `level * rate**t`.

    `prior` is the expected gain of window 0 (the first one after the prior was measured) and is
    worth `weight` windows of evidence; `gains` were measured in windows `first_window`,
    `first_window + 1`, ... With Gaussian noise of equal variance on the prior and on every gain,
    the posterior mean of the level is `(weight * prior + sum_t rate**t * g_t) / (weight + sum_t
    rate**(2t))` (least squares with the prior as `weight` pseudo-observations of window 0), and
    the next window (`first_window + len(gains)`) is expected to gain `level * rate**next`.
    Without a prior the measured gains alone decide (None when nothing is known either).
    """
    g = np.asarray(gains, dtype=float)
    basis = rate ** np.arange(first_window, first_window + len(g), dtype=float)
    prior_weight = weight if prior is not None else 0.0
    evidence = prior_weight + float(basis @ basis)
    if evidence <= 0.0:  # nothing measured, and no prior (or one worth nothing)
        return None
    level = (prior_weight * (prior or 0.0) + float(basis @ g)) / evidence
    return GainCurve(next=level * rate ** (first_window + len(g)), rate=rate)


def headroom_prior(agreement: float, scale: float = HEADROOM_GAIN) -> float:
    """Expected gain of a job's first micro-window: `scale` times its deployed model's disagreement
    with the teacher on the newest live samples (1 - agreement).

    Why disagreement: a window trains on the newest samples, so what it can fix is what the model
    gets wrong on them now; a camera whose model agrees with the teacher (adapted to a stable scene)
    has little to gain, whatever its history. Measured on the mixed fleet (benchmarks/slicing_signals.py,
    round-robin trajectory): when only half the cameras can have a window, giving it to the half with
    the most headroom scores +0.69 points (se 0.46, quick, 5 seeds) and +1.35 (se 0.60, full, seed 0)
    over a random half; the agreement drop -0.08 and +1.23; signals measured after a window (held-out
    gain, training-loss descent) do not predict the next window's live gain (|corr| <= 0.16).
    It is not the Planner's prior: planning whole runs by it (benchmarks/recl_slicing.py policy
    `gain_headroom_only`) did not beat the drop blend (quick +2.90 vs +3.35 points over round-robin,
    full -0.32 vs +0.20, the same seeds)."""
    return scale * max(0.0, 1.0 - float(agreement))
