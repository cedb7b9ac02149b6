"""Cost model: hand-computed stem trees, batching, and the incremental move prices the greedy uses."""
from __future__ import annotations

import numpy as np
import pytest

from stemcell.scheduling.cost import IncrementalCost, own_cost, stem_cost

SEG = (0.01, 0.02, 0.03)  # three segments, 60 ms per frame in all
HEAD = 0.001


def test_max_sharing_and_no_sharing_closed_forms() -> None:
    # Max-sharing at 5 fps, 2 apps: the whole base once per frame plus two heads
    assert stem_cost(SEG, HEAD, [3, 3], [5, 5]) == pytest.approx(0.06 * 5 + 2 * HEAD * 5)
    # No-sharing at 5 fps, 2 apps: two full models
    assert stem_cost(SEG, HEAD, [0, 0], [5, 5]) == pytest.approx(2 * (0.06 + HEAD) * 5)


def test_three_apps_mixed_branchpoints_and_rates() -> None:
    # A: b=3 @10, B: b=1 @5, C: b=2 @2.5
    # seg0 shared by A,B,C -> runs at 10; seg1 shared by A,C -> 10; seg2 by A only -> 10
    shared = 0.01 * 10 + 0.02 * 10 + 0.03 * 10
    own = HEAD * 10 + (0.02 + 0.03 + HEAD) * 5 + (0.03 + HEAD) * 2.5
    assert stem_cost(SEG, HEAD, [3, 1, 2], [10, 5, 2.5]) == pytest.approx(shared + own) == pytest.approx(0.9425)


def test_shared_segment_runs_at_the_fastest_sharer_only() -> None:
    # A: b=2 @2.5, B: b=3 @5 -> seg0, seg1 run at 5 (B is faster), seg2 only for B at 5
    expected = 0.01 * 5 + 0.02 * 5 + 0.03 * 5 + (0.03 + HEAD) * 2.5 + HEAD * 5
    assert stem_cost(SEG, HEAD, [2, 3], [2.5, 5]) == pytest.approx(expected) == pytest.approx(0.3825)


def test_batched_costs_equal_one_by_one() -> None:
    rng = np.random.default_rng(0)
    b = rng.integers(0, 4, size=(50, 4))
    f = rng.choice([1.25, 2.5, 5.0, 10.0], size=(50, 4))
    batched = stem_cost(SEG, HEAD, b, f)
    assert batched.shape == (50,)
    assert np.allclose(batched, [stem_cost(SEG, HEAD, bi, fi) for bi, fi in zip(b, f)])


def test_sharing_less_or_sampling_more_never_costs_less() -> None:
    rng = np.random.default_rng(1)
    rates = np.array([1.25, 2.5, 5.0, 10.0])
    for _ in range(200):
        b, j = rng.integers(0, 4, size=5), rng.integers(0, 4, size=5)
        base = stem_cost(SEG, HEAD, b, rates[j])
        a = rng.integers(5)
        shallower, faster = b.copy(), j.copy()
        shallower[a] = rng.integers(0, b[a] + 1)
        faster[a] = rng.integers(j[a], 4)
        assert stem_cost(SEG, HEAD, shallower, rates[j]) >= base - 1e-12
        assert stem_cost(SEG, HEAD, b, rates[faster]) >= base - 1e-12


@pytest.mark.parametrize("seed", range(8))
def test_incremental_prices_equal_recomputed_cost_differences(seed: int) -> None:
    """Every app's shallower and rate-up price (own_cost + shared part) equals the exact cost change,
    over long random move sequences with ties in rates and branchpoints."""
    rng = np.random.default_rng(seed)
    n, num_segments = int(rng.integers(1, 9)), int(rng.integers(1, 7))
    seg = tuple(rng.uniform(0.001, 0.02, size=num_segments))
    rates = np.array([1.25, 2.5, 5.0, 10.0][: int(rng.integers(1, 5))])
    b, j = rng.integers(0, num_segments + 1, size=n), rng.integers(0, len(rates), size=n)
    state = IncrementalCost(seg, HEAD, rates, b, j)
    for _ in range(60):
        before = float(stem_cost(seg, HEAD, b, rates[j]))
        assert state.total == pytest.approx(before, rel=1e-9, abs=1e-12)
        target = np.array([rng.integers(0, bi + 1) for bi in b])
        here = own_cost(seg, HEAD, b, rates[j])
        shallower = own_cost(seg, HEAD, target, rates[j]) - here + state.shared_shallower(target)
        up = np.minimum(j + 1, len(rates) - 1)
        rate_up = own_cost(seg, HEAD, b, rates[up]) - here + state.shared_rate_up()
        for a in range(n):
            moved_b, moved_j = b.copy(), j.copy()
            moved_b[a] = target[a]
            assert shallower[a] == pytest.approx(stem_cost(seg, HEAD, moved_b, rates[j]) - before, abs=1e-12)
            moved_j[a] = up[a]
            assert rate_up[a] == pytest.approx(stem_cost(seg, HEAD, b, rates[moved_j]) - before, abs=1e-12)
        a, kind = int(rng.integers(n)), rng.random()
        if kind < 0.4:
            state.move(a, int(target[a]), int(j[a]), float(shallower[a]))
            b[a] = target[a]
        elif kind < 0.8:
            state.move(a, int(b[a]), int(up[a]), float(rate_up[a]))
            j[a] = up[a]
        else:  # any other move (deeper, slower), priced by recomputation, keeps the state varied
            b[a], j[a] = rng.integers(0, num_segments + 1), rng.integers(0, len(rates))
            state.move(a, int(b[a]), int(j[a]), float(stem_cost(seg, HEAD, b, rates[j])) - before)
