"""Honest back-pressure: which frame requests an ingress replica takes in, and what it tells the rest.

Two things went wrong when each limit was its own setting: Serve's `max_ongoing_requests` kept
requests *below* Stemcell's frame queue, so Stemcell never refused anything, while Serve queued
the rest for seconds and then answered its own bare 503 (no Retry-After), or the client timed out.
So one setting, `limits.max_queued_frames`, decides everything here (`derive_limits`), in this order:

* each executor's coalescing queue holds at most `max_queued_frames` frames per replica, plus the one
  call of up to `max_batch` frames it has in flight;
* a replica therefore never holds more frame requests than `executors x (max_queued_frames +
  max_batch)` (every request carries at least one frame): more are refused at its door;
* Serve hands a replica twice that many requests plus room for every other route
  (`max_ongoing_requests`): as many again as it holds can be at its door being refused, so Serve
  itself does not queue a burst (without a deadline) in front of a replica that refuses faster;
  its own queue (`max_queued_requests`) is only a buffer for replicas that are starting.

Inside that bound the `AdmissionGate` admits a frame request only while the ones already inside
can be answered within the time budget (`limits.answer_within_s`), judged from the rate at which
requests have been completing, and it tells refused clients when to come back: when everyone ahead
of them could have been served at that rate, i.e. the requests inside *and* the clients already
told to come back later.  Counting the latter is what keeps a crowd honest: measured with 500
clients posting single frames on 2 cores, a fixed 1 s Retry-After brought the whole crowd back
every ~1.3 s (~400 requests/s of refusals), which saturated Serve's proxy and pushed refusals
themselves towards 2 s; spreading the returns over `waiting / rate` seconds keeps the offered load
near what the replica completes, so refusals stay cheap and fast.

Serve's own refusals (its queue full: `max_queued_requests`) carry a Retry-After too
(`serve_retry_after_s`, for Serve's `backpressure_config`): a client never gets a bare 503.
"""
from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

OTHER_ROUTES_HEADROOM = 64  # Serve slots per replica beyond frame requests: admin, status, probes, refusals
MIN_RATE_SAMPLES = 4  # completions needed before the measured rate is trusted
RETRY_AFTER_CAP_S = 30  # the longest Retry-After a refusal carries
WAIT_SHARE = 0.5  # share of the time budget a newcomer may expect to wait inside the replica


@dataclass(frozen=True)
class DerivedLimits:
    """Every queue bound of the frame path, derived from `limits.max_queued_frames` (one setting)."""

    max_queued_frames: int  # per executor per replica: the coalescing queue's bound (503 beyond)
    max_frame_requests: int  # frame requests one replica holds at once (503 at its door beyond)
    cold_frame_requests: int  # the same while no completion rate is known yet (one batch per executor)
    max_ongoing_requests: int  # Serve: requests handed to one replica at once (inside + at the door)
    max_queued_requests: int  # Serve: requests waiting for a replica (only while replicas start)


def derive_limits(max_queued_frames: int, executors: int, max_batch: int) -> DerivedLimits:
    """The Serve and Stemcell bounds that follow from `max_queued_frames` (see the module docstring)."""
    if max_queued_frames < 1 or executors < 1 or max_batch < 1:
        raise ValueError("max_queued_frames, executors and max_batch must be >= 1")
    frame_requests = executors * (max_queued_frames + max_batch)
    ongoing = 2 * frame_requests + OTHER_ROUTES_HEADROOM
    return DerivedLimits(max_queued_frames=max_queued_frames, max_frame_requests=frame_requests,
                         cold_frame_requests=min(frame_requests, executors * max_batch),
                         max_ongoing_requests=ongoing, max_queued_requests=ongoing)


class AdmissionGate:
    """Counts the frame requests inside one replica and decides, at the door, whether one more fits.

    Not thread-safe: one per replica, used from its event loop.  `clock` is injectable for tests.
    """

    def __init__(self, limits: DerivedLimits, answer_within_s: float, retry_after_s: int, *,
                 rate_window_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        if answer_within_s <= 0 or retry_after_s < 1 or rate_window_s <= 0:
            raise ValueError("answer_within_s and rate_window_s must be > 0, retry_after_s >= 1")
        self.limits = limits
        self.answer_within_s = answer_within_s
        self.retry_after_s = retry_after_s
        self._window_s = rate_window_s
        self._clock = clock
        self._done: deque[float] = deque()  # completion times within the rate window
        self._backoff: list[float] = []  # heap: when each refused client was told to come back
        self.inside = 0

    def rate(self) -> float | None:
        """Frame requests completed per second over the last window; None until enough completed."""
        now = self._clock()
        while self._done and self._done[0] < now - self._window_s:
            self._done.popleft()
        if len(self._done) < MIN_RATE_SAMPLES:
            return None
        return len(self._done) / max(now - self._done[0], self._window_s / 4)

    def expected_wait_s(self, inside: int) -> float | None:
        """How long `inside` requests take to drain at the measured rate (None when unknown)."""
        rate = self.rate()
        return None if rate is None else inside / rate

    def enter(self) -> int | None:
        """Admit one request (returns None) or refuse it: the Retry-After, in whole seconds, to answer."""
        wait = self.expected_wait_s(self.inside + 1)
        bound = self.limits.cold_frame_requests if wait is None else self.limits.max_frame_requests
        if self.inside >= bound or (wait is not None and wait > WAIT_SHARE * self.answer_within_s):
            return self.refuse()
        self.inside += 1
        return None

    def leave(self, completed: bool) -> None:
        """A request admitted by `enter` is over; `completed`: it was answered with results (counts for the rate)."""
        self.inside = max(0, self.inside - 1)
        if completed:
            self._done.append(self._clock())

    def waiting(self) -> int:
        """Refused clients whose Retry-After has not run out yet: they are coming back."""
        now = self._clock()
        while self._backoff and self._backoff[0] <= now:
            heapq.heappop(self._backoff)
        return len(self._backoff)

    def refuse(self) -> int:
        """Refuse one request: the Retry-After to send, in whole seconds, remembered as one more client
        coming back.  It is the time the replica needs, at its measured rate, to serve the requests
        inside and the clients already waiting to come back (at least `retry_after_s`, at most
        RETRY_AFTER_CAP_S), so a fleet that honours it offers about what the replica completes."""
        wait = self.expected_wait_s(self.inside + self.waiting() + 1)
        if wait is None:
            wait = self.answer_within_s
        seconds = int(min(RETRY_AFTER_CAP_S, max(self.retry_after_s, math.ceil(wait))))
        heapq.heappush(self._backoff, self._clock() + seconds)
        return seconds


def serve_retry_after_s(answer_within_s: float, retry_after_s: int) -> int:
    """The Retry-After on Serve's own 503 (its queue for a replica is full: `max_queued_requests`).

    Serve cannot measure a rate, so it says what a full replica needs at least: the whole time budget."""
    return max(retry_after_s, math.ceil(answer_within_s))
