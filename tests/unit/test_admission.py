"""stemcell.admission: one setting gives every bound, and the gate refuses what cannot be answered in time."""
from __future__ import annotations

import pytest

from stemcell.admission import RETRY_AFTER_CAP_S, AdmissionGate, derive_limits, serve_retry_after_s


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
    # a refused client is told to wait until the requests inside (and itself) have drained
    assert gate.refuse() == 2  # ceil(102 / 100 per second)
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
    gate.inside = 39  # e.g. admitted before the replica slowed down
    assert gate.refuse() == 8  # (39 + 1) / 5 per second
    gate.inside = 10_000
    assert gate.refuse() == RETRY_AFTER_CAP_S


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


def _gate_at_rate(clock: FakeClock, per_s: float) -> AdmissionGate:
    gate = _gate(clock, frames=100_000)
    for _ in range(int(2 * per_s)):  # two seconds of completions at `per_s`
        gate.enter()
        clock.t += 1.0 / per_s
        gate.leave(completed=True)
    return gate


def test_a_crowd_is_spread_so_it_comes_back_at_the_rate_the_replica_serves() -> None:
    clock = FakeClock()
    gate = _gate_at_rate(clock, 100.0)
    # 500 clients refused in one burst: each is told to come back after everyone already waiting
    waits = [gate.refuse() for _ in range(500)]
    assert waits[0] == 1 and waits[-1] == 5  # ceil(500 / 100 per second)
    assert waits == sorted(waits) and gate.waiting() == 500
    # the promised returns never exceed what the replica completes per second (+ one second's rounding)
    for second in range(1, 6):
        assert sum(w <= second for w in waits) <= 100 * second + 100
    # clients whose Retry-After has run out no longer count: the next refusal is short again
    for _ in range(500):  # five more seconds at 100 per second
        gate.enter()
        clock.t += 0.01
        gate.leave(completed=True)
    assert gate.waiting() == 0
    assert gate.refuse() == 1


def test_a_cut_request_counts_as_a_client_coming_back() -> None:
    clock = FakeClock()
    gate = _gate_at_rate(clock, 10.0)
    assert [gate.refuse() for _ in range(3)] == [1, 1, 1]  # 1, 2, 3 waiting / 10 per second
    assert gate.waiting() == 3
    gate.inside = 20
    assert gate.refuse() == 3  # (20 inside + 3 waiting + itself) / 10 per second


def test_serve_own_refusal_carries_at_least_the_budget() -> None:
    assert serve_retry_after_s(2.0, 1) == 2
    assert serve_retry_after_s(1.5, 1) == 2
    assert serve_retry_after_s(2.0, 5) == 5
