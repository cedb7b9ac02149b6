"""Event-F1 model: closed forms, monotonicity, and agreement with a frame-level Monte-Carlo simulation."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from stemcell.scheduling.event_f1 import (
    event_f1,
    event_recall,
    harmonic_f1,
    sampled_count_distribution,
    simulate_event_recall,
)

MC_BOUND = 0.02  # stated bound: |analytic - Monte-Carlo| <= 0.02 (20k trials: sd <= 0.0036, so > 5 sd)
MC_TRIALS = 20_000


@pytest.mark.parametrize("n,s", [(1, 1), (3, 2), (7.5, 4), (2, 8), (20, 10 / 3), (13, 14 / 8.7)])
def test_sampled_frame_count_has_mean_n_over_s(n: float, s: float) -> None:
    q, p_more = sampled_count_distribution(n, s)
    assert 0.0 <= p_more < 1.0
    assert q + p_more == pytest.approx(n / s)


def test_event_recall_closed_forms() -> None:
    # every frame sampled, independent misses: 1 - (1 - r)^n
    assert event_recall(0.6, 3, 1, 0.0) == pytest.approx(1 - 0.4**3)
    # fully correlated misses: the event is seen iff its first sampled frame is seen
    assert event_recall(0.6, 10, 2, 1.0) == pytest.approx(0.6)
    # event shorter than the stride: sampled with probability n / s, then detected with probability r
    assert event_recall(0.8, 1, 4, 0.5) == pytest.approx(0.8 / 4)
    # n / s = 1.5 sampled frames: one frame w.p. 0.5, two w.p. 0.5 (second missed w.p. 0.3 + 0.5 * 0.7)
    assert event_recall(0.7, 3, 2, 0.5) == pytest.approx(1 - (0.5 * 0.3 + 0.5 * 0.3 * 0.65))


def test_analytic_event_recall_within_0p02_of_monte_carlo() -> None:
    """Over a grid of event lengths, strides (integer and not), recalls and correlations, the analytic
    event recall is within MC_BOUND = 0.02 of a frame-by-frame simulation (seed fixed)."""
    rng = np.random.default_rng(1234)
    worst = 0.0
    grid = itertools.product([1, 3, 7.5, 20], [1, 2, 4, 8, 14 / 8.7], [0.3, 0.7, 0.95], [0.0, 0.5, 0.9])
    for n, s, r, rho in grid:
        simulated = simulate_event_recall(r, n, s, rho, trials=MC_TRIALS, rng=rng)
        analytic = float(event_recall(r, n, s, rho))
        worst = max(worst, abs(analytic - simulated))
        assert abs(analytic - simulated) <= MC_BOUND, (n, s, r, rho, analytic, simulated)
    assert worst > 0.0  # the simulation is an independent computation, not the formula again


def test_event_recall_rises_with_frame_recall_and_frame_rate() -> None:
    recalls = np.linspace(0.05, 0.95, 19)
    for n, rho in itertools.product([1, 4, 15], [0.0, 0.5, 0.9]):
        by_recall = event_recall(recalls, n, 3, rho)
        assert np.all(np.diff(by_recall) > 0)
        strides = 10 / np.array([10, 5, 2.5, 1.25, 0.625])  # fps falling: stride rising
        by_fps = event_recall(0.6, n, strides, rho)
        assert np.all(np.diff(by_fps) <= 1e-15)
        assert by_fps[0] > by_fps[-1]


def test_event_f1_is_harmonic_mean_with_frame_precision() -> None:
    assert event_f1(0.8, 0.6, 3, 1, 0.0) == pytest.approx(harmonic_f1(0.8, 1 - 0.4**3))
    assert harmonic_f1(0.0, 0.0) == 0.0
    table = event_f1(np.array([[0.9], [0.5]]), np.array([[0.7], [0.7]]), 5.0, np.array([1.0, 2.0, 4.0]), 0.5)
    assert table.shape == (2, 3) and np.all(table[0] > table[1])


def test_simulator_rejects_rates_above_the_stream() -> None:
    with pytest.raises(ValueError, match="stride"):
        simulate_event_recall(0.5, 3, 0.5, 0.0, trials=10, rng=np.random.default_rng(0))
