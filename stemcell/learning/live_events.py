"""Event-level figures of a camera app from its live samples: how long the camera's events last, and
how many of a candidate's detections are real events.

Why: the Planner predicts an app's event F1 with `stemcell.scheduling.event_f1`, whose precision
term assumes event precision = frame precision and whose recall term needs the event length. On a
camera the package never saw both assumptions break: a model that is unsure of the scene answers
"yes" for long stretches, so its *frame* precision is low (most of the stretch holds no object)
while its *event* precision is high (the stretch overlaps a real event), and the package's event
length describes the package's videos, not this camera. Measured in benchmarks/live_learning.py
(`--only plan`): with frame precision the live plan missed measured event F1 by 0.46 on average,
with the event precision below by 0.07.

Everything is computed on the teacher-labelled samples alone (what the RetrainWorker sees), in
capture order:
- each sample stands for the time to the next one (its *span*; the last one repeats the gap before
  it). ASR samples some periods more densely than others; weighting by span (1/rate) keeps a busy
  period from counting more than a quiet one of the same length;
- a gap over `BREAK_FACTOR` x its neighbouring gaps (the camera stopped streaming, a sampler
  restart) ends every run: a run must not bridge time nobody looked at;
- a teacher event is a run of consecutive teacher-positive samples; its length is the sum of its
  samples' spans (an event of n seconds sampled every s seconds holds n/s samples on average, the
  event-F1 model's own lattice);
- a predicted event is a run of consecutive samples the candidate calls positive; it is correct if
  a teacher-positive sample lies in it (what `stemcell.eval.event_metrics` counts, on the samples);
- event recall here is at the *sampling* rate (the share of teacher events with a positive
  prediction on one of their samples). The Planner does not plan with it directly (it plans other
  frame rates); it fits the candidate's *miss correlation* rho (`miss_correlation`): the event-F1
  model with the candidate's frame recall, the events' mean sample count and the sampling lattice
  as stride must give this sampled event recall. A model that fails on whole events (an unfamiliar
  object or scene) has rho near 1, and then analysing more frames of an event does not find it; the
  package's 0.5 made the live plan predict event recall ~1.0 where 0.7 was measured.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stemcell.scheduling.event_f1 import event_recall
from stemcell.world import extract_events

BREAK_FACTOR = 5.0  # a gap this many times its neighbouring gaps ends every run
MIN_FIT_EVENTS = 3  # teacher events before a miss correlation is fitted
_RHO_GRID = np.linspace(0.0, 1.0, 201)


@dataclass(frozen=True)
class EventFigures:
    """One candidate's event figures on its live samples (None where there is no such event)."""

    events: int  # teacher events among the samples
    predicted_events: int  # runs of positive predictions among the samples
    correct_events: int  # predicted events holding a teacher-positive sample
    event_precision: float | None
    event_recall: float | None  # at the sampling rate
    event_length_s: float | None  # mean teacher event length, capture seconds
    event_samples: float | None  # mean samples per teacher event


def sample_spans(stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(span of each sample in seconds, whether a break follows it). A gap is a break when it is over
    `BREAK_FACTOR` x the larger of its neighbouring gaps (an ASR rate change is not: the gaps after it
    are as long), or not positive (a restarted clock); the sample before a break gets that
    neighbouring gap as its span, so an outage gives no sample extra weight."""
    stamps = np.asarray(stamps, dtype=float)
    if len(stamps) < 3:
        gap = float(stamps[1] - stamps[0]) if len(stamps) == 2 and stamps[1] > stamps[0] else 1.0
        return np.full(len(stamps), gap), np.zeros(len(stamps), bool)
    gaps = np.diff(stamps)
    neighbour = np.maximum(np.r_[gaps[1], gaps[:-1]], np.r_[gaps[1:], gaps[-2]])
    breaks = (gaps <= 0) | (gaps > BREAK_FACTOR * neighbour)
    spans = np.where(breaks, np.maximum(neighbour, 0.0), gaps)
    return np.r_[spans, spans[-1]], np.r_[breaks, False]


def runs(flags: np.ndarray, breaks: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in `flags`, a run ending where `breaks` is True (the stretches
    between breaks are cut apart, then `extract_events` finds the runs of each)."""
    flags = np.asarray(flags, bool)
    cuts = np.flatnonzero(np.asarray(breaks, bool)[:-1]) + 1  # a break after sample i: a new stretch at i + 1
    return [(int(lo) + e.start, int(lo) + e.stop)
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(flags)]) for e in extract_events(flags[lo:hi])]


def event_figures(predicted: np.ndarray, teacher: np.ndarray, stamps: np.ndarray) -> EventFigures:
    """Event figures of one candidate's answers on samples in capture order (see the module docstring)."""
    predicted, teacher = np.asarray(predicted, bool), np.asarray(teacher, bool)
    spans, breaks = sample_spans(stamps)
    true_runs, predicted_runs = runs(teacher, breaks), runs(predicted, breaks)
    correct = sum(bool(teacher[a:b].any()) for a, b in predicted_runs)
    found = sum(bool(predicted[a:b].any()) for a, b in true_runs)
    return EventFigures(
        events=len(true_runs), predicted_events=len(predicted_runs), correct_events=correct,
        event_precision=correct / len(predicted_runs) if predicted_runs else None,
        event_recall=found / len(true_runs) if true_runs else None,
        event_length_s=float(np.mean([spans[a:b].sum() for a, b in true_runs])) if true_runs else None,
        event_samples=float(np.mean([b - a for a, b in true_runs])) if true_runs else None)


def miss_correlation(recall: float | None, figures: EventFigures) -> float | None:
    """The rho under which the event-F1 model, sampling every sample (stride 1 in sample units) over
    events of the measured mean sample count, gives the measured sampled event recall; the nearest
    end of [0, 1] when no rho does; None with fewer than `MIN_FIT_EVENTS` teacher events."""
    if recall is None or figures.event_recall is None or figures.event_samples is None \
            or figures.events < MIN_FIT_EVENTS:
        return None
    modelled = event_recall(recall, figures.event_samples, 1.0, _RHO_GRID)  # falls as rho grows
    return float(_RHO_GRID[int(np.argmin(np.abs(modelled - figures.event_recall)))])
