"""The StemExecutor as the ingress and the Planner use it: several requests per call, and draining.

* `infer_many`: several cameras' requests in one actor call (an actor call costs about as much
  as Serve's whole per-request work, so the ingress coalesces). Each item goes through the
  executor's own `infer` (its cross-camera batcher, metrics and errors); a failing item comes
  back as its exception, so one bad camera fails only itself.
* `infer_pulled`: the pull ingest's one call per interval with all its cameras' frames here as one
  uint8 array (`stemcell.ingest.PulledBatch`): converted to model input once, queued at once.
* `drain`: make-before-break's last step before the kill. Once draining, new calls are answered
  with `Moved` (the caller follows the routes to the role's current actor and retries there) while
  the calls already running finish; `drain` returns when none is left.

`start_executor` is the one place executors are created (the ingress's pool and the Planner).
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import numpy as np
import ray
import torch
from ray.actor import ActorHandle

from actors.gpu_share import actor_options, placement_options
from actors.stem_executor import StemExecutorShell
from stemcell.control.errors import Moved
from stemcell.ingest.batch import PulledBatch
from stemcell.serve_config import ExecutorSection
from stemcell.sharing import FrameResult

# (camera, frames (N,H,W,3) or model input (N,3,S,S), timestamps, (height, width) as sent when resized)
Item = tuple[str, np.ndarray | torch.Tensor, list[float] | None, tuple[int, int] | None]


@dataclass(frozen=True)
class DrainReport:
    drained: bool  # every call in flight finished within the timeout
    in_flight: int  # calls still running when `drain` returned


class _RoutedExecutor(StemExecutorShell):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def infer_many(self, items: Sequence[Item]) -> list[list[FrameResult] | BaseException]:
        if self._draining:
            return [Moved(ray.get_runtime_context().get_actor_name() or "executor")] * len(items)
        async with self._call():
            return await asyncio.gather(*(self.infer(*item) for item in items), return_exceptions=True)

    @ray.method(enable_task_events=False)  # ~10 calls/s per ingest actor: no task-state events to the GCS
    async def infer_pulled(self, batch: PulledBatch) -> list[FrameResult | BaseException]:
        """The pull ingest's call: one interval's frames of its cameras here (`stemcell.ingest.PulledBatch`,
        one uint8 array); per frame its result or its camera's error (`Moved` for all while draining)."""
        if self._draining:
            return [Moved(ray.get_runtime_context().get_actor_name() or "executor")] * len(batch)
        async with self._call():
            return await self._infer_pulled(batch)

    @contextlib.asynccontextmanager
    async def _call(self) -> AsyncIterator[None]:
        """A call in flight (what `drain` waits for)."""
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def drain(self, timeout_s: float = 30.0) -> DrainReport:
        """Refuse new calls, wait for the running ones; returns whether it emptied in time."""
        self._draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            return DrainReport(False, self._in_flight)
        return DrainReport(True, 0)

    async def draining(self) -> bool:
        return self._draining


RoutedExecutor = ray.remote(_RoutedExecutor)


def start_executor(config: ExecutorSection, package_dir: str, *, name: str, share: float,
                   gpus_available: bool = True, mps: bool | None = None, detached: bool | None = None,
                   get_if_exists: bool = False) -> ActorHandle:
    """Create (or, with `get_if_exists`, find) the executor actor `name` with GPU share `share`.

    `detached` defaults to the config's; the Planner's successors are always detached, so a Planner
    restart does not take the executors it started down with it. Restarts forever, never retries a
    call by itself (the caller decides: a frame may go to another executor meanwhile)."""
    detached = config.detached if detached is None else detached
    opts = actor_options(share, gpus_available=gpus_available, mps=mps, name=name, namespace=config.namespace,
                         get_if_exists=get_if_exists, lifetime="detached" if detached else None,
                         num_cpus=config.num_cpus, max_restarts=-1, max_task_retries=0,
                         **placement_options(config.placement, config.node_labels))
    return RoutedExecutor.options(**opts).remote(package_dir, share=share, max_batch=config.max_batch,
                                                 max_wait_ms=config.max_wait_ms, **config.device_options())
