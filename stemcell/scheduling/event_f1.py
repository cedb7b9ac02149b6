"""Event-level quality of an app from its frame-level precision/recall and its frame rate.

Apps care about *events* (a car parks, a person enters), which last several frames. Sampling the
stream at a lower rate saves compute but leaves fewer chances to see each event; a less specialised
(more shared) model misses more frames. This module turns (frame precision p, frame recall r,
event length n, sampling stride s, miss correlation rho) into event recall, precision and F1.

Event recall (exact under the model below):
  * Sampling instants form a lattice with spacing s = stream_fps / fps and a uniformly random phase.
    An event covering n stream frames contains k sampled frames with k = floor(n/s) + 1 with
    probability frac(n/s) and k = floor(n/s) otherwise (E[k] = n/s). Events shorter than the stride
    can contain no sampled frame at all and are then missed for sure.
  * Misses are a stationary two-state Markov chain over consecutive sampled frames:
    P(miss first) = 1 - r, P(miss | previous missed) = (1 - r) + rho * r,
    P(miss | previous detected) = (1 - r)(1 - rho), so every sampled frame is missed with
    probability 1 - r and consecutive misses have correlation rho (rho = 0: independent frames,
    rho = 1: the whole event is seen or missed as one).
  * Event recall = 1 - E_k[P(all k sampled frames missed)],
    P(all missed | k) = (1 - r) * ((1 - r) + rho r)^(k - 1) for k >= 1 and 1 for k = 0.
  `simulate_event_recall` checks this against a frame-by-frame Monte-Carlo simulation.

Event precision (an assumption, not derived): event precision = frame precision p. Sampling is
independent of content, so the ratio of true- to false-positive *frames* among sampled frames, and
hence precision, is the same at every frame rate; assuming a spurious detection run spans as many
positive sampled frames on average as a true one, the same ratio holds for *events*. This keeps
precision independent of the frame rate, so raising the rate never lowers the modelled F1.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def sampled_count_distribution(event_length_frames: ArrayLike, stride: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(q, p_more): an event holds q + 1 sampled frames with probability p_more, else q.

    With a uniformly random sampling phase, the number of lattice points (spacing `stride`) in an
    interval of length n is floor(n/s) or floor(n/s) + 1, and its mean is exactly n/s.
    """
    x = np.asarray(event_length_frames, dtype=float) / np.asarray(stride, dtype=float)
    q = np.floor(x)
    return q, x - q


def _p_all_missed(k: np.ndarray, recall: np.ndarray, correlation: np.ndarray) -> np.ndarray:
    """P(a correlated detector misses all of k consecutive sampled frames)."""
    stay_missed = (1.0 - recall) + correlation * recall
    return np.where(k >= 1, (1.0 - recall) * stay_missed ** np.maximum(k - 1.0, 0.0), 1.0)


def event_recall(
    recall: ArrayLike, event_length_frames: ArrayLike, stride: ArrayLike, correlation: ArrayLike
) -> np.ndarray:
    """Probability that an event of `event_length_frames` is detected on at least one sampled frame.

    All arguments broadcast (numpy), so a whole (app, candidate, frame rate) table is one call.
    `stride` = stream_fps / fps >= 1; `correlation` is rho in [0, 1].
    """
    r = np.asarray(recall, dtype=float)
    rho = np.asarray(correlation, dtype=float)
    q, p_more = sampled_count_distribution(event_length_frames, stride)
    missed = (1.0 - p_more) * _p_all_missed(q, r, rho) + p_more * _p_all_missed(q + 1.0, r, rho)
    return 1.0 - missed


def event_precision(precision: ArrayLike) -> np.ndarray:
    """Event precision under the module's assumption: equal to frame precision at any frame rate."""
    return np.asarray(precision, dtype=float)


def harmonic_f1(precision: ArrayLike, recall: ArrayLike) -> np.ndarray:
    """F1 = 2pr / (p + r), defined as 0 where both are 0."""
    p = np.asarray(precision, dtype=float)
    r = np.asarray(recall, dtype=float)
    total = p + r
    return np.where(total > 0, 2.0 * p * r / np.where(total > 0, total, 1.0), 0.0)


def event_f1(
    precision: ArrayLike, recall: ArrayLike, event_length_frames: ArrayLike, stride: ArrayLike, correlation: ArrayLike
) -> np.ndarray:
    """Modelled event F1 of a model with frame precision/recall sampling every `stride` frames."""
    return harmonic_f1(event_precision(precision), event_recall(recall, event_length_frames, stride, correlation))


def simulate_event_recall(
    recall: float,
    event_length_frames: float,
    stride: float,
    correlation: float,
    *,
    trials: int,
    rng: np.random.Generator,
) -> float:
    """Monte-Carlo event recall, frame by frame, to validate `event_recall` independently.

    Each trial: the event length is an integer number of frames, floor(n) or ceil(n) with the mean
    n; the event starts at a random stream frame; the sampler keeps stream frames
    floor(phase + j * stride) with a uniform phase in [0, stride); the sampled frames inside the
    event are counted by listing them, and a Markov detector (first frame missed with probability
    1 - r, then the stay/leave probabilities of the module docstring) runs over them. The event
    counts as detected if any sampled frame inside it is detected.
    """
    if stride < 1:
        raise ValueError(f"stride: must be >= 1 (a rate above the stream's), got {stride}")
    n_floor = int(np.floor(event_length_frames))
    length = n_floor + (rng.random(trials) < event_length_frames - n_floor)
    start = rng.integers(0, int(np.ceil(stride)) + 1, size=trials)
    phase = rng.random(trials) * stride
    lattice = int(np.ceil((start.max() + length.max()) / stride)) + 2
    frames = np.floor(phase[:, None] + stride * np.arange(lattice)[None, :])
    inside = (frames >= start[:, None]) & (frames < (start + length)[:, None])
    k = inside.sum(axis=1)

    detected = np.zeros(trials, dtype=bool)
    missed_prev = np.ones(trials, dtype=bool)
    for i in range(int(k.max(initial=0))):
        if i == 0:
            p_miss = np.full(trials, 1.0 - recall)
        else:
            stay, fall = (1.0 - recall) + correlation * recall, (1.0 - recall) * (1.0 - correlation)
            p_miss = np.where(missed_prev, stay, fall)
        missed = rng.random(trials) < p_miss
        active = i < k
        detected |= active & ~missed
        missed_prev = missed
    return float(detected.mean())
