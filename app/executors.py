"""The ingress's view of the StemExecutor actors: placement, coalescing, back-pressure, recovery.

* Placement: camera -> executor slot as the store placed it (rendezvous hashing with a weighted load
  bound, `stemcell.control.placement`), pushed to every replica, else by the rendezvous hash of its
  id, so every replica (and every restart) sends a camera's frames to the same executor without asking; executor -> node by Ray
  (`executors.placement`: SPREAD over nodes by default, optionally only on labelled nodes).
* Coalescing: a Ray actor call costs ~2 ms of CPU in the caller and more in the actor, about as
  much as Serve's whole per-request cost, so one call per HTTP request would halve throughput.
  Requests for the same executor that arrive while its previous call is running are sent
  together in one `infer_many` call (a `CrossCameraBatcher` with no wait: no added latency when
  idle, bigger calls under load).
* Back-pressure: that batcher's queue is bounded in frames; past it a request fails at once
  with `Overloaded` (HTTP 503 + Retry-After), as does a full queue inside the executor.
* Frame size: each executor publishes its models' input side (`ExecutorReady.input_size`: every app
  of the package shares its base's input, so it is also the largest among any camera's apps); the
  pool learns it from the warm-up reports it already waits for, so the ingress decodes and resizes
  each frame to it (`stemcell.imaging.decode_for_model`) without asking per frame, and only
  model-size uint8 arrays (48 KB at 128 px, not 6 MB at 1080p) cross the object store.
* Recovery: executors restart forever (`max_restarts=-1`) but come back empty; the first frame
  of a camera the executor no longer knows triggers a re-registration from durable state
  (`add_camera` is idempotent), then one retry.
* Failover: a restart takes seconds (new process, torch import, package load; longer when a node
  is lost), so a call that meets a dead or restarting executor marks its slot down and is retried
  at once on the next live slot, which registers the camera as a guest from durable state
  (`stemcell.sharing.failover`). A watcher pings the down slot and, when it answers, sends its
  cameras home and removes the guests. Only when no slot is up is the answer 503 + Retry-After.
* Reallocation: the Planner replaces an executor make-before-break (a new actor with the new GPU
  share, warm before traffic moves). Given `routes`, the pool polls which actor serves each slot
  and, when a call meets the old actor draining (`Moved`) or killed, follows the routes
  (`app.routes.RouteFollower`) and retries once on the current actor, so a switch fails no request.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from app.metrics import metrics
from app.routes import ReadRoutes, RouteFollower
from stemcell.control.contracts import CameraSpec, ExecutorReady, ExecutorStats, Routes
from stemcell.control.errors import Moved, Overloaded, UnknownCamera
from stemcell.control.roles import executor_role
from stemcell.scheduling.shares import placement_index
from stemcell.serve_config import ExecutorSection
from stemcell.sharing import FrameResult
from stemcell.sharing.batcher import CrossCameraBatcher
from stemcell.sharing.batcher import Overloaded as QueueFull
from stemcell.sharing.failover import FailoverRoutes

log = logging.getLogger(__name__)

Registry = Callable[[str], Awaitable[CameraSpec | None]]  # camera id -> what it runs, None if unknown
# (camera, frames (N,H,W,3), timestamps, (height, width) the camera sent them at, when resized)
Item = tuple[str, np.ndarray, list[float] | None, tuple[int, int] | None]


class ExecutorRejected(ValueError):
    """The executor refused the request's content (message is safe to show the client)."""


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "cause", None) or exc).strip()
    return text.splitlines()[-1][:300] if text else type(exc).__name__


