"""Sliding time buffer: eviction by timestamp, memory bound, seeded uniform sampling."""
from __future__ import annotations

import numpy as np
import pytest

from stemcell.learning.buffer import SampleBuffer


def _frame(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value % 256, dtype=np.uint8)


def test_keeps_only_the_last_horizon_seconds() -> None:
    buf = SampleBuffer(horizon_s=240.0)
    for t in range(301):
        buf.add(float(t), _frame(t), np.array([t % 2], dtype=np.float32))
    assert buf.oldest_s == 60.0 and buf.latest_s == 300.0 and len(buf) == 241
    buf.evict(now_s=400.0)  # time passes with no new samples (rate throttled down)
    assert buf.oldest_s == 160.0


def test_eviction_follows_timestamps_not_counts() -> None:
    buf = SampleBuffer(horizon_s=10.0)
    times = [0.0, 0.1, 0.2, 5.0, 12.0]  # bursty sampling
    for t in times:
        buf.add(t, _frame(0), np.zeros(1))
    assert list(buf.timestamps()) == [5.0, 12.0]


def test_max_items_bounds_memory() -> None:
    buf = SampleBuffer(horizon_s=1e9, max_items=5)
    for t in range(20):
        buf.add(float(t), _frame(t), np.zeros(1))
    assert len(buf) == 5 and buf.oldest_s == 15.0


def test_rejects_time_going_backwards_and_bad_frames() -> None:
    buf = SampleBuffer()
    buf.add(5.0, _frame(0), np.zeros(1))
    with pytest.raises(ValueError):
        buf.add(4.0, _frame(0), np.zeros(1))
    with pytest.raises(ValueError):
        buf.add(6.0, np.zeros((4, 4, 3), dtype=np.float32), np.zeros(1))
    with pytest.raises(ValueError):
        SampleBuffer().sample(2, np.random.default_rng(0))


def test_sampling_is_seeded_and_uniform() -> None:
    buf = SampleBuffer(horizon_s=100.0)
    buf.extend(np.arange(10.0), np.stack([_frame(i) for i in range(10)]), np.arange(10.0)[:, None])
    frames_a, labels_a = buf.sample(4, np.random.default_rng(7))
    frames_b, labels_b = buf.sample(4, np.random.default_rng(7))
    assert frames_a.shape == (4, 4, 4, 3) and labels_a.shape == (4, 1)
    assert np.array_equal(frames_a, frames_b) and np.array_equal(labels_a, labels_b)
    assert np.array_equal(frames_a[:, 0, 0, 0], labels_a[:, 0].astype(np.uint8))  # pairs stay together
    assert len(set(labels_a[:, 0])) == 4  # without replacement when enough samples
    rng = np.random.default_rng(0)
    counts = np.bincount(np.concatenate([buf.sample(5, rng)[1][:, 0].astype(int) for _ in range(2000)]), minlength=10)
    assert counts.min() > 0.9 * 1000 and counts.max() < 1.1 * 1000
    assert buf.sample(25, rng)[0].shape[0] == 25  # with replacement when the buffer is small


def test_items_keep_the_callers_key() -> None:
    buf = SampleBuffer()
    for t in range(3):
        buf.add(float(t), _frame(t), np.array([t], np.float32), key=100 + t)
    items = buf.sample_items(3, np.random.default_rng(0))
    assert sorted(it.key for it in items) == [100, 101, 102]
    assert all(it.key == 100 + int(it.labels[0]) for it in items)
