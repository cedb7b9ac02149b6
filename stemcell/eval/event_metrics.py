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


def held_predictions(predicted: np.ndarray, stride: int, phase: int = 0) -> np.ndarray:
    """Zero-order hold of the predictions on frames phase, phase+stride, ... (others unseen)."""
    predicted = np.asarray(predicted, dtype=bool)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    sampled = np.arange(len(predicted))[phase::stride]
    held = np.zeros_like(predicted)
    if len(sampled):
        which = np.clip(np.searchsorted(sampled, np.arange(len(predicted)), side="right") - 1, 0, None)
        held = predicted[sampled][which]
        held[: sampled[0]] = False
    return held


def event_score(predicted: np.ndarray, truth: np.ndarray, stride: int = 1, phase: int = 0) -> EventScore:
    """Event recall/precision/F1 of per-frame `predicted` sampled every `stride` frames."""
    predicted, truth = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    if predicted.shape != truth.shape:
        raise ValueError(f"shape mismatch: {predicted.shape} vs {truth.shape}")
    sampled_hits = np.zeros_like(predicted)
    sampled_hits[phase::stride] = predicted[phase::stride]
    true_events = extract_events(truth)
    found = sum(bool(sampled_hits[e.start : e.stop].any()) for e in true_events)
    predicted_events = extract_events(held_predictions(predicted, stride, phase))
    correct = sum(bool(truth[e.start : e.stop].any()) for e in predicted_events)
    recall = found / len(true_events) if true_events else 1.0
    precision = correct / len(predicted_events) if predicted_events else 1.0
    f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    return EventScore(recall, precision, f1, len(true_events), len(predicted_events))
