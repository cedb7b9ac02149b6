"""The Planner actor: every window, measure -> `plan_round` -> per-role GPU shares -> make-before-break.

A thin shell (STYLE.md): it gathers what the StemExecutors measured (per-segment latency; memory
held, which floors their shares since a share is also a memory cap), what the RetrainWorkers report
(per-micro-window accuracy gains) and the TeacherLabeler's fixed share, builds the frozen
`PlannerContext` with the pure `stemcell.control.planning` (one problem per camera class), calls
`stemcell.scheduling.plan_round` in two levels (`stemcell.control.two_level`: the GPU split across
executors by demand, then Mainstream per executor over a schedule cache) in a worker thread,
splits the decision into one share per role (`stemcell.scheduling.shares`) and hands the changes to
`actors.reallocator.Reallocator`. Settings: serve.yaml's `planner` section.

Roles are stable slots (`stemcell.control.roles`): executor slots (where `app.executors.ExecutorPool`
places cameras) and retraining workers (RECL's slicing runs over all workers' jobs; a worker's share
follows the micro-windows its jobs were granted, and it trains its jobs by those grants: `set_grants`). Which actor serves each role is published as the
store's routes (the plan's `planner` section), which the ingress follows. Cameras whose chosen
(app -> branchpoint, fps) changed are reconfigured in place (`actors.camera_push`); pinned apps never.

Durable: roles, routes, workers and the last decision are saved after every change, so a restarted
Planner (`max_restarts=-1`) continues with the same actors and kills what a cut-short switch left.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray
from ray.actor import ActorHandle

from actors.gpu_share import actor_options, label_options
from actors.planner_metrics import PlannerMetrics
from actors.reallocator import Reallocator, SwitchReport
from actors.camera_push import push_camera_changes
from actors.routed_executor import start_executor
from actors.state_store import get_or_create_state_store
from stemcell.control import planning
from stemcell.control.camera_changes import plan_changes
from stemcell.control.contracts import CameraSpec, ExecutorStats, MemoryReport, TeacherStats, WorkerStats
from stemcell.control.memory_plans import ExecutorMemory, fit_changes
from stemcell.control.placement import camera_slot
from stemcell.control.reallocation import Op, RoleState, Step
from stemcell.control.two_level import TwoLevelPlanner, camera_demands
from stemcell.control.roles import EXECUTOR, PLANNER_ACTOR, RETRAIN, executor_role, retrain_role
from stemcell.learning.live_plan import Estimates, with_live_estimates
from stemcell.package.manifest import Manifest
from stemcell.package.store import MANIFEST
from stemcell.scheduling.grant_order import worker_grants
from stemcell.scheduling.planner import PlanDecision, PlannerContext
from stemcell.scheduling.shares import ShareContext, placement_index
from stemcell.serve_config import PlannerSection, ServeConfig
from stemcell.state import PLANNER

log = logging.getLogger(__name__)

PlanView = Mapping[str, Any]  # the JSON `GET /admin/plan` shows under "planner"


class Planner:
    async def __init__(self, serve_config: ServeConfig, settings: PlannerSection | None = None) -> None:
        self.config = serve_config
        self.settings = s = settings or serve_config.planner
        ex = self.config.executors
        self.manifest = Manifest.model_validate_json((Path(self.config.package_dir) / MANIFEST).read_text())
        self.store = get_or_create_state_store(str(self.config.state_path), namespace=ex.namespace)
        self._gpus = ray.cluster_resources().get("GPU", 0) > 0
        self._lock = asyncio.Lock()
        self.two_level = TwoLevelPlanner(s.scheduler)  # its schedule cache lives as long as this Planner
        self._slots: dict[str, int] = {}  # camera -> executor slot, as last read from the store
        self.realloc = Reallocator(namespace=ex.namespace, executor_factory=self._new_executor,
                                   worker_factory=self._new_worker, cameras_for=self._cameras_for,
                                   publish=self._publish, grace_s=s.grace_s, warm_timeout_s=s.warm_timeout_s,
                                   drain_timeout_s=s.drain_timeout_s)
        saved = await self.store.plan_section.remote(PLANNER) or {}
        defaults = {self.role(i): RoleState(EXECUTOR, 0, ex.num_gpus, self.role(i)) for i in range(ex.count)}
        restored = {r: RoleState(**v) for r, v in saved.get("roles", {}).items()}
        self.roles: dict[str, RoleState] = defaults | restored
        self.workers: dict[str, dict[str, Any]] = dict(saved.get("workers", {}))  # role -> constructor kwargs (JSON)
        self.decision: dict[str, Any] = dict(saved.get("decision", {}))
        if self.decision and "cameras" not in self.decision:  # stored one row per camera, beside the section
            self.decision["cameras"] = dict(await self.store.decision_cameras.remote())
        self.rounds, self.last_decision_ms, self.last_switches, self.last_camera_changes = 0, None, [], []
        self.teacher: TeacherStats | None = None  # the TeacherLabeler's last stats (its share is fixed)
        self.memory: dict[str, MemoryReport | None] = {}  # executor role -> its last memory report
        orphans = self.realloc.kill_orphans(self.roles)
        log.info("planner up: %d roles (%s restored), killed orphans %s", len(self.roles), len(restored), orphans)
        self.metrics = PlannerMetrics()
        self.metrics.export(self.roles, self.decision)
        self._loop = asyncio.get_running_loop().create_task(self._run()) if s.window_s > 0 else None

    def role(self, index: int) -> str:
        return executor_role(self.config.executors.name_prefix, index)

    def _kind(self, kind: str) -> list[str]:  # the roles of one kind
        return [r for r, st in self.roles.items() if st.kind == kind]

    # ------------------------------------------------------------------ actor factories
    # Detached: a Planner restart must not take the actors it started down with it.
    def _new_executor(self, step: Step, _resume: bytes | None) -> ActorHandle:
        return start_executor(self.config.executors, str(self.config.package_dir), name=step.actor, share=step.share,
                              gpus_available=self._gpus, mps=self.settings.mps, detached=True)

    def _new_worker(self, step: Step, resume_from: bytes | None) -> ActorHandle:
        module, _, cls = self.settings.worker_class.partition(":")
        opts = actor_options(step.share, gpus_available=self._gpus, mps=self.settings.mps, name=step.actor,
                             namespace=self.config.executors.namespace, lifetime="detached", max_restarts=-1,
                             num_cpus=self.settings.worker_num_cpus)
        worker = getattr(importlib.import_module(module), cls)
        return worker.options(**opts).remote(**self.workers[step.role], share=step.share, resume_from=resume_from)

    # ------------------------------------------------------------------ durable state
    def _section(self, *, cameras: bool = True) -> dict[str, Any]:
        """The plan's `planner` section (routes: what `StateStore.routes` reads); as stored, without the
        decision's per-camera part (`cameras=False`: rows of their own, so a save is O(executors))."""
        decision = self.decision if cameras else {k: v for k, v in self.decision.items() if k != "cameras"}
        return {"roles": {r: asdict(st) for r, st in self.roles.items()}, "workers": self.workers,
                "routes": {r: st.actor for r, st in self.roles.items()}, "decision": decision}

    async def _persist(self) -> None:
        await self.store.save_plan_section.remote(PLANNER, self._section(cameras=False))

    async def _publish(self, roles: Mapping[str, RoleState]) -> None:
        self.roles = dict(roles)
        await self._persist()

    # ------------------------------------------------------------------ inputs
    async def _cameras(self) -> list[CameraSpec]:
        """The stored cameras; also notes each one's executor slot (where the store placed it)."""
        records, n = await self.store.list_cameras.remote(), self.config.executors.count
        self._slots = {c.camera_id: camera_slot(c.camera_id, c.config, n) for c in records}
        return [CameraSpec.from_config(c.camera_id, c.config) for c in records]

    def _camera_role(self, camera_id: str) -> str:
        """The executor role hosting a camera (its stored slot, else its rendezvous hash)."""
        slot = self._slots.get(camera_id)
        return self.role(slot if slot is not None else placement_index(camera_id, self.config.executors.count))

    async def _cameras_for(self, role: str) -> list[CameraSpec]:
        return [c for c in await self._cameras() if self._camera_role(c.camera_id) == role]

    async def _ask(self, name: str, method: str) -> Any:
        """`actor.method()` within the stats timeout; None when it is gone or fails (logged)."""
        handle = self.realloc.handle(name)
        if handle is None:
            return None
        try:
            return await asyncio.wait_for(getattr(handle, method).remote(), self.settings.stats_timeout_s)
        except Exception as exc:  # noqa: BLE001 - an unreachable actor just contributes no measurement
            log.warning("%s.%s failed: %r", name, method, exc)
            return None

    async def _teacher(self) -> TeacherStats | None:
        """The TeacherLabeler's stats (frames, labelling seconds, share) when learning is on (unreachable:
        assume it still holds its share)."""
        c = self.config.learning
        running = c.enabled and self.realloc.handle(c.teacher_name) is not None
        unreachable = TeacherStats(0, 0.0, "unreachable", c.teacher_num_gpus)
        return (await self._ask(c.teacher_name, "stats") or unreachable) if running else None

    def _teacher_share(self) -> float:  # the teacher's share is fixed: not the Planner's to hand out
        return 0.0 if self.teacher is None else self.teacher.share

    async def _context(self) -> planning.RoundInputs | None:
        """This round's frozen inputs; None when there is nothing to plan (no camera)."""
        cameras = await self._cameras()
        if not cameras:
            return None
        executors, workers = self._kind(EXECUTOR), self._kind(RETRAIN)
        answers = await asyncio.gather(*(self._ask(self.roles[r].actor, m) for m in ("stats", "memory_report")
                                         for r in executors), *(self._ask(self.roles[r].actor, "job_stats")
                                                                for r in workers))
        n = len(executors)
        stats: list[ExecutorStats | None] = list(answers[:n])
        memory: list[MemoryReport | None] = list(answers[n:2 * n])
        job_stats: list[WorkerStats | None] = list(answers[2 * n:])
        jobs = {k: v for role, ws in zip(workers, job_stats) for k, v in planning.retrain_jobs(role, ws).items()}
        s = self.settings
        self.teacher = await self._teacher()
        total = planning.plannable(self._capacity(), headroom=s.headroom, teacher_share=self._teacher_share(),
                                   floor=s.floor)
        demands = camera_demands(self.manifest, cameras, planning.latency_rows(stats), correlation=s.correlation)
        live = await self._live_estimates(workers)  # precision/recall measured on the cameras' own samples
        demands = tuple(with_live_estimates(d, live.get(d.camera_id, {}), self.config.learning.live_min_samples)
                        for d in demands)
        ctx = PlannerContext(total_gpu=total, retrain_jobs=tuple(job for _, job in jobs.values()), cameras=demands,
                             window_s=s.retrain_window_s, round_s=s.window_s or 10.0, scheduler=s.scheduler,
                             slicing=s.slicing)
        floors = {role: planning.memory_floor(report) for role, report in zip(executors, memory)}
        self.memory = dict(zip(executors, memory))  # checked against the shares before camera changes
        return planning.RoundInputs(ctx, {job_id: role for job_id, (role, _) in jobs.items()}, floors, tuple(cameras))

    async def _live_estimates(self, workers: list[str]) -> dict[str, Estimates]:
        """camera -> app -> branchpoint -> live estimate (`stemcell.learning.live_plan`), from the workers."""
        found = await asyncio.gather(*(self._ask(self.roles[r].actor, "live_estimates") for r in workers))
        return {camera: apps for estimates in found if estimates for camera, apps in estimates.items()}

    # ------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.window_s)
            try:
                await self.replan()
            except Exception:  # noqa: BLE001 - one bad round must not stop planning
                log.exception("planning round failed")

    async def replan(self) -> PlanView:
        """One round now: plan, apply share changes make-before-break, persist; returns the plan view."""
        async with self._lock:
            inputs = await self._context()
            if inputs is None:
                return self._view()
            ctx, job_roles, floors = inputs.context, inputs.job_roles, inputs.memory_floors
            roles = {c.camera_id: self._camera_role(c.camera_id) for c in inputs.cameras}
            # two levels (global split by executor demand, per-executor cached Mainstream), off the event loop
            decision = await asyncio.to_thread(self.two_level.plan, ctx, inputs.cameras, roles)
            self.rounds += 1
            self.last_decision_ms = decision.decision_ms
            self.metrics.decision_ms.observe(decision.decision_ms)
            log.info("planning round %d: %.2f ms, inference %.2f / retraining %.2f GPU, objective %.3f",
                     self.rounds, decision.decision_ms, decision.inference_share, decision.retrain_share,
                     decision.objective)
            self.decision = planning.decision_view(decision)
            await self.store.put_decision_cameras.remote(self.decision["cameras"])  # changed rows only
            s = self.settings
            split = ShareContext(decision, roles,
                                 tuple(self._kind(EXECUTOR)), job_roles, quantum=s.quantum, floor=s.floor,
                                 memory_floors=floors)
            down = self._stranded()
            shares = planning.decide_shares(split, {r: st.share for r, st in self.roles.items()},
                                            min_change=s.min_change, total=ctx.total_gpu, free=self._free_gpu(down),
                                            down=down)
            await self._apply(shares.placeable, down=shares.down)
            await self._send_grants(worker_grants(decision.slicing.grants if decision.slicing else (), job_roles))
            await self._apply_cameras(decision)
            return self._view()

    async def _send_grants(self, grants: Mapping[str, Mapping[str, int]]) -> None:
        """Each worker trains its jobs by their slicing grants (RECL's per-job time), not round-robin."""
        async def send(role: str, jobs: Mapping[str, int]) -> None:
            handle = self.realloc.handle(self.roles[role].actor) if role in self.roles else None
            try:
                if handle is not None:
                    await asyncio.wait_for(handle.set_grants.remote(dict(jobs)), self.settings.stats_timeout_s)
            except Exception as exc:  # noqa: BLE001 - it keeps its last grants (or round-robin) until the next round
                log.warning("%s.set_grants failed: %r", role, exc)

        await asyncio.gather(*(send(role, jobs) for role, jobs in grants.items()))

    async def set_shares(self, target: Mapping[str, float]) -> list[SwitchReport]:
        """Move the named roles to the given shares now (operators, benchmarks); returns switch reports."""
        async with self._lock:
            current = {r: st.share for r, st in self.roles.items()}
            planning.check_shares(current, target, self.settings.total_gpu, free=self._free_gpu(),
                                  quantum=self.settings.quantum)
            return await self._apply(target)

    def _capacity(self) -> float:
        return planning.capacity(self.settings.total_gpu,
                                 float(ray.cluster_resources().get("GPU", 0.0)) if self._gpus else None)

    def _held(self, down: Collection[str] = ()) -> float:
        return planning.held({r: st.share for r, st in self.roles.items()}, self._teacher_share(), down)

    def _stranded(self) -> set[str]:
        """Roles whose actor waits for room the cluster no longer has. Only looked for when the plan
        outgrew the cluster (a node died): an actor restarting in place is Ray's business."""
        return self.realloc.down_roles(self.roles) if planning.outgrown(self._capacity(), self._held()) else set()

    def _free_gpu(self, down: Collection[str] = ()) -> float:
        ray_free = ray.available_resources().get("GPU", 0.0) if self._gpus else None
        return planning.free_gpu(self._capacity(), self._held(down), ray_free)

    async def _apply(self, target: Mapping[str, float], down: Collection[str] = ()) -> list[SwitchReport]:
        self.roles, reports = await self.realloc.apply(self.roles, target, down=frozenset(down))
        for rep in reports:
            self.metrics.switches.inc(1, {"role": rep.role, "outcome": "ok" if rep.ok else "failed"})
        self.last_switches = [r.as_dict() for r in reports]
        await self._persist()
        self.metrics.export(self.roles, self.decision)
        return reports

    # ------------------------------------------------------------------ camera configs
    async def _apply_cameras(self, decision: PlanDecision) -> None:
        """Push the round's per-app choices to the cameras that run something else (fresh configs:
        an admin change since the round was planned is compared against, not overwritten)."""
        current = {c.camera_id: c for c in await self._cameras()}
        fitted = fit_changes(plan_changes(current, decision.schedules), self.manifest,
                             {r: ExecutorMemory(self.memory.get(r), st.share) for r, st in self.roles.items()},
                             {c: self._camera_role(c) for c in current})
        changes = list(fitted.apply)
        actors = [self.roles[self._camera_role(c.camera_id)].actor for c in changes]
        outcomes = await push_camera_changes(self.store, [(a, self.realloc.handle(a)) for a in actors],
                                             self.manifest, changes)
        self.last_camera_changes = list(fitted.refused)
        for change, outcome in zip(changes, outcomes):
            self.metrics.camera_changes.inc(1, {"camera": change.camera_id, "outcome": outcome})
            swap = fitted.swapped.get(change.camera_id)  # runs with layer swapping (memory_plans)
            self.last_camera_changes.append({**change.as_dict(), "outcome": outcome,
                                             **({"memory": swap} if swap else {})})

    # ------------------------------------------------------------------ retraining workers
    async def add_retrain_worker(self, name: str, kwargs: Mapping[str, Any], share: float,
                                 actor: str | None = None) -> RoleState:
        """Start (or adopt, when it runs) worker role `retrain-<name>` = `worker_class(**kwargs, share=share)`.

        Its first actor is named `actor` (default: the role), so a worker someone else started (the
        Serve app's learning worker, `learning.worker_name`) is adopted as it is; later generations are
        `retrain-<name>-g<g>`. `kwargs` must be JSON (they are saved with the plan, so a restarted
        Planner can re-create it).
        """
        async with self._lock:
            role = retrain_role(name)
            self.workers[role] = dict(kwargs)
            if role not in self.roles:
                first = actor or role
                if self.realloc.handle(first) is None:
                    if share > self._free_gpu() + 1e-9:
                        raise ValueError(f"share {share} does not fit: {self._free_gpu():.2f} GPU free")
                    await self._new_worker(Step(Op.CREATE, role, first, share, RETRAIN), None).ready.remote()
                self.roles[role] = RoleState(RETRAIN, 0, share, first)
            await self._persist()
            self.metrics.export(self.roles, self.decision)
            return self.roles[role]

    # ------------------------------------------------------------------ views
    async def current_plan(self) -> PlanView:
        return self._view()

    def _view(self) -> dict[str, Any]:
        return {**self._section(), "rounds": self.rounds, "window_s": self.settings.window_s,
                "last_decision_ms": self.last_decision_ms, "last_switches": self.last_switches,
                "last_camera_changes": self.last_camera_changes, "teacher": self.teacher and asdict(self.teacher),
                "total_gpu": self.settings.total_gpu, "capacity_gpu": self._capacity(), "updated_at": time.time(),
                "swap": {r: m.details["swap"] for r, m in self.memory.items() if m and m.details.get("swap")}}


PlannerActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)(Planner)


def get_or_create_planner(serve_config: ServeConfig, settings: PlannerSection | None = None) -> ActorHandle:
    """The cluster's single Planner (named, detached when the executors are), created on first use;
    `settings` default to the config's `planner` section. It runs where the ingress replicas may
    (`ingress.node_labels`): losing a GPU node must not also restart the Planner that must re-plan."""
    ex, labels = serve_config.executors, serve_config.ingress.node_labels
    return PlannerActor.options(
        name=PLANNER_ACTOR, namespace=ex.namespace, get_if_exists=True, lifetime="detached" if ex.detached else None,
        **label_options(labels),
    ).remote(serve_config, settings)
