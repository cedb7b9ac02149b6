"""When a pulled camera reconnects, and which state it is in: pure, clock passed in.

States (what `GET /admin/cameras` shows): `streaming` (frames arrive), `reconnecting` (the stream
failed fewer than `max_failures` times in a row; retried with capped, jittered exponential backoff),
`offline` (that many failures in a row; retried every `offline_retry_s`, and the last error says
why), `stopped` (disabled by the admin). Push cameras (no source) are `push`; that is decided by
the fleet list, not here. Jitter keeps hundreds of cameras behind one dead switch from reconnecting
in lockstep.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal

from stemcell.retry import jittered_backoff

State = Literal["streaming", "reconnecting", "offline", "stopped", "push"]


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: base * 2**(n-1) capped at `cap_s`, minus up to `jitter` of it at random."""

    base_s: float = 0.5
    cap_s: float = 10.0
    jitter: float = 0.5  # fraction of the delay drawn at random (0: none, 1: anywhere in [0, delay])
    max_failures: int = 5  # failures in a row before the camera is `offline`
    offline_retry_s: float = 30.0  # how often an offline camera is tried again

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s or not 0 <= self.jitter <= 1 or self.max_failures < 1:
            raise ValueError(f"invalid backoff {self}")

    def state_after(self, failures: int) -> State:
        """The state after `failures` failures in a row (0: streaming)."""
        if failures <= 0:
            return "streaming"
        return "offline" if failures >= self.max_failures else "reconnecting"

    def delay(self, failures: int, draw: float) -> float:
        """Seconds to wait after the `failures`-th failure in a row; `draw` is uniform in [0, 1)."""
        if failures >= self.max_failures:
            return self.offline_retry_s
        return jittered_backoff(self.base_s, self.cap_s, max(0, failures - 1), self.jitter, draw)


class RateMeter:
    """Events per second over the last `window_s` seconds."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def add(self, now: float, n: int = 1) -> None:
        self._times.extend([now] * n)
        self._prune(now)

    def rate(self, now: float) -> float:
        self._prune(now)
        return len(self._times) / self.window_s

    def _prune(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()


@dataclass(frozen=True)
class HealthSnapshot:
    """One camera's ingestion health as the fleet list shows it."""

    state: State
    last_frame_at: float | None  # wall-clock seconds of the newest frame read
    fps_in: float  # frames/s read from the source (last 5 s)
    fps_analysed: float  # frames/s the executor analysed (last 5 s)
    frames_dropped: int  # frames overwritten before analysis (newest-frame-only)
    reconnects: int  # successful re-connections after a failure
    last_error: str | None  # why the last open or read failed
    frames_in_total: int = 0  # frames read since the camera was attached (the metrics count these)
    frames_analysed_total: int = 0  # frames the executor answered since then


class CameraHealth:
    """The state machine of one pulled camera (thread-safe: the reader thread and the actor both write)."""

    def __init__(self, backoff: Backoff, *, enabled: bool = True) -> None:
        self.backoff = backoff
        self._lock = threading.Lock()
        self.failures = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self.last_frame_at: float | None = None
        self._ever_streamed = False
        self._stopped = not enabled
        self._in, self._analysed = RateMeter(), RateMeter()
        self.frames_in = self.frames_analysed = 0

    def frame(self, now: float, wall: float) -> None:
        """A frame was read: the stream is up (a reconnect, when it had failed before)."""
        with self._lock:
            if self.failures and self._ever_streamed:
                self.reconnects += 1
            self.failures = 0
            self._ever_streamed = True
            self.last_frame_at = wall
            self.frames_in += 1
            self._in.add(now)

    def failed(self, error: str, draw: float) -> float:
        """An open or read failed: returns the seconds to wait before the next attempt."""
        with self._lock:
            self.failures += 1
            self.last_error = error[:300]
            return self.backoff.delay(self.failures, draw)

    def analysed(self, now: float, n: int = 1) -> None:
        with self._lock:
            self.frames_analysed += n
            self._analysed.add(now, n)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True

    @property
    def state(self) -> State:
        if self._stopped:
            return "stopped"
        if self.failures == 0 and not self._ever_streamed:
            return "reconnecting"  # connecting for the first time
        return self.backoff.state_after(self.failures)

    def snapshot(self, now: float, dropped: int) -> HealthSnapshot:
        with self._lock:
            return HealthSnapshot(self.state, self.last_frame_at, round(self._in.rate(now), 2),
                                  round(self._analysed.rate(now), 2), dropped, self.reconnects, self.last_error,
                                  self.frames_in, self.frames_analysed)
