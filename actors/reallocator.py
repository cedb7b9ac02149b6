"""Executes the make-before-break plan (`stemcell.control.reallocation.reallocation_steps`) against Ray.

The pure plan orders the steps (every new actor created and warm before any traffic moves); this
module runs exactly those steps, phase by phase, and drops a role's later steps when its new actor
never got warm:

1. CREATE + WARM: new actors start with their new `num_gpus` (Ray cannot resize one). An executor
   loads its role's cameras, answers `ready` and runs one real inference through their branches;
   a retraining worker is paused and checkpointed (weights, Adam moments, buffers), and the new
   one starts from that checkpoint (`resume_from`) and answers `ready`. A new actor that cannot be
   placed or warmed in time is killed and its role keeps the old actor: a failed change costs
   nothing but the change.
2. SWITCH: the roles' routes are published (the ingress resolves them), then `grace_s` lets every
   replica pick the new actor up before the old one stops taking calls.
3. DRAIN + KILL: the old executor refuses new calls (`Moved`, which the ingress follows to the
   current actor) and finishes the running ones; only then is it killed.

A *down* role (its actor waits for a node: `down_roles`) has nothing running to keep beside the new
actor: it is not checkpointed (a new worker resumes from its durable checkpoint) nor drained.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import ray
from ray.actor import ActorHandle

from actors.ray_internals import actor_state
from stemcell.control.contracts import CameraSpec
from stemcell.control.reallocation import Op, RoleState, Step, phase, reallocation_steps
from stemcell.control.roles import EXECUTOR, RETRAIN, successor_name

log = logging.getLogger(__name__)

WAITING_STATES = frozenset({"PENDING_CREATION", "RESTARTING", "DEPENDENCIES_UNREADY"})
WARM_CAMERA = "planner-warm-up"  # a throw-away camera: the warm-up inference leaves real cameras' event state alone


@dataclass(frozen=True)
class SwitchReport:
    role: str
    old_actor: str
    new_actor: str
    old_share: float
    new_share: float
    ok: bool  # False: the new actor never got warm; the role kept the old one
    warm_s: float = 0.0  # create -> warm (placement, model load, warm-up inference)
    drain_s: float = 0.0  # drain call on the old actor
    total_s: float = 0.0  # create -> old actor killed
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# (create step, resume_from) -> handle of a freshly created actor
Factory = Callable[[Step, bytes | None], ActorHandle]
# executor role -> the cameras its actor must serve
CamerasFor = Callable[[str], Awaitable[list[CameraSpec]]]
Publish = Callable[[Mapping[str, RoleState]], Awaitable[None]]


class Reallocator:
    """Owns no state between calls: `apply(current, target)` returns the new role states."""

    def __init__(self, *, namespace: str, executor_factory: Factory, worker_factory: Factory | None,
                 cameras_for: CamerasFor, publish: Publish, grace_s: float = 1.5,
                 warm_timeout_s: float = 120.0, drain_timeout_s: float = 30.0) -> None:
        self.namespace = namespace
        self._factories = {EXECUTOR: executor_factory, RETRAIN: worker_factory}
        self._cameras_for = cameras_for
        self._publish = publish
        self.grace_s, self.warm_timeout_s, self.drain_timeout_s = grace_s, warm_timeout_s, drain_timeout_s

    def handle(self, name: str) -> ActorHandle | None:
        try:
            return ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            return None

    def down_roles(self, states: Mapping[str, RoleState]) -> set[str]:
        """Roles whose actor is not running: waiting to be placed or restarted, or gone. Where the
        state cannot be read (`actors.ray_internals`), a role does not count as down, so the Planner
        falls back to plain make-before-break."""
        down = set()
        for role, st in states.items():
            handle = self.handle(st.actor)
            if handle is None or actor_state(handle) in WAITING_STATES:
                down.add(role)
        return down

    async def apply(self, current: Mapping[str, RoleState], target: Mapping[str, float], *,
                    down: frozenset[str] | set[str] = frozenset()) -> tuple[dict[str, RoleState], list[SwitchReport]]:
        """Run `reallocation_steps(current, target)`: move every role of `current` whose share differs
        in `target` (roles only in `target` are added by registering their generation-0 actor, not
        here). `down` roles (no running actor) are neither checkpointed nor drained."""
        steps = reallocation_steps(current, target, down=down)
        started = time.perf_counter()
        creates = phase(steps, Op.CREATE)
        warm = await asyncio.gather(*(self._create_and_warm(s, current[s.role], s.role in down) for s in creates))
        reports: dict[str, SwitchReport] = {}
        states = dict(current)
        for step, (ok, warm_s, error) in zip(creates, warm):
            old = current[step.role]
            reports[step.role] = SwitchReport(step.role, old.actor, step.actor, old.share, step.share, ok, warm_s,
                                              error=error)
            if ok:
                states[step.role] = RoleState(old.kind, old.generation + 1, step.share, step.actor)
        moved = {s.role for s in phase(steps, Op.SWITCH) if reports[s.role].ok}
        if moved:
            await self._publish(states)  # SWITCH: routes now name the new actors
            await asyncio.sleep(self.grace_s)
            drained = dict(zip([s.role for s in phase(steps, Op.DRAIN, moved)],
                               await asyncio.gather(*(self._drain(s) for s in phase(steps, Op.DRAIN, moved)))))
            for step in phase(steps, Op.KILL, moved):
                self._kill(step.actor)
                reports[step.role] = replace(reports[step.role], drain_s=drained.get(step.role, 0.0),
                                             total_s=time.perf_counter() - started)
        for rep in reports.values():
            log.info("reallocation %s", rep.as_dict())
        return states, list(reports.values())

    async def _create_and_warm(self, step: Step, old: RoleState, down: bool) -> tuple[bool, float, str]:
        """CREATE then WARM one role's new actor; on any failure kill it and resume the old one."""
        started = time.perf_counter()
        factory = self._factories[step.kind]
        handle = previous = None
        try:
            if factory is None:
                raise RuntimeError(f"no factory for {step.kind} actors")
            resume_from = None
            if step.kind == RETRAIN and not down:  # pause, snapshot weights + Adam state + buffers, resume there
                previous = self.handle(old.actor)
                resume_from = None if previous is None else await previous.checkpoint.remote(pause=True)
            handle = factory(step, resume_from)
            await asyncio.wait_for(self._warm(step, handle), self.warm_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the old actor serving
            log.warning("new actor %s (share %.2f) not warm: %r; keeping %s", step.actor, step.share, exc, old.actor)
            if handle is not None:
                ray.kill(handle, no_restart=True)
            if previous is not None:
                await previous.resume.remote()
            return False, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"[:300]
        return True, time.perf_counter() - started, ""

    async def _warm(self, step: Step, handle: ActorHandle) -> None:
        if step.kind == RETRAIN:
            await handle.ready.remote()
            return
        info = await handle.ready.remote()
        cameras = await self._cameras_for(step.role)
        await asyncio.gather(*(handle.add_camera.remote(c.camera_id, c.apps, c.stream_fps) for c in cameras))
        if cameras:  # one real inference through the branches the role's cameras use
            await handle.add_camera.remote(WARM_CAMERA, cameras[0].apps, cameras[0].stream_fps)
            size = info.input_size
            await handle.infer.remote(WARM_CAMERA, np.zeros((1, size, size, 3), np.uint8), None)
            await handle.remove_camera.remote(WARM_CAMERA)

    async def _drain(self, step: Step) -> float:
        """DRAIN: the old executor answers what it has queued and refuses the rest (`Moved`)."""
        started = time.perf_counter()
        handle = self.handle(step.actor)
        if handle is None:
            return 0.0
        try:
            report = await handle.drain.remote(self.drain_timeout_s)
            if not report.drained:
                log.warning("%s still had %d calls in flight after %.0f s", step.actor, report.in_flight,
                            self.drain_timeout_s)
        except Exception as exc:  # noqa: BLE001 - an old actor already gone is drained
            log.warning("drain of %s failed: %r", step.actor, exc)
        return time.perf_counter() - started

    def _kill(self, name: str) -> None:
        handle = self.handle(name)
        if handle is not None:
            ray.kill(handle, no_restart=True)

    def kill_orphans(self, states: Mapping[str, RoleState]) -> list[str]:
        """Kill next-generation actors a crashed switch left behind (created, never switched to)."""
        killed = []
        for role, st in states.items():
            name = successor_name(role, st.generation + 1)
            if self.handle(name) is not None:
                self._kill(name)
                killed.append(name)
        return killed
