"""Event F1 *measured* on a labelled stream, to check what the scheduler's model predicts.

An app sampling every `stride` frames sees only those frames and holds its last answer in between
(what a camera app at a lower frame rate reports). An event is found if any sampled frame inside it
is classified positive; a predicted event (a run of held positive answers) is correct if it
overlaps a true event. F1 is the harmonic mean of event recall and event precision.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stemcell.world import extract_events


@dataclass(frozen=True)
class EventScore:
    recall: float  # share of true events with at least one positive sampled frame inside
    precision: float  # share of predicted events that overlap a true event
    f1: float  # harmonic mean of the two
    true_events: int  # ground-truth events in the stream
    predicted_events: int  # runs of held positive predictions


def hold(sampled: np.ndarray, predicted: np.ndarray, length: int) -> np.ndarray:
    """Zero-order hold: each frame repeats the answer of the last sampled frame at or before it
    (frames before the first sample are negative)."""
    sampled = np.asarray(sampled, dtype=int)
    which = np.searchsorted(sampled, np.arange(length), side="right") - 1
    if not len(sampled):
        return np.zeros(length, dtype=bool)
    return np.where(which >= 0, np.asarray(predicted, dtype=bool)[np.clip(which, 0, None)], False)


def event_score(predicted: np.ndarray, truth: np.ndarray, stride: int = 1, phase: int = 0) -> EventScore:
    """Event recall/precision/F1 of per-frame `predicted` sampled every `stride` frames."""
    predicted, truth = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    if predicted.shape != truth.shape:
        raise ValueError(f"shape mismatch: {predicted.shape} vs {truth.shape}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    sampled = np.arange(len(truth))[phase::stride]
    return sampled_event_score(sampled, predicted[sampled], truth)


def sampled_event_score(sampled: np.ndarray, predicted: np.ndarray, truth: np.ndarray) -> EventScore:
    """Event recall/precision/F1 when only frames `sampled` (sorted indices into `truth`) were analysed.

    This is what a live stream measures: frames dropped on the way, or skipped by an app's lower
    frame rate, carry no answer, and the last answer is held until the next one.
    """
    sampled, truth = np.asarray(sampled, dtype=int), np.asarray(truth, dtype=bool)
    predicted = np.asarray(predicted, dtype=bool)
    if sampled.shape != predicted.shape:
        raise ValueError(f"{len(predicted)} predictions for {len(sampled)} sampled frames")
    if len(sampled) and (np.any(np.diff(sampled) <= 0) or sampled[0] < 0 or sampled[-1] >= len(truth)):
        raise ValueError("sampled frame indices must be increasing and inside the stream")
    hits = np.zeros_like(truth)
    hits[sampled] = predicted
    true_events = extract_events(truth)
    found = sum(bool(hits[e.start : e.stop].any()) for e in true_events)
    predicted_events = extract_events(hold(sampled, predicted, len(truth)))
    correct = sum(bool(truth[e.start : e.stop].any()) for e in predicted_events)
    recall = found / len(true_events) if true_events else 1.0
    precision = correct / len(predicted_events) if predicted_events else 1.0
    f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    return EventScore(recall, precision, f1, len(true_events), len(predicted_events))
