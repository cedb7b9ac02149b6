"""The ingress's view of the StemExecutor actors: placement, back-pressure, recovery.

* Placement: camera -> executor by a stable hash of its id, so every replica (and every restart)
  sends a camera's frames to the same executor without asking anyone.
* Back-pressure: each replica bounds the frames it has in flight per executor; past the bound a
  request fails fast with `Overloaded` (HTTP 503 + Retry-After) instead of queueing without end.
* Recovery: executors restart forever (`max_restarts=-1`) but come back empty; the first frame
  of a camera the executor no longer knows triggers a re-registration from durable state
  (`add_camera` is idempotent), then one retry.  A call that hits a restarting executor is
  `Overloaded` too: the client's retry lands on the warmed-up actor.
"""
from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from stemcell.sharing.batcher import Overloaded as QueueFull
from stemcell.serve_config import ExecutorSection

log = logging.getLogger(__name__)

Registry = Callable[[str], Awaitable[dict | None]]  # camera id -> its stored {"fps", "apps"}, None if unknown


class Overloaded(Exception):
    """The executor cannot take more work right now; answer 503 with Retry-After."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnknownCamera(LookupError):
    """The camera is not registered (or was removed while the request was in flight)."""


class ExecutorRejected(ValueError):
    """The executor refused the request's content (message is safe to show the client)."""


def _is_unknown_camera(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) and "unknown camera" in str(exc)


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    return str(cause).strip().splitlines()[-1][:300] if str(cause).strip() else type(cause).__name__


class ExecutorPool:
    """Named StemExecutor actors created on first use (or found, when they already run)."""

    def __init__(self, config: ExecutorSection, package_dir: str, registry: Registry, max_inflight: int) -> None:
        self.config = config
        self.package_dir = package_dir
        self._registry = registry
        self._max_inflight = max_inflight
        self._inflight = [0] * config.count
        self._handles: list[ActorHandle] = [self._create(i) for i in range(config.count)]

    def name(self, index: int) -> str:
        return f"{self.config.name_prefix}-{index}"

    def _create(self, index: int) -> ActorHandle:
        from actors.stem_executor import StemExecutor

        c = self.config
        return StemExecutor.options(
            name=self.name(index), namespace=c.namespace, get_if_exists=True,
            lifetime="detached" if c.detached else None,
            num_gpus=c.num_gpus, num_cpus=c.num_cpus, max_restarts=-1, max_task_retries=0,
        ).remote(self.package_dir, share=c.num_gpus, max_batch=c.max_batch, max_wait_ms=c.max_wait_ms)

    def index_of(self, camera_id: str) -> int:
        return zlib.crc32(camera_id.encode("utf-8")) % self.config.count

    def handle_for(self, camera_id: str) -> ActorHandle:
        return self._handles[self.index_of(camera_id)]

    async def ready(self, timeout_s: float) -> list[dict]:
        """Every executor's warm-up report; raises GetTimeoutError / RayActorError when not ready."""
        refs = [h.ready.remote() for h in self._handles]
        return await asyncio.wait_for(asyncio.gather(*refs), timeout_s)

    async def add_camera(self, camera_id: str, apps: list[dict], stream_fps: float) -> dict:
        return await self.handle_for(camera_id).add_camera.remote(camera_id, apps, stream_fps)

    async def remove_camera(self, camera_id: str) -> bool:
        return await self.handle_for(camera_id).remove_camera.remote(camera_id)

    async def stats(self, camera_id: str) -> dict:
        return await self.handle_for(camera_id).stats.remote()

    async def infer(self, camera_id: str, frames: list[np.ndarray], timestamps: list[float] | None) -> list[dict]:
        """One result per frame, in order.  Frames of different sizes go in one call per size."""
        index = self.index_of(camera_id)
        if self._inflight[index] + len(frames) > self._max_inflight:
            raise Overloaded(f"executor {self.name(index)} has {self._inflight[index]} frames in flight")
        self._inflight[index] += len(frames)
        try:
            return await self._infer_groups(index, camera_id, frames, timestamps)
        finally:
            self._inflight[index] -= len(frames)

    async def _infer_groups(self, index: int, camera_id: str, frames: list[np.ndarray],
                            timestamps: list[float] | None) -> list[dict]:
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault(f.shape, []).append(i)
        out: list[dict[str, Any]] = [{}] * len(frames)
        for members in groups.values():
            stack = np.stack([frames[i] for i in members])
            stamps = None if timestamps is None else [timestamps[i] for i in members]
            for i, result in zip(members, await self._call(index, camera_id, stack, stamps)):
                out[i] = result
        return out

    async def _call(self, index: int, camera_id: str, frames: np.ndarray, timestamps: list[float] | None) -> list[dict]:
        handle = self._handles[index]
        for attempt in range(2):
            try:
                return await handle.infer.remote(camera_id, frames, timestamps)
            except QueueFull as exc:
                raise Overloaded(f"executor {self.name(index)} queue is full", exc.retry_after_s) from exc
            except RayActorError as exc:  # died or restarting: the client's retry finds it back up
                log.warning("executor %s unavailable (%s); answering 503", self.name(index), type(exc).__name__)
                raise Overloaded(f"executor {self.name(index)} is restarting") from exc
            except ValueError as exc:
                if not _is_unknown_camera(exc):
                    raise ExecutorRejected(_first_line(exc)) from exc
                stored = await self._registry(camera_id)
                if stored is None or attempt == 1:
                    raise UnknownCamera(camera_id) from exc
                log.warning("executor %s lost camera %s (restarted?); re-registering", self.name(index), camera_id)
                await handle.add_camera.remote(camera_id, stored["apps"], stored["fps"])
        raise AssertionError("unreachable")
