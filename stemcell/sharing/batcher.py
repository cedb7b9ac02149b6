"""Cross-camera batching: requests from many cameras wait a few ms and go through one tree forward.

Per-request overhead, not the model, bounds throughput when each camera sends a frame at a time, and
shared segments are cheaper per frame in larger batches. The batcher waits up to `max_wait_ms` after
the first queued request, or until `max_batch` frames are queued, then hands the requests to one
`run` call. While that call runs (in a worker thread), new requests keep queueing, so the next batch
forms by itself under load. The queue is bounded in frames: past it, `submit` raises `Overloaded` at
once (callers answer 503 + Retry-After) instead of letting latency grow without bound.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
RunBatch = Callable[[list[T]], Awaitable[Sequence["R | BaseException"]]]


class Overloaded(RuntimeError):
    """The queue is full; retry after `retry_after_s` seconds (an estimate of the time to drain it)."""

    def __init__(self, queued_frames: int, retry_after_s: float) -> None:
        super().__init__(f"overloaded: {queued_frames} frames queued; retry after {retry_after_s:.3f}s")
        self.queued_frames = queued_frames
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[type[Overloaded], tuple[int, float]]:
        # Crosses process boundaries (Ray re-raises it in the caller), so it must unpickle.
        return (Overloaded, (self.queued_frames, self.retry_after_s))


class DeviceOutOfMemory(Overloaded):
    """The batch did not fit the executor's GPU memory share: its requests are refused (503 +
    Retry-After, like a full queue) and the executor serves the next batch normally."""

    def __init__(self, detail: str, retry_after_s: float = 1.0) -> None:
        RuntimeError.__init__(self, f"GPU out of memory, retry after {retry_after_s:.3f}s: {detail}")
        self.detail = detail
        self.queued_frames = 0
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[type[DeviceOutOfMemory], tuple[str, float]]:  # type: ignore[override]
        return (DeviceOutOfMemory, (self.detail, self.retry_after_s))


@dataclass
class _Pending(Generic[T, R]):
    item: T
    frames: int
    future: asyncio.Future[R]
    enqueued: float


@dataclass(frozen=True)
class BatcherStats:
    requests: int  # requests completed (successfully or not)
    frames: int  # frames in dispatched batches
    batches: int  # `run` calls
    mean_batch_frames: float
    queued_frames: int  # waiting now
    p50_ms: float  # submit-to-result latency over the recent window
    p99_ms: float


class CrossCameraBatcher(Generic[T, R]):
    """Collects `(item, frames)` submissions into batches for one `run(items) -> results` coroutine.

    `run` returns one result per item, in order; an exception instance in a slot fails only that
    item's caller. `clock` is injectable so tests can control deadlines.
    """

    def __init__(
        self,
        run: RunBatch,
        *,
        max_batch: int = 64,
        max_wait_ms: float = 4.0,
        max_queue_frames: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        window: int = 2048,
    ) -> None:
        if max_batch < 1 or max_queue_frames < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue_frames must be >= 1, max_wait_ms >= 0")
        self._run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1e3
        self.max_queue_frames = max_queue_frames
        self._clock = clock
        self._queue: deque[_Pending[T, R]] = deque()
        self._queued_frames = 0
        self._arrived = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._latencies_ms: deque[float] = deque(maxlen=window)
        self._seconds_per_frame = 0.0  # EWMA of run time per frame (for Retry-After)
        self._requests = self._frames = self._batches = 0
        self._flush = False  # a complete batch is queued: `_fill` stops waiting for more

    @property
    def queued_frames(self) -> int:
        return self._queued_frames

    async def submit(self, item: T, frames: int) -> R:
        """Queue `item` (worth `frames` frames) and wait for its result."""
        (future,) = self._enqueue([item], [frames])
        return await future

    async def submit_many(self, items: Sequence[T], frames: Sequence[int], *,
                          complete: bool = False) -> list[R | BaseException]:
        """Queue several items at once (one caller's batch, e.g. an interval's pulled frames of many
        cameras) and wait for all: one check against the queue bound, no task per item, and each
        item's result or its own exception in its slot (one bad camera fails only itself).
        `complete`: the items are a whole batch already (the caller gathered them), so the batch
        that takes them runs at once instead of waiting `max_wait_ms` for more."""
        futures = self._enqueue(items, frames)
        self._flush = self._flush or complete
        return await asyncio.gather(*futures, return_exceptions=True)

    def _enqueue(self, items: Sequence[T], frames: Sequence[int]) -> list[asyncio.Future[R]]:
        """Queue `items` (all or none: `Overloaded` past the bound) and start the serving loop if needed."""
        total = sum(frames)
        if self._queued_frames + total > self.max_queue_frames and self._queue:
            drain = self._queued_frames * self._seconds_per_frame
            raise Overloaded(self._queued_frames, max(drain, self.max_wait_s, 0.05))
        loop = asyncio.get_running_loop()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = loop.create_task(self._serve())
        now = self._clock()
        futures: list[asyncio.Future[R]] = [loop.create_future() for _ in items]
        self._queue.extend(_Pending(item, n, future, now) for item, n, future in zip(items, frames, futures))
        self._queued_frames += total
        self._arrived.set()
        return futures

    async def _serve(self) -> None:
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            await self._fill(self._clock() + self.max_wait_s)
            batch = self._take()
            self._flush = False
            if batch:
                await self._dispatch(batch)

    async def _fill(self, deadline: float) -> None:
        """Wait until `max_batch` frames are queued or the deadline (from the first request) passes."""
        while self._queued_frames < self.max_batch and not self._flush:
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Pending[T, R]]:
        """FIFO requests up to `max_batch` frames (at least one while any waits; requests are never split).

        Requests whose caller went away while queued (cancelled: a deadline passed, the client left)
        are dropped here: under overload, running them would only delay the ones still awaited."""
        batch: list[_Pending[T, R]] = []
        frames = 0
        while self._queue and (not batch or frames + self._queue[0].frames <= self.max_batch):
            pending = self._queue.popleft()
            self._queued_frames -= pending.frames
            if pending.future.done():
                continue
            frames += pending.frames
            batch.append(pending)
        return batch

    async def _dispatch(self, batch: list[_Pending[T, R]]) -> None:
        frames = sum(p.frames for p in batch)
        started = self._clock()
        try:
            results = await self._run([p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"run returned {len(results)} results for {len(batch)} requests")
        except asyncio.CancelledError:  # closing: the batch's callers must not wait forever
            for pending in batch:
                pending.future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - a failing batch must fail its callers, not the loop
            log.exception("batch of %d requests failed", len(batch))
            results = [exc] * len(batch)
        finished = self._clock()
        per_frame = (finished - started) / max(frames, 1)
        self._seconds_per_frame = per_frame if self._batches == 0 else 0.8 * self._seconds_per_frame + 0.2 * per_frame
        self._batches += 1
        self._frames += frames
        for pending, result in zip(batch, results):
            self._requests += 1
            self._latencies_ms.append(1e3 * (finished - pending.enqueued))
            if pending.future.done():  # the caller went away (cancelled)
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)

    def stats(self) -> BatcherStats:
        ordered = sorted(self._latencies_ms)

        def pct(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

        return BatcherStats(
            requests=self._requests,
            frames=self._frames,
            batches=self._batches,
            mean_batch_frames=self._frames / self._batches if self._batches else 0.0,
            queued_frames=self._queued_frames,
            p50_ms=pct(0.5),
            p99_ms=pct(0.99),
        )

    async def close(self) -> None:
        """Stop the serving loop; requests still queued fail with CancelledError."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.cancel()
        self._queued_frames = 0
