"""Latency cost of a stem-sharing configuration, in GPU-seconds per second.

Apps fine-tuned from the same base share their frozen prefix, so the running models form a prefix
tree over the base's S segments. Segment k is shared by every app whose branchpoint b_a > k and
runs once per frame at the highest frame rate among them (lower rates see a subset of those frames);
each app's own segments [b_a, S) and its head run at the app's rate:

    cost = sum_k seg_k * max{fps_a : b_a > k}  +  sum_a (sum_{k >= b_a} seg_k + head) * fps_a
           \\____________ shared ____________/     \\______________ own ______________/

(Max-sharing at a common rate f costs sum(seg) f + n head f; No-sharing costs n (sum(seg) + head) f.)
`stem_cost` evaluates this for any batch of configurations; `IncrementalCost` keeps per-segment
summaries so the greedy prices the shared part of every app's next move in O(n + S + R) per step.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike


def _suffix_sums(segment_latency_s: Sequence[float] | np.ndarray) -> np.ndarray:
    """suffix[b] = sum of segment latencies from b to S (len S + 1, suffix[S] = 0)."""
    seg = np.asarray(segment_latency_s, dtype=float)
    return np.concatenate([np.cumsum(seg[::-1])[::-1], [0.0]])


def own_cost(
    segment_latency_s: Sequence[float], head_latency_s: float, branchpoints: ArrayLike, fps: ArrayLike
) -> np.ndarray:
    """Elementwise cost of an app's private part: segments [b, S) and its head at its own rate."""
    b = np.asarray(branchpoints, dtype=np.int64)
    return (_suffix_sums(segment_latency_s)[b] + head_latency_s) * np.asarray(fps, dtype=float)


def stem_cost(
    segment_latency_s: Sequence[float], head_latency_s: float, branchpoints: ArrayLike, fps: ArrayLike
) -> np.ndarray:
    """Total cost of configurations given as arrays of shape (..., n_apps): one cost per leading index."""
    b = np.asarray(branchpoints, dtype=np.int64)
    f = np.asarray(fps, dtype=float)
    total = own_cost(segment_latency_s, head_latency_s, b, f).sum(axis=-1)
    for k, latency in enumerate(segment_latency_s):
        total = total + latency * np.where(b > k, f, 0.0).max(axis=-1)
    return total


class IncrementalCost:
    """Running cost of one configuration and the shared-part price of each app's next move.

    With apps grouped by rate level j, let H_j be the largest branchpoint at level j (0 if none).
    Segment k then runs at the highest level j with H_j > k, so the shared cost only depends on
    the H_j, the runner-up branchpoint H2_j, and which app (if a single one) holds H_j:
      * app a at (b, j) moving up one rate level raises exactly the segments k < b that no higher
        level covers, k >= U_j = max_{j' > j} H_j': (rate_{j+1} - rate_j) * sum_{U_j <= k < b} seg_k;
      * app a going shallower (to b' < b) lowers a segment's rate only where it alone held the top
        rate: a must be the single app at H_j, and k in [max(b', U_j, H2_j), b); there the segment
        falls to the highest lower level covering it.
    So every rate-up price is one vectorised expression and at most one app per level has a
    non-zero shallower saving; a move updates two levels' summaries in O(S) Python.
    The app's own part of a move's price comes from `own_cost`.
    """

    def __init__(
        self,
        segment_latency_s: Sequence[float],
        head_latency_s: float,
        frame_rates: Sequence[float],
        branchpoints: np.ndarray,
        rate_levels: np.ndarray,
    ) -> None:
        seg = np.asarray(segment_latency_s, dtype=float)
        self._cum = np.concatenate([[0.0], np.cumsum(seg)])  # cum[m] = sum of seg[:m]
        self._rates = [float(f) for f in frame_rates]
        self._rate_step = np.append(np.diff(np.asarray(self._rates)), 0.0)  # rate_{j+1} - rate_j (0 at the top)
        self.branchpoints = np.array(branchpoints, dtype=np.int64)  # current branchpoint per app (read-only outside)
        self.levels = np.array(rate_levels, dtype=np.int64)  # current rate level per app (read-only outside)
        self._cum_b = self._cum[self.branchpoints]
        self._step = self._rate_step[self.levels]
        self._members: list[dict[int, set[int]]] = [{} for _ in self._rates]  # level -> branchpoint -> apps
        for a, (b, j) in enumerate(zip(self.branchpoints.tolist(), self.levels.tolist())):
            self._members[j].setdefault(b, set()).add(a)
        self._summary = [self._level_summary(j) for j in range(len(self._rates))]
        self._update_ceilings()
        self.total = float(stem_cost(seg, head_latency_s, self.branchpoints, np.asarray(self._rates)[self.levels]))

    def _level_summary(self, level: int) -> tuple[int, int, int]:
        """(H, H2, holder): top and runner-up branchpoint at `level`, the single app at H or -1."""
        found = sorted((b for b, apps in self._members[level].items() if apps), reverse=True)
        if not found or found[0] == 0:
            return 0, 0, -1
        holders = self._members[level][found[0]]
        if len(holders) > 1:
            return found[0], found[0], -1
        return found[0], found[1] if len(found) > 1 else 0, next(iter(holders))

    def _update_ceilings(self) -> None:
        """U_j = max_{j' > j} H_j' for every level (segments below it run faster than level j)."""
        ceilings, running = [], 0
        for top, _, _ in reversed(self._summary):
            ceilings.append(running)
            running = max(running, top)
        self._ceiling = ceilings[::-1]
        self._ceiling_cum = self._cum[np.array(self._ceiling)]

    def shared_rate_up(self) -> np.ndarray:
        """Per app, the shared-part cost change if it alone moved one rate level up (0 at the top)."""
        return self._step * np.maximum(0.0, self._cum_b - self._ceiling_cum[self.levels])

    def shared_shallower(self, new_branchpoints: np.ndarray) -> np.ndarray:
        """Per app, the shared-part cost change if it alone moved to new_branchpoints (<= its own)."""
        out = np.zeros(len(self.branchpoints))
        for level, (top, runner_up, holder) in enumerate(self._summary):
            if holder < 0:
                continue
            low = max(int(new_branchpoints[holder]), self._ceiling[level], runner_up)
            if low < top:
                current = self._rates[level] * (self._cum[top] - self._cum[low])
                out[holder] = self._lower_cover(level, low, top) - current
        return out

    def _lower_cover(self, level: int, low: int, high: int) -> float:
        """sum over k in [low, high) of seg_k times the highest rate below `level` whose sharers cover k."""
        total, start = 0.0, low
        for below in range(level - 1, -1, -1):
            end = min(self._summary[below][0], high)
            if end > start:
                total += self._rates[below] * (self._cum[end] - self._cum[start])
                start = end
        return total

    def move(self, app: int, branchpoint: int, level: int, delta: float) -> None:
        """Apply `app`'s move to (branchpoint, level), priced at `delta` (own_cost + shared_* part)."""
        old_b, old_level = int(self.branchpoints[app]), int(self.levels[app])
        self._members[old_level][old_b].discard(app)
        self._members[level].setdefault(branchpoint, set()).add(app)
        self.branchpoints[app], self.levels[app] = branchpoint, level
        self._cum_b[app], self._step[app] = self._cum[branchpoint], self._rate_step[level]
        for j in {old_level, level}:
            self._summary[j] = self._level_summary(j)
        self._update_ceilings()
        self.total += delta
