"""Measured event F1: sampling, holding and event matching."""
from __future__ import annotations

import numpy as np
import pytest

from stemcell.eval.event_metrics import event_score, held_predictions


def test_hold_repeats_the_last_sampled_answer() -> None:
    pred = np.array([1, 0, 0, 1, 1, 0, 0, 0], bool)
    assert held_predictions(pred, 2).tolist() == [1, 1, 0, 0, 1, 1, 0, 0]
    assert held_predictions(pred, 3, phase=1).tolist() == [0, 0, 0, 0, 1, 1, 1, 0]
    with pytest.raises(ValueError):
        held_predictions(pred, 0)


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
