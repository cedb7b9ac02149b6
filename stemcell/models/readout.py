"""What an app's head output means: presence (a logit) or a count (a log-rate), served and scored alike.

A `count` app's head predicts log(λ), the expected number of objects of its class(es) (trained with
a Poisson likelihood). Served: `count` = round(λ); the event is on while count >= min_count; `score`
is P(N >= min_count) under Poisson(λ), a probability like a presence app's sigmoid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_MAX_LOG_RATE = 20.0  # exp(20) ~ 5e8 objects: far past any frame; keeps exp finite


@dataclass(frozen=True)
class AppReading:
    score: float  # presence: sigmoid(logit); count: P(count >= min_count)
    label: bool  # the app's answer for this frame (the event condition)
    count: int | None  # objects counted (count apps only)


def counts_from_output(output: np.ndarray) -> np.ndarray:
    """int (N,) rounded expected counts from log-rate outputs."""
    return np.rint(np.exp(np.minimum(np.asarray(output, np.float64), _MAX_LOG_RATE))).astype(np.int64)


def events_from_output(task: str, min_count: int, output: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """bool (N,) the event condition per frame from the head outputs (vectorised, for evaluation)."""
    output = np.asarray(output, np.float64)
    if task == "count":
        return counts_from_output(output) >= min_count
    return 1.0 / (1.0 + np.exp(-output)) >= threshold


def read_app(task: str, min_count: int, output: float, threshold: float = 0.5) -> AppReading:
    """One frame's served answer from the app head's single output."""
    if task == "count":
        rate = math.exp(min(float(output), _MAX_LOG_RATE))
        count = int(round(rate))
        below = sum(math.exp(-rate) * rate**k / math.factorial(k) for k in range(min_count))
        return AppReading(score=min(1.0, max(0.0, 1.0 - below)), label=count >= min_count, count=count)
    score = 1.0 / (1.0 + math.exp(-float(output))) if output > -700 else 0.0
    return AppReading(score=score, label=score >= threshold, count=None)
