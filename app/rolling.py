"""A sliding window of (time, frames, latency): the frame rate and p50/p99 a status page shows.

Used by the ingress (per camera, `GET /cameras/{id}/status`) and by the stream sender's console
line; bounded in time and in entries so a busy camera cannot grow it.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np


class RollingWindow:
    def __init__(self, window_s: float = 10.0, max_entries: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._entries: deque[tuple[float, int, float]] = deque(maxlen=max_entries)
        self._started = clock()
        self.frames_total = 0
        self.requests_total = 0

    def add(self, frames: int, latency_ms: float) -> None:
        self._entries.append((self._clock(), frames, latency_ms))
        self.frames_total += frames
        self.requests_total += 1

    def _recent(self, now: float) -> list[tuple[float, int, float]]:
        while self._entries and self._entries[0][0] < now - self.window_s:
            self._entries.popleft()
        return list(self._entries)

    def snapshot(self) -> dict[str, float | int | None]:
        """Frames/s over the window (or since start, when younger), and latency percentiles in ms."""
        now = self._clock()
        recent = self._recent(now)
        span = min(self.window_s, max(now - self._started, 1e-9))
        latencies = np.array([e[2] for e in recent]) if recent else None
        return {
            "fps": sum(e[1] for e in recent) / span,
            "p50_ms": None if latencies is None else float(np.percentile(latencies, 50)),
            "p99_ms": None if latencies is None else float(np.percentile(latencies, 99)),
            "frames_total": self.frames_total,
            "requests_total": self.requests_total,
        }
