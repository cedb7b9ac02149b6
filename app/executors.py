"""The ingress's view of the StemExecutor actors: placement, coalescing, back-pressure, recovery.

* Placement: camera -> executor by a stable hash of its id, so every replica (and every restart)
  sends a camera's frames to the same executor without asking anyone.
* Coalescing: a Ray actor call costs ~2 ms of CPU in the caller and more in the actor, about as
  much as Serve's whole per-request cost, so one call per HTTP request would halve throughput.
  Requests for the same executor that arrive while its previous call is running are sent
  together in one `infer_many` call (a `CrossCameraBatcher` with no wait: no added latency when
  idle, bigger calls under load).
* Back-pressure: that batcher's queue is bounded in frames; past it a request fails at once
  with `Overloaded` (HTTP 503 + Retry-After), as does a full queue inside the executor.
* Recovery: executors restart forever (`max_restarts=-1`) but come back empty; the first frame
  of a camera the executor no longer knows triggers a re-registration from durable state
  (`add_camera` is idempotent), then one retry.  A call that hits a restarting executor is
  `Overloaded` too: the client's retry lands on the warmed-up actor.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import ray
from ray.actor import ActorClass, ActorHandle
from ray.exceptions import RayActorError

from stemcell.serve_config import ExecutorSection
from stemcell.sharing.batcher import CrossCameraBatcher
from stemcell.sharing.batcher import Overloaded as QueueFull

log = logging.getLogger(__name__)

Registry = Callable[[str], Awaitable[dict | None]]  # camera id -> its stored {"fps", "apps"}, None if unknown
Item = tuple[str, np.ndarray, list[float] | None]  # (camera, frames (N,H,W,3), timestamps)


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
    text = str(getattr(exc, "cause", None) or exc).strip()
    return text.splitlines()[-1][:300] if text else type(exc).__name__


@functools.cache
def executor_class() -> ActorClass:
    """StemExecutor plus `infer_many`: several cameras' requests in one actor call.

    Each item goes through the executor's own `infer` (its cross-camera batcher, metrics and
    errors); a failing item comes back as its exception, so one bad camera fails only itself.
    Kept here until StemExecutor offers the method itself; then this class is just StemExecutor.
    """
    from actors.stem_executor import StemExecutor

    class StemExecutorMulti(StemExecutor.__ray_actor_class__):  # type: ignore[name-defined,misc]
        async def infer_many(self, items: Sequence[Item]) -> list[list[dict] | BaseException]:
            return await asyncio.gather(*(self.infer(c, f, t) for c, f, t in items), return_exceptions=True)

    return ray.remote(StemExecutorMulti)


class ExecutorPool:
    """Named executors created on first use (or found, when they already run), one coalescer each."""

    def __init__(self, config: ExecutorSection, package_dir: str, registry: Registry, max_queued_frames: int) -> None:
        self.config = config
        self.package_dir = package_dir
        self._registry = registry
        self._handles: list[ActorHandle] = [self._create(i) for i in range(config.count)]
        self._coalescers = [
            CrossCameraBatcher(functools.partial(self._run_many, h), max_batch=config.max_batch,
                               max_wait_ms=config.coalesce_ms, max_queue_frames=max_queued_frames)
            for h in self._handles
        ]

    def name(self, index: int) -> str:
        return f"{self.config.name_prefix}-{index}"

    def _create(self, index: int) -> ActorHandle:
        c = self.config
        return executor_class().options(
            name=self.name(index), namespace=c.namespace, get_if_exists=True,
            lifetime="detached" if c.detached else None,
            num_gpus=c.num_gpus, num_cpus=c.num_cpus, max_restarts=-1, max_task_retries=0,
        ).remote(self.package_dir, share=c.num_gpus, max_batch=c.max_batch, max_wait_ms=c.max_wait_ms)

    @staticmethod
    async def _run_many(handle: ActorHandle, items: list[Item]) -> list[list[dict] | BaseException]:
        return await handle.infer_many.remote(items)

    def index_of(self, camera_id: str) -> int:
        return zlib.crc32(camera_id.encode("utf-8")) % self.config.count

    def handle_for(self, camera_id: str) -> ActorHandle:
        return self._handles[self.index_of(camera_id)]

    async def ready(self, timeout_s: float) -> list[dict]:
        """Every executor's warm-up report; raises TimeoutError / RayActorError when not ready."""
        return await asyncio.wait_for(asyncio.gather(*(h.ready.remote() for h in self._handles)), timeout_s)

    async def ping(self, timeout_s: float) -> list[dict[str, Any]]:
        """Each executor's name and camera count, if all answer within `timeout_s` (cheap: no warm-up run)."""
        cameras = await asyncio.wait_for(asyncio.gather(*(h.cameras.remote() for h in self._handles)), timeout_s)
        return [{"name": self.name(i), "cameras": len(c)} for i, c in enumerate(cameras)]

    async def add_camera(self, camera_id: str, apps: list[dict], stream_fps: float) -> dict:
        return await self.handle_for(camera_id).add_camera.remote(camera_id, apps, stream_fps)

    async def remove_camera(self, camera_id: str) -> bool:
        return await self.handle_for(camera_id).remove_camera.remote(camera_id)

    async def stats(self, camera_id: str) -> dict:
        return await self.handle_for(camera_id).stats.remote()

    async def infer(self, camera_id: str, frames: list[np.ndarray], timestamps: list[float] | None) -> list[dict]:
        """One result per frame, in order.  Frames of different sizes go in one item per size."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault(f.shape, []).append(i)
        out: list[dict[str, Any]] = [{}] * len(frames)
        for members in groups.values():
            stack = np.stack([frames[i] for i in members])
            stamps = None if timestamps is None else [timestamps[i] for i in members]
            for i, result in zip(members, await self._submit(camera_id, stack, stamps)):
                out[i] = result
        return out

    async def _submit(self, camera_id: str, frames: np.ndarray, timestamps: list[float] | None) -> list[dict]:
        index = self.index_of(camera_id)
        for attempt in range(2):
            try:
                return await self._coalescers[index].submit((camera_id, frames, timestamps), len(frames))
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
                await self._handles[index].add_camera.remote(camera_id, stored["apps"], stored["fps"])
        raise AssertionError("unreachable: the second attempt returns or raises")
