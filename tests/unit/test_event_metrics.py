"""Measured event F1: sampling, holding and event matching."""
from __future__ import annotations

import numpy as np
import pytest

from stemcell.eval.event_metrics import event_score, hold, sampled_event_score


def test_hold_repeats_the_last_sampled_answer() -> None:
    assert hold(np.array([0, 2, 4, 6]), np.array([1, 0, 1, 0], bool), 8).tolist() == [1, 1, 0, 0, 1, 1, 0, 0]
    assert hold(np.array([1, 4, 7]), np.array([0, 1, 0], bool), 8).tolist() == [0, 0, 0, 0, 1, 1, 1, 0]
    assert hold(np.array([], int), np.array([], bool), 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        event_score(np.zeros(4, bool), np.zeros(4, bool), stride=0)


def test_irregular_samples_match_a_regular_stride_when_they_coincide() -> None:
    rng = np.random.default_rng(3)
    truth = np.repeat(rng.random(40) < 0.4, 5)
    predicted = truth ^ (rng.random(len(truth)) < 0.1)
    sampled = np.arange(1, len(truth), 3)
    assert sampled_event_score(sampled, predicted[sampled], truth) == event_score(predicted, truth, stride=3, phase=1)


def test_dropped_frames_can_miss_an_event_and_bad_samples_are_refused() -> None:
    truth = np.array([0, 1, 1, 0, 0, 0, 1, 1, 1, 0], bool)
    s = sampled_event_score(np.array([0, 4, 7]), np.array([0, 0, 1], bool), truth)  # frames 1-2 were dropped
    assert (s.true_events, s.recall, s.precision) == (2, 0.5, 1.0)
    with pytest.raises(ValueError, match="increasing"):
        sampled_event_score(np.array([3, 3]), np.array([1, 1], bool), truth)
    with pytest.raises(ValueError, match="predictions"):
        sampled_event_score(np.array([3]), np.array([1, 1], bool), truth)


def test_perfect_predictions_score_one_at_stride_one() -> None:
    truth = np.array([0, 1, 1, 0, 0, 1, 0, 1, 1, 1], bool)
    s = event_score(truth, truth)
    assert (s.recall, s.precision, s.f1, s.true_events) == (1.0, 1.0, 1.0, 3)


def test_short_event_between_samples_is_missed() -> None:
    truth = np.zeros(12, bool)
    truth[1] = True  # one-frame event at an unsampled position
    truth[6:9] = True
    s = event_score(truth, truth, stride=4)  # samples frames 0, 4, 8
    assert s.true_events == 2 and s.recall == 0.5 and s.precision == 1.0


def test_false_alarm_counts_against_precision() -> None:
    truth = np.array([0, 0, 1, 1, 0, 0, 0, 0], bool)
    pred = np.array([0, 0, 1, 1, 0, 0, 1, 0], bool)
    s = event_score(pred, truth)
    assert s.recall == 1.0 and s.precision == 0.5 and s.f1 == pytest.approx(2 / 3)
