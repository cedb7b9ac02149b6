"""Executes make-before-break reallocation steps (`stemcell.control.reallocation`) against Ray.

The steps come ordered (every new actor created and warm before any traffic moves); this module
runs them in three phases that keep that order:

1. CREATE + WARM: new actors start with their new `num_gpus` (Ray cannot resize one). An executor
   loads its role's cameras, answers `ready` and runs one real inference through their branches;
   a retraining worker is paused and checkpointed (weights, Adam moments, buffers), and the new
   one starts from that checkpoint (`resume_from`) and answers `ready`. A new actor that cannot be placed or warmed in time is killed and its role keeps the
   old actor: a failed change costs nothing but the change.
2. SWITCH: the roles' routes are published (the ingress resolves them), then `grace_s` lets every
   replica pick the new actor up before the old one stops taking calls.
3. DRAIN + KILL: the old executor refuses new calls (`Draining`, which the ingress retries on the
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

from stemcell.control.reallocation import Op, actor_name, reallocation_steps

log = logging.getLogger(__name__)

EXECUTOR, RETRAIN = "executor", "retrain"
WAITING_STATES = frozenset({"PENDING_CREATION", "RESTARTING", "DEPENDENCIES_UNREADY"})
WARM_CAMERA = "planner-warm-up"  # a throw-away camera: the warm-up inference leaves real cameras' event state alone


@dataclass(frozen=True)
class RoleState:
    kind: str  # EXECUTOR or RETRAIN
    generation: int  # bumps on every share change (actor names carry it)
    share: float  # GPU share the serving actor was created with
    actor: str  # name of the actor serving the role now


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


# (role, actor name, share, resume_from) -> handle of a freshly created actor
Factory = Callable[[str, str, float, Any], ActorHandle]
# role -> [(camera, {"fps", "apps"})] the executor of that role must serve
CamerasFor = Callable[[str], Awaitable[list[tuple[str, Mapping[str, Any]]]]]
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
        """Roles whose actor is not running: waiting to be placed or restarted, or gone.

        Read from the GCS's actor table (`ray._private.state`: Ray's public state API needs the
        dashboard, which deployments may run without); where that cannot be read, no role counts as
        down, so the Planner falls back to plain make-before-break."""
        try:
            from ray._private import state
        except ImportError:  # pragma: no cover - a Ray without the module
            return set()
        down = set()
        for role, st in states.items():
            handle = self.handle(st.actor)
            if handle is None:
                down.add(role)
                continue
            try:
                info = state.actors(actor_id=handle._actor_id.hex())
            except Exception:  # noqa: BLE001 - unknown is not down
                continue
            if (info or {}).get("State") in WAITING_STATES:
                down.add(role)
        return down

    async def apply(self, current: Mapping[str, RoleState], target: Mapping[str, float], *,
                    down: frozenset[str] | set[str] = frozenset()) -> tuple[dict[str, RoleState], list[SwitchReport]]:
        """Move every role of `current` whose share differs in `target`; roles only in `target` are not
        created here (roles are added by registering them with their generation-0 actor). `down`
        roles (no running actor) are neither checkpointed nor drained."""
        wanted = {r: s for r, s in target.items() if r in current}
        steps = reallocation_steps({r: (st.generation, st.share) for r, st in current.items()}, wanted)
        started = time.perf_counter()
        created = {s.role: s for s in steps if s.op == Op.CREATE}
        warm = await asyncio.gather(*(self._create_and_warm(r, current[r], s.actor, s.share, r in down)
                                      for r, s in created.items()))
        reports: dict[str, SwitchReport] = {}
        states = dict(current)
        for (role, step), (ok, warm_s, error) in zip(created.items(), warm):
            old = current[role]
            reports[role] = SwitchReport(role, old.actor, step.actor, old.share, step.share, ok, warm_s, error=error)
            if ok:
                states[role] = RoleState(old.kind, old.generation + 1, step.share, step.actor)
        moved = [r for r, rep in reports.items() if rep.ok]
        if moved:
            await self._publish(states)  # SWITCH: routes now name the new actors
            await asyncio.sleep(self.grace_s)
            drains = await asyncio.gather(*(self._drain_and_kill(current[r], r in down) for r in moved))
            for role, drain_s in zip(moved, drains):
                reports[role] = replace(reports[role], drain_s=drain_s, total_s=time.perf_counter() - started)
        for rep in reports.values():
            log.info("reallocation %s", rep.as_dict())
        return states, list(reports.values())

    async def _create_and_warm(self, role: str, old: RoleState, name: str, share: float,
                               down: bool = False) -> tuple[bool, float, str]:
        started = time.perf_counter()
        factory = self._factories[old.kind]
        handle = previous = None
        try:
            if factory is None:
                raise RuntimeError(f"no factory for {old.kind} actors")
            resume_from = None
            if old.kind == RETRAIN and not down:  # pause, snapshot weights + Adam state + buffers, resume there
                previous = self.handle(old.actor)
                resume_from = None if previous is None else await previous.checkpoint.remote(pause=True)
            handle = factory(old.kind, name, share, resume_from)
            await asyncio.wait_for(self._warm(old.kind, handle, role), self.warm_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the old actor serving
            log.warning("new actor %s (share %.2f) not warm: %r; keeping %s", name, share, exc, old.actor)
            if handle is not None:
                ray.kill(handle, no_restart=True)
            if previous is not None:
                await previous.resume.remote()
            return False, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"[:300]
        return True, time.perf_counter() - started, ""

    async def _warm(self, kind: str, handle: ActorHandle, role: str) -> None:
        if kind == RETRAIN:
            await handle.ready.remote()
            return
        info = await handle.ready.remote()
        cameras = await self._cameras_for(role)
        await asyncio.gather(*(handle.add_camera.remote(c, cfg["apps"], cfg["fps"]) for c, cfg in cameras))
        if cameras:  # one real inference through the branches the role's cameras use
            _, cfg = cameras[0]
            await handle.add_camera.remote(WARM_CAMERA, cfg["apps"], cfg["fps"])
            size = int(info.get("input_size", 32))
            await handle.infer.remote(WARM_CAMERA, np.zeros((1, size, size, 3), np.uint8), None)
            await handle.remove_camera.remote(WARM_CAMERA)

    async def _drain_and_kill(self, old: RoleState, down: bool = False) -> float:
        started = time.perf_counter()
        handle = self.handle(old.actor)
        if handle is None:
            return 0.0
        if old.kind == EXECUTOR and not down:  # a waiting actor would only answer once placed
            try:
                report = await handle.drain.remote(self.drain_timeout_s)
                if not report.get("drained"):
                    log.warning("%s still had %s calls in flight after %.0f s", old.actor, report.get("in_flight"),
                                self.drain_timeout_s)
            except Exception as exc:  # noqa: BLE001 - an old actor already gone is drained
                log.warning("drain of %s failed: %r", old.actor, exc)
        ray.kill(handle, no_restart=True)
        return time.perf_counter() - started

    def kill_orphans(self, states: Mapping[str, RoleState]) -> list[str]:
        """Kill next-generation actors a crashed switch left behind (created, never switched to)."""
        killed = []
        for role, st in states.items():
            name = actor_name(role, st.generation + 1)
            handle = self.handle(name)
            if handle is not None:
                ray.kill(handle, no_restart=True)
                killed.append(name)
        return killed

