"""Event extraction: maximal runs of presence as half-open ranges, including the edge cases."""
from __future__ import annotations

import numpy as np
import pytest

from stemcell.world import Event, extract_events


def test_empty_and_all_false_have_no_events() -> None:
    assert extract_events(np.zeros(0, bool)) == []
    assert extract_events(np.zeros(7, bool)) == []


def test_all_true_is_one_event() -> None:
    assert extract_events(np.ones(5, bool)) == [Event(0, 5)]


def test_runs_touching_both_ends() -> None:
    signal = np.array([1, 1, 0, 0, 1, 0, 1, 1, 1], bool)
    events = extract_events(signal)
    assert events == [Event(0, 2), Event(4, 5), Event(6, 9)]
    assert [e.length for e in events] == [2, 1, 3]


def test_single_frames_and_int_input() -> None:
    assert extract_events(np.array([0, 1, 0, 1, 0])) == [Event(1, 2), Event(3, 4)]
    assert extract_events(np.array([1])) == [Event(0, 1)]


def test_events_reconstruct_the_signal() -> None:
    signal = np.random.default_rng(0).random(500) < 0.4
    rebuilt = np.zeros_like(signal)
    for e in extract_events(signal):
        assert e.start < e.stop
        rebuilt[e.start : e.stop] = True
    assert np.array_equal(rebuilt, signal)


def test_rejects_non_1d() -> None:
    with pytest.raises(ValueError):
        extract_events(np.zeros((3, 2), bool))
