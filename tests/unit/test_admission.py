"""stemcell.admission: one setting gives every bound, and the gate refuses what cannot be answered in time."""
from __future__ import annotations

import pytest

from stemcell.admission import RETRY_AFTER_CAP_S, AdmissionGate, derive_limits


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_derived_limits_cannot_contradict() -> None:
    for frames, executors, batch in [(1, 1, 1), (16, 1, 64), (512, 1, 64), (512, 4, 32), (64, 3, 8)]:
        d = derive_limits(frames, executors, batch)
        # Serve hands a replica every frame request its queues could hold, as many again to refuse at its
        # door, plus room for other routes: a burst is not queued by Serve in front of a replica that refuses it
        assert d.max_ongoing_requests > 2 * d.max_frame_requests and d.max_frame_requests >= executors * frames
        assert d.max_frame_requests == executors * (frames + batch)
        assert 1 <= d.cold_frame_requests <= d.max_frame_requests
        assert d.max_queued_requests >= d.max_ongoing_requests - d.max_frame_requests
    with pytest.raises(ValueError):
        derive_limits(0, 1, 1)


def _gate(clock: FakeClock, frames: int = 512, batch: int = 8) -> AdmissionGate:
    return AdmissionGate(derive_limits(frames, 1, batch), answer_within_s=2.0, retry_after_s=1, clock=clock)


def test_cold_gate_admits_one_batch_then_refuses_with_retry_after() -> None:
    clock = FakeClock()
    gate = _gate(clock)
    assert all(gate.enter() is None for _ in range(8))  # one batch per executor while the rate is unknown
    assert gate.enter() == 2  # no rate yet: come back after the whole budget
    assert gate.inside == 8


def test_gate_admits_what_drains_within_half_the_budget() -> None:
    clock = FakeClock()
    gate = _gate(clock)
    for _ in range(100):  # 100 completions per second measured over the last second
        assert gate.enter() is None
        clock.t += 0.01
        gate.leave(completed=True)
    assert gate.inside == 0 and gate.rate() == pytest.approx(100 / 1.0, rel=0.05)
    while gate.enter() is None:
        pass
    # a newcomer may expect at most 1 s (half of 2 s) of queue: about 100 requests inside at 100/s
    assert 95 <= gate.inside <= 102
    # a refused client is told to wait until the requests inside have drained
    assert gate.retry_after() == 1
    for _ in range(gate.inside):
        gate.leave(completed=False)
    assert gate.inside == 0 and gate.enter() is None


def test_retry_after_grows_with_the_queue_and_is_capped() -> None:
    clock = FakeClock()
    gate = _gate(clock, frames=100_000)
    for _ in range(10):  # a slow replica: 5 completions per second
        gate.enter()
        clock.t += 0.2
        gate.leave(completed=True)
    gate.inside = 40  # e.g. admitted before the replica slowed down
    assert gate.retry_after() == 8  # 40 / 5 per second
    gate.inside = 10_000
    assert gate.retry_after() == RETRY_AFTER_CAP_S


def test_rate_is_forgotten_after_a_quiet_window() -> None:
    clock = FakeClock()
    gate = _gate(clock)
    for _ in range(10):
        gate.enter()
        clock.t += 0.01
        gate.leave(completed=True)
    assert gate.rate() is not None
    clock.t += 5.0
    assert gate.rate() is None  # stale: back to the cold bound rather than trusting an old rate
