"""What an app head's output means when served and when scored."""
from __future__ import annotations

import math

import numpy as np
import pytest

from stemcell.models.readout import counts_from_output, events_from_output, read_app


def test_presence_is_a_sigmoid_at_the_threshold() -> None:
    reading = read_app("presence", 1, 0.0)
    assert reading.score == 0.5 and reading.label and reading.count is None
    assert not read_app("presence", 1, -2.0).label and read_app("presence", 1, -2.0, threshold=0.1).label
    assert read_app("presence", 1, -1e6).score == 0.0


@pytest.mark.parametrize(("rate", "min_count", "count", "label"), [(0.4, 1, 0, False), (2.6, 3, 3, True), (2.4, 3, 2, False)])
def test_count_rounds_the_rate_and_events_start_at_min_count(rate: float, min_count: int, count: int, label: bool) -> None:
    reading = read_app("count", min_count, math.log(rate))
    assert (reading.count, reading.label) == (count, label)
    below = sum(math.exp(-rate) * rate**k / math.factorial(k) for k in range(min_count))
    assert reading.score == pytest.approx(1 - below)  # P(N >= min_count) under Poisson(rate)


def test_vectorised_events_agree_with_served_readings() -> None:
    outputs = np.linspace(-4, 3, 29)
    for task, min_count in (("presence", 1), ("count", 1), ("count", 3)):
        served = [read_app(task, min_count, float(o)).label for o in outputs]
        assert events_from_output(task, min_count, outputs).tolist() == served
    assert counts_from_output(np.array([1e9]))[0] > 0  # huge outputs stay finite