class ExecutorPool:
    """Named executors created on first use (or found, when they already run), one coalescer each."""

    def __init__(self, config: ExecutorSection, package_dir: str, registry: Registry, max_queued_frames: int,
                 *, routes: ReadRoutes | None = None, names: Routes | None = None,
                 route_refresh_s: float = 1.0, watch_interval_s: float = 0.5,
                 slot_of: Callable[[str], int | None] | None = None) -> None:
        """`routes` (optional) reads role -> current actor name as the Planner publishes it; `names`
        is its value at start-up, so a replica (re)starting after a reallocation finds the current
        actors instead of re-creating the original ones. `slot_of` gives the slot the store placed a
        camera on (pushed to the replica; None: not placed, its rendezvous hash decides)."""
        self.config = config
        self.package_dir = package_dir
        self._registry = registry
        self._slot_of = slot_of
        self._follower = None if routes is None else RouteFollower(routes, config.namespace)
        self._names: dict[str, str] = dict(names.actors) if names is not None else {}
        self._route_refresh_s = route_refresh_s
        self._routes_read_at = time.monotonic()
        self._route_lock = asyncio.Lock()
        self._failover = FailoverRoutes(config.count)
        self._watch_interval_s = watch_interval_s
        self._watchers: set[asyncio.Task] = set()
        self._handles: list[ActorHandle] = [self._create(i) for i in range(config.count)]
        self._input_sizes: list[int | None] = [None] * config.count  # from `ready`
        self._coalescers = [
            CrossCameraBatcher(functools.partial(self._run_many_at, i), max_batch=config.max_batch,
                               max_wait_ms=config.coalesce_ms, max_queue_frames=max_queued_frames)
            for i in range(config.count)
        ]

    def role(self, index: int) -> str:
        """The executor slot's stable name (the Planner's role); generation 0 is the actor of that name."""
        return executor_role(self.config.name_prefix, index)

    def name(self, index: int) -> str:
        """Name of the actor serving slot `index` now."""
        return self._names.get(self.role(index), self.role(index))

    def _create(self, index: int) -> ActorHandle:
        from actors.routed_executor import start_executor  # late: this module loads without torch

        return start_executor(self.config, self.package_dir, name=self.name(index), share=self.config.num_gpus,
                              get_if_exists=True)

    async def _run_many_at(self, index: int, items: list[Item]) -> list[list[FrameResult] | BaseException]:
        return await self._handles[index].infer_many.remote(items)  # the slot's actor *now*: routes may move

    def index_of(self, camera_id: str) -> int:
        slot = self._slot_of(camera_id) if self._slot_of is not None else None
        return slot if slot is not None and 0 <= slot < self.config.count else placement_index(camera_id, self.config.count)

    async def refresh_routes(self, index: int | None = None, failed: ActorHandle | None = None) -> bool:
        """Re-read the routes and swap the handles of slots that moved; True if slot `index` moved.

        `failed` is the handle a caller saw fail: if the slot already holds another one (a
        concurrent caller refreshed first), no read is needed.
        """
        if self._follower is None:
            return False
        async with self._route_lock:
            if index is not None and failed is not None and self._handles[index] is not failed:
                return True
            self._routes_read_at = time.monotonic()
            try:
                routes = await self._follower.routes()
            except Exception as exc:  # noqa: BLE001 - keep the current routes; the next refresh retries
                log.warning("could not read executor routes: %r", exc)
                return False
            moved = False
            for i in range(self.config.count):
                name = routes.actors.get(self.role(i))
                if name is None or name == self.name(i):
                    continue
                handle = self._follower.find(name)
                if handle is None:  # published but gone (or not yet visible): keep the current actor
                    continue
                log.info("executor slot %d now served by %s (was %s)", i, name, self.name(i))
                self._names[self.role(i)], self._handles[i] = name, handle
                moved = moved or i == index
            return moved

    def _maybe_refresh(self) -> None:
        """Poll the routes in the background, so traffic moves before the old actor starts draining."""
        if self._follower is not None and time.monotonic() - self._routes_read_at >= self._route_refresh_s \
                and not self._route_lock.locked():
            self._routes_read_at = time.monotonic()
            asyncio.get_running_loop().create_task(self.refresh_routes())

    def handle_for(self, camera_id: str) -> ActorHandle:
        return self._handles[self.index_of(camera_id)]

    async def ready(self, timeout_s: float) -> list[ExecutorReady]:
        """Every executor's warm-up report; raises TimeoutError / RayActorError when not ready."""
        reports = await asyncio.wait_for(asyncio.gather(*(h.ready.remote() for h in self._handles)), timeout_s)
        self._input_sizes = [r.input_size for r in reports]
        return reports

    def input_size(self, camera_id: str) -> int | None:
        """The square side the camera's executor takes frames at (None before `ready` reported it; a
        failover host serves the same package, so the camera's home slot answers for it)."""
        return self._input_sizes[self.index_of(camera_id)]

    async def ping(self, timeout_s: float) -> list[dict[str, Any]]:
        """Each executor's name and camera count, if all answer within `timeout_s` (cheap: no warm-up run)."""
        cameras = await asyncio.wait_for(asyncio.gather(*(h.cameras.remote() for h in self._handles)), timeout_s)
        return [{"name": self.name(i), "cameras": len(c)} for i, c in enumerate(cameras)]

    async def add_camera(self, camera: CameraSpec, index: int | None = None) -> None:
        """Register on slot `index` (the store's placement, known before its replicas hear of it), else
        on the camera's slot as this replica knows it."""
        handle = self._handles[index] if index is not None else self.handle_for(camera.camera_id)
        await handle.add_camera.remote(camera.camera_id, camera.apps, camera.stream_fps)

    async def remove_camera(self, camera_id: str, index: int | None = None) -> bool:
        host = self._failover.forget(camera_id)
        if host is not None:
            await self._evict(camera_id, host)
        handle = self._handles[index] if index is not None else self.handle_for(camera_id)
        return await handle.remove_camera.remote(camera_id)

    async def close(self) -> None:
        """Stop the coalescers and failover watchers (the executors themselves live on)."""
        for task in list(self._watchers):
            task.cancel()
        for coalescer in self._coalescers:
            await coalescer.close()

    def guests(self) -> dict[str, str]:
        """camera -> name of the executor serving it while its home executor is down."""
        return {cam: self.name(host) for cam, (_, host) in self._failover.guests().items()}

    async def stats(self, camera_id: str) -> ExecutorStats:
        return await self.handle_for(camera_id).stats.remote()

    async def infer(self, camera_id: str, frames: list[np.ndarray], timestamps: list[float] | None,
                    frame_size: tuple[int, int] | None = None) -> list[FrameResult]:
        """One result per frame, in order: all of the request's frames in one item (they arrive at the
        executor's input size, or at least at one size; the executor resizes others off its lock).
        `frame_size`: (height, width) the camera sent them at, when they were resized on the way."""
        if len({f.shape for f in frames}) > 1:
            raise ExecutorRejected(f"frames of one request differ in size: {sorted({f.shape for f in frames})}")
        return await self._submit(camera_id, np.stack(frames), timestamps, frame_size)

    async def _submit(self, camera_id: str, frames: np.ndarray, timestamps: list[float] | None,
                      frame_size: tuple[int, int] | None) -> list[FrameResult]:
        """One retry each after a reroute (the slot's actor drained or died and the routes moved it),
        after a failover (its actor died or is restarting: the next live slot takes the camera), after
        learning the camera's new slot (the store placed it since this replica last heard) and after a
        re-registration (the serving actor did not know the camera)."""
        home = self.index_of(camera_id)
        self._maybe_refresh()
        rerouted = failed_over = reregistered = moved_home = False
        while True:
            index = self._failover.host_for(home, camera_id)
            if index is None:
                raise Overloaded("every executor is restarting")
            handle = self._handles[index]
            try:
                return await self._coalescers[index].submit((camera_id, frames, timestamps, frame_size), len(frames))
            except QueueFull as exc:
                raise Overloaded(f"executor {self.name(index)} queue is full", exc.retry_after_s) from exc
            except (RayActorError, Moved) as exc:  # replaced, died or restarting
                if not rerouted and await self.refresh_routes(index, handle):
                    rerouted = True
                    continue
                if isinstance(exc, RayActorError) and not failed_over and self._fail_over(index):
                    failed_over = True
                    continue
                log.warning("executor %s unavailable (%s); answering 503", self.name(index), type(exc).__name__)
                raise Overloaded(f"executor {self.name(index)} is restarting") from exc
            except UnknownCamera as exc:
                if self._failover.host_for(home, camera_id) != index:  # its home came back meanwhile: go there
                    continue
                stored = await self._registry(camera_id)
                if stored is None or reregistered:
                    raise UnknownCamera(camera_id) from exc
                if not moved_home and self.index_of(camera_id) != home:  # just placed elsewhere: now known here
                    home, moved_home = self.index_of(camera_id), True
                    continue
                reregistered = True
                log.warning("executor %s does not know camera %s (restarted, or taking it over); registering",
                            self.name(index), camera_id)
                await self._handles[index].add_camera.remote(camera_id, stored.apps, stored.stream_fps)
                self._failover.add_guest(camera_id, home, index)
            except ValueError as exc:
                raise ExecutorRejected(_first_line(exc)) from exc

    def _fail_over(self, index: int) -> bool:
        """Mark slot `index` down (watching for its return); True if another slot can take its cameras."""
        if self._failover.mark_down(index):
            log.warning("executor %s down: its cameras fail over until it answers again", self.name(index))
            metrics().record_failover(self.role(index))
            task = asyncio.get_running_loop().create_task(self._watch(index))
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)
        return self._failover.host_for(index) is not None

    async def _watch(self, index: int) -> None:
        """Ping the down slot's current actor until it answers, then send its cameras home."""
        while True:
            await asyncio.sleep(self._watch_interval_s)
            try:
                await asyncio.wait_for(self._handles[index].cameras.remote(), timeout=max(1.0, self._watch_interval_s))
                break
            except (RayActorError, asyncio.TimeoutError):
                continue
        back = self._failover.mark_up(index)
        log.info("executor %s answers again; %d camera(s) go home", self.name(index), len(back))
        for camera_id, host in back:
            await self._evict(camera_id, host)

    async def _evict(self, camera_id: str, host: int) -> None:
        """Remove a guest camera from its host (best effort: a host that died took it along)."""
        try:
            await self._handles[host].remove_camera.remote(camera_id)
        except RayActorError as exc:
            log.info("could not remove guest %s from %s: %s", camera_id, self.name(host), type(exc).__name__)
