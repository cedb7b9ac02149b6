"""The Planner actor: every window, measure -> `plan_round` -> per-role GPU shares -> make-before-break.

A thin shell (STYLE.md): it builds a frozen `PlannerContext` from what the StemExecutors measured
(per-segment latency; memory held, which floors their shares because a share is also a memory cap),
what the RetrainWorkers report (per-micro-window accuracy gains) and what the TeacherLabeler holds
(its fixed share is left out of the plannable total), calls `stemcell.scheduling.plan_round`, turns
the decision into one share per role (`stemcell.scheduling.shares`), and hands share changes to
`actors.reallocator.Reallocator`.

Roles are stable slots: executor role `<name_prefix>-<i>` (what `app.executors.ExecutorPool`
places cameras on) and worker role `retrain-<name>` (an `actors.retrain_worker.RetrainWorker`
serving several cameras' retraining jobs; RECL's slicing runs over the jobs of all workers and a
worker's share follows the micro-windows its jobs were granted). Generation 0 of a role is the actor named
like the role (the one the ingress created); generation g > 0 is `<role>-g<g>`. Which actor
serves each role is the `planner.routes` section of the saved plan, which the ingress reads.

After the share changes, each camera whose chosen (app -> branchpoint, fps) differs from what it runs
is reconfigured in place (`stemcell.control.camera_changes`): the executor serving its slot
swaps branches without a restart, then the stored config is updated (compare-and-set, so an
admin's concurrent change wins); apps an admin pinned are left alone.

Durable: the role table, routes, workers and the last decision are saved in the StateStore after every
change, so a restarted Planner (`max_restarts=-1`) continues with the same actors; a switch cut
short by the restart leaves at most an unswitched next-generation actor, which it kills.
"""
from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray
from ray.actor import ActorHandle

from actors.gpu_share import actor_options, label_options, placement_options
from actors.planner_metrics import PlannerMetrics
from actors.reallocator import EXECUTOR, RETRAIN, Reallocator, RoleState
from actors.routed_executor import RoutedExecutor
from actors.state_store import get_or_create_state_store
from stemcell.package.manifest import Manifest
from stemcell.package.planning import DEFAULT_FRAME_RATES, problem_from_manifest
from stemcell.package.store import MANIFEST
from stemcell.control import plan_state
from stemcell.control.camera_plans import assignments_of, camera_plan
from stemcell.control.camera_changes import (
    CameraChange,
    CameraSetting,
    commit_camera_change,
    plan_changes,
    respect_pins,
)
from stemcell.scheduling.planner import CameraDemand, PlanDecision, PlannerContext, plan_round
from stemcell.scheduling.shares import (
    ShareContext,
    measured_latency,
    memory_floor,
    placeable_shares,
    placement_index,
    role_shares,
    stable_shares,
)
from stemcell.scheduling.slicing import RetrainJob
from stemcell.serve_config import ServeConfig

log = logging.getLogger(__name__)

ACTOR_NAME = plan_state.PLANNER_ACTOR


@dataclass(frozen=True)
class PlannerSettings:
    window_s: float = 10.0  # planning period; 0 plans only on `replan()`
    total_gpu: float = 1.0  # GPU-seconds per second the Planner may hand out
    headroom: float = 0.0  # GPU left out of planning (other tenants); switches need free room besides
    quantum: float = 0.05  # shares are multiples of this
    floor: float = 0.05  # least share of any role
    min_change: float = 0.1  # smaller share changes are not worth a switch
    scheduler: str = "mainstream"  # inference policy (stemcell.scheduling.registry)
    correlation: float = 0.5  # rho of the event-F1 model
    retrain_window_s: float = 1.0  # RECL micro-window length
    mps: bool | None = None  # set CUDA_MPS_ACTIVE_THREAD_PERCENTAGE (None: when MPS is detected)
    grace_s: float = 1.5  # after a switch, how long ingress replicas get to pick up the new route
    warm_timeout_s: float = 120.0
    drain_timeout_s: float = 30.0
    stats_timeout_s: float = 5.0
    worker_class: str = "actors.retrain_worker:RetrainWorker"  # module:class of retraining workers
    worker_num_cpus: float = 1.0  # CPU slots of each retraining worker


def retrain_jobs(role: str, stats: Mapping[str, Any] | None) -> dict[str, tuple[str, RetrainJob]]:
    """A RetrainWorker's `stats()` as Algorithm 1 sees it: job id -> (worker role, gains so far).

    Each job's `recent_gains` are its measured accuracy gains per training phase (micro-window),
    `updates` how many phases it ran.
    """
    out = {}
    for job_id, job in (stats or {}).get("jobs", {}).items():
        gains = tuple(float(g) for g in job.get("recent_gains", ()))[-8:]
        out[job_id] = (role, RetrainJob(job_id, gains, max(int(job.get("updates", 0)), len(gains))))
    return out


def decision_view(decision: PlanDecision) -> dict[str, Any]:
    """The JSON form of a round (what /admin/plan shows and the StateStore keeps)."""
    cameras = {cam: {"objective": s.objective, "cost": s.cost, "budget": s.budget, "feasible": s.feasible,
                     "apps": {c.app: {"branchpoint": c.branchpoint, "fps": c.fps, "predicted_f1": c.predicted_f1}
                              for c in s.choices}}
               for cam, s in decision.schedules.items()}
    grants = dict(decision.slicing.grants) if decision.slicing else {}
    return {"inference_share": decision.inference_share, "retrain_share": decision.retrain_share,
            "objective": decision.objective, "cameras": cameras, "retrain_windows": grants}


class Planner:
    async def __init__(self, serve_config: dict, settings: PlannerSettings | None = None) -> None:
        self.config = ServeConfig.model_validate(serve_config)
        self.settings = s = settings or PlannerSettings()
        ex = self.config.executors
        self.manifest = Manifest.model_validate_json((Path(self.config.package_dir) / MANIFEST).read_text())
        self.store = get_or_create_state_store(str(self.config.state_path), namespace=ex.namespace)
        self._gpus = ray.cluster_resources().get("GPU", 0) > 0
        self._lock = asyncio.Lock()
        self.realloc = Reallocator(namespace=ex.namespace, executor_factory=self._new_executor,
                                   worker_factory=self._new_worker, cameras_for=self._cameras_for,
                                   publish=self._publish, grace_s=s.grace_s, warm_timeout_s=s.warm_timeout_s,
                                   drain_timeout_s=s.drain_timeout_s)
        saved = await self.store.__ray_call__.remote(plan_state.plan_section, plan_state.PLANNER) or {}
        defaults = {self.role(i): RoleState(EXECUTOR, 0, ex.num_gpus, self.role(i)) for i in range(ex.count)}
        restored = {r: RoleState(**v) for r, v in saved.get("roles", {}).items()}
        self.roles: dict[str, RoleState] = defaults | restored
        self.workers: dict[str, dict[str, Any]] = dict(saved.get("workers", {}))  # role -> constructor kwargs
        self.decision: dict[str, Any] = dict(saved.get("decision", {}))
        self.rounds, self.last_decision_ms, self.last_switches, self.last_camera_changes = 0, None, [], []
        self.teacher: dict[str, Any] | None = None
        orphans = self.realloc.kill_orphans(self.roles)
        log.info("planner up: %d roles (%s restored), killed orphans %s", len(self.roles), len(restored), orphans)
        self.metrics = PlannerMetrics()
        self._export()
        self._loop = asyncio.get_running_loop().create_task(self._run()) if s.window_s > 0 else None

    # ------------------------------------------------------------------ naming
    def role(self, index: int) -> str:
        return f"{self.config.executors.name_prefix}-{index}"

    def _executor_roles(self) -> tuple[str, ...]:
        return tuple(r for r, st in self.roles.items() if st.kind == EXECUTOR)

    # ------------------------------------------------------------------ actor factories
    # Actors the Planner creates are detached: a non-detached actor dies with its owner, and the
    # Planner must be able to restart without taking the executors it started down with it.
    def _new_executor(self, _kind: str, name: str, share: float, _resume: Any) -> ActorHandle:
        c = self.config.executors
        opts = actor_options(share, gpus_available=self._gpus, mps=self.settings.mps, name=name,
                             namespace=c.namespace, lifetime="detached", num_cpus=c.num_cpus,
                             max_restarts=-1, max_task_retries=0, **placement_options(c.placement, c.node_labels))
        return RoutedExecutor.options(**opts).remote(str(self.config.package_dir), share=share,
                                                     max_batch=c.max_batch, max_wait_ms=c.max_wait_ms,
                                                     **c.device_options())

    def _worker_class(self) -> Any:
        module, _, name = self.settings.worker_class.partition(":")
        return getattr(importlib.import_module(module), name)

    def _new_worker(self, _kind: str, name: str, share: float, resume_from: Any) -> ActorHandle:
        role = next(r for r in self.workers if name == r or name.startswith(f"{r}-g"))
        return self._start_worker(role, name, share, resume_from)

    def _start_worker(self, role: str, name: str, share: float, resume_from: Any) -> ActorHandle:
        opts = actor_options(share, gpus_available=self._gpus, mps=self.settings.mps, name=name,
                             namespace=self.config.executors.namespace, lifetime="detached", max_restarts=-1,
                             num_cpus=self.settings.worker_num_cpus)
        return self._worker_class().options(**opts).remote(**self.workers[role], share=share, resume_from=resume_from)

    # ------------------------------------------------------------------ durable state
    def _section(self) -> dict[str, Any]:
        routes = {r: st.actor for r, st in self.roles.items()}
        return {"roles": {r: asdict(st) for r, st in self.roles.items()}, "routes": routes,
                "workers": self.workers, "decision": self.decision}

    async def _persist(self) -> None:
        await self.store.__ray_call__.remote(plan_state.save_plan_section, plan_state.PLANNER, self._section())

    async def _publish(self, roles: Mapping[str, RoleState]) -> None:
        self.roles = dict(roles)
        await self._persist()

    # ------------------------------------------------------------------ inputs
    async def _cameras(self) -> list[tuple[str, Mapping[str, Any]]]:
        return [(c.camera_id, c.config) for c in await self.store.list_cameras.remote()]

    async def _cameras_for(self, role: str) -> list[tuple[str, Mapping[str, Any]]]:
        count = self.config.executors.count
        return [(cam, cfg) for cam, cfg in await self._cameras() if self.role(placement_index(cam, count)) == role]

    async def _ask(self, role: str, method: str) -> Any:
        name = self.roles[role].actor
        handle = self.realloc.handle(name)
        return None if handle is None else await self._call(handle, name, method)

    async def _call(self, handle: ActorHandle, name: str, method: str) -> Any:
        """`handle.method()` within the stats timeout; None when it fails (logged)."""
        try:
            return await asyncio.wait_for(getattr(handle, method).remote(), self.settings.stats_timeout_s)
        except Exception as exc:  # noqa: BLE001 - an unreachable actor just contributes no measurement
            log.warning("%s.%s failed: %r", name, method, exc)
            return None

    async def _teacher(self) -> dict[str, Any] | None:
        """The TeacherLabeler's stats (frames, labelling seconds, share) when learning is on."""
        learning = self.config.learning
        handle = self.realloc.handle(learning.teacher_name) if learning.enabled else None
        if handle is None:
            return None
        stats = await self._call(handle, learning.teacher_name, "stats")
        return stats if stats is not None else {"share": learning.teacher_num_gpus}  # assume it still holds it

    async def measurements(self) -> dict[str, Any]:
        """Executors' stats + memory reports and workers' stats, by role (None where unreachable)."""
        roles = list(self.roles)
        asks = [self._ask(r, "stats") for r in roles]
        asks += [self._ask(r, "memory_report") for r in roles if self.roles[r].kind == EXECUTOR]
        answers = await asyncio.gather(*asks)
        stats = dict(zip(roles, answers[: len(roles)]))
        memory = dict(zip([r for r in roles if self.roles[r].kind == EXECUTOR], answers[len(roles):]))
        return {"stats": stats, "memory": memory}

    def _demand(self, camera_id: str, config: Mapping[str, Any], rows: list[dict]) -> CameraDemand:
        fps = float(config["fps"])
        apps = [a["app"] for a in config["apps"]]
        batch = max(self.manifest.latency.batch_sizes)
        rates = [r for r in DEFAULT_FRAME_RATES if r <= fps] or [fps]
        problem = problem_from_manifest(self.manifest, apps, 0.0, frame_rates=rates, batch_size=batch,
                                        correlation=self.settings.correlation)
        names = [b.removeprefix("after_") for b in self.manifest.base.branchpoints[1:]]
        problem = dataclasses.replace(measured_latency(problem, names, rows), stream_fps=max(fps, rates[-1]))
        return CameraDemand(camera_id, respect_pins(problem, CameraSetting.from_config(config)))

    async def context(self) -> tuple[PlannerContext, dict[str, str], dict[str, float]] | None:
        """This round's frozen inputs, which worker role runs each retraining job, and each
        executor's least share by measured memory; None when there is nothing to plan (no camera)."""
        cameras = await self._cameras()
        if not cameras:
            return None
        measured = await self.measurements()
        rows = [row for r, st in measured["stats"].items() if st and self.roles[r].kind == EXECUTOR
                for row in st.get("segment_latency", [])]
        jobs: dict[str, tuple[str, RetrainJob]] = {}
        for role in self.workers:
            jobs |= retrain_jobs(role, measured["stats"].get(role))
        s = self.settings
        self.teacher = await self._teacher()  # its GPU share is fixed: not the Planner's to hand out
        plannable = self._capacity() - s.headroom - float((self.teacher or {}).get("share", 0.0))
        if plannable < s.floor:
            raise ValueError(f"nothing left to plan: capacity {self._capacity()} - headroom {s.headroom} - teacher "
                             f"share {(self.teacher or {}).get('share')} < floor {s.floor}")
        ctx = PlannerContext(total_gpu=plannable,
                             cameras=tuple(self._demand(c, cfg, rows) for c, cfg in cameras),
                             retrain_jobs=tuple(job for _, job in jobs.values()), window_s=s.retrain_window_s,
                             round_s=s.window_s or 10.0, scheduler=s.scheduler)
        floors = {role: memory_floor(report) for role, report in measured["memory"].items()}
        return ctx, {job_id: role for job_id, (role, _) in jobs.items()}, floors

    # ------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.window_s)
            try:
                await self.replan()
            except Exception:  # noqa: BLE001 - one bad round must not stop planning
                log.exception("planning round failed")

    async def replan(self) -> dict[str, Any]:
        """One round now: plan, apply share changes make-before-break, persist; returns the plan view."""
        async with self._lock:
            inputs = await self.context()
            if inputs is None:
                return self.view()
            ctx, job_roles, floors = inputs
            decision = plan_round(ctx)
            self.rounds += 1
            self.last_decision_ms = decision.decision_ms
            self.metrics.decision_ms.observe(decision.decision_ms)
            log.info("planning round %d: %.2f ms, inference %.2f / retraining %.2f GPU, objective %.3f",
                     self.rounds, decision.decision_ms, decision.inference_share, decision.retrain_share,
                     decision.objective)
            self.decision = decision_view(decision)
            count = self.config.executors.count
            target = role_shares(ShareContext(
                decision, {c: self.role(placement_index(c, count)) for c in decision.schedules},
                self._executor_roles(), job_roles,
                quantum=self.settings.quantum, floor=self.settings.floor, memory_floors=floors))
            current = {r: st.share for r, st in self.roles.items()}
            wanted = stable_shares(current, target, min_change=self.settings.min_change, total=ctx.total_gpu,
                                   floors=floors)
            down = self._stranded()
            await self._apply(placeable_shares(current, wanted, free=self._free_gpu(down),
                                               quantum=self.settings.quantum, down=down), down=down)
            await self._apply_cameras(decision)
            return self.view()

    async def set_shares(self, target: dict[str, float]) -> list[dict[str, Any]]:
        """Move the named roles to the given shares now (operators, benchmarks); returns switch reports."""
        async with self._lock:
            unknown = sorted(set(target) - set(self.roles))
            if unknown:
                raise ValueError(f"unknown roles {unknown}; known: {sorted(self.roles)}")
            current = {r: st.share for r, st in self.roles.items()}
            after = current | target
            if any(v <= 0 for v in target.values()) or sum(after.values()) > self.settings.total_gpu + 1e-9:
                raise ValueError(f"shares must be > 0 and sum to <= {self.settings.total_gpu}, got {after}")
            free = self._free_gpu()
            if placeable_shares(current, target, free=free, quantum=self.settings.quantum) != dict(target):
                raise ValueError(f"{target} cannot be placed make-before-break: the new actors need their share "
                                 f"beside the old ones, and only {free:.2f} GPU is free")
            return [r.as_dict() for r in await self._apply(target)]

    def _capacity(self) -> float:
        """GPU the Planner may hand out now: `total_gpu`, or less when the cluster has lost nodes."""
        total = self.settings.total_gpu
        return min(total, float(ray.cluster_resources().get("GPU", 0.0))) if self._gpus else total

    def _held(self, down: Collection[str] = ()) -> float:
        teacher = float((self.teacher or {}).get("share", 0.0))
        return sum(st.share for r, st in self.roles.items() if r not in down) + teacher

    def _stranded(self) -> set[str]:
        """Roles whose actor waits for room the cluster no longer has. Only looked for when the plan
        outgrew the cluster (a node died): an actor restarting in place is Ray's business."""
        return self.realloc.down_roles(self.roles) if self._held() > self._capacity() + 1e-9 else set()

    def _free_gpu(self, down: Collection[str] = ()) -> float:
        """GPU a new actor can take now: the Planner's unassigned capacity (less the teacher's share;
        `down` roles hold nothing), and what Ray has free."""
        free = self._capacity() - self._held(down)
        return min(free, ray.available_resources().get("GPU", 0.0)) if self._gpus else free

    async def _apply(self, target: Mapping[str, float], down: Collection[str] = ()) -> list:
        self.roles, reports = await self.realloc.apply(self.roles, target, down=frozenset(down))
        for rep in reports:
            self.metrics.switches.inc(1, {"role": rep.role, "outcome": "ok" if rep.ok else "failed"})
        self.last_switches = [r.as_dict() for r in reports]
        await self._persist()
        self._export()
        return reports

    # ------------------------------------------------------------------ camera configs
    async def _apply_cameras(self, decision: PlanDecision) -> None:
        """Push the round's per-app choices to the cameras that run something else (fresh configs:
        an admin change since the round was planned is compared against, not overwritten)."""
        current = {cam: CameraSetting.from_config(cfg) for cam, cfg in await self._cameras()}
        results = [(change, await self._push_camera(change)) for change in plan_changes(current, decision.schedules)]
        self.last_camera_changes = [{**change.as_dict(), "outcome": outcome} for change, outcome in results]

    async def _push_camera(self, change: CameraChange) -> str:
        """Executor first, then the store (as the ingress does); 'applied', 'superseded' or 'failed'."""
        cam, after = change.camera_id, change.after.as_config()
        actor = self.roles[self.role(placement_index(cam, self.config.executors.count))].actor
        handle = self.realloc.handle(actor)
        outcome = "failed"
        try:
            if handle is None:
                raise LookupError(f"executor {actor} is not running")
            await handle.add_camera.remote(cam, after["apps"], after["fps"])
            entry = camera_plan(self.manifest, change.after.stream_fps, assignments_of(after))
            if await self.store.__ray_call__.remote(commit_camera_change, change, entry):
                outcome = "applied"
                log.info("camera %s reconfigured on %s: %s", cam, actor, change.describe())
            else:  # changed by an admin meanwhile: the executor must run what the store now says
                outcome = "superseded"
                record = await self.store.get_camera.remote(cam)
                if record is None:  # removed: the push must not leave it on the executor
                    await handle.remove_camera.remote(cam)
                else:
                    await handle.add_camera.remote(cam, record.config["apps"], record.config["fps"])
                log.info("camera %s changed meanwhile; planner change %s dropped", cam, change.describe())
        except Exception as exc:  # noqa: BLE001 - one camera's failure must not stop the others
            log.warning("camera %s not reconfigured on %s (%s): %r", cam, actor, change.describe(), exc)
        self.metrics.camera_changes.inc(1, {"camera": cam, "outcome": outcome})
        return outcome

    # ------------------------------------------------------------------ retraining workers
    async def add_retrain_worker(self, name: str, kwargs: dict[str, Any], share: float,
                                 actor: str | None = None) -> dict[str, Any]:
        """Start (or adopt, when it runs) worker role `retrain-<name>` = `worker_class(**kwargs, share=share)`.

        Its first actor is named `actor` (default: the role), so a worker someone else started (the
        Serve app's learning worker, `learning.worker_name`) is adopted as it is; later generations are
        `retrain-<name>-g<g>`. `kwargs` must be JSON (they are saved with the plan, so a restarted
        Planner can re-create it).
        """
        async with self._lock:
            role = f"{RETRAIN}-{name}"
            self.workers[role] = dict(kwargs)
            if role not in self.roles:
                first = actor or role
                if self.realloc.handle(first) is None:
                    if share > self._free_gpu() + 1e-9:
                        raise ValueError(f"share {share} does not fit: {self._free_gpu():.2f} GPU free")
                    await self._start_worker(role, first, share, None).ready.remote()
                self.roles[role] = RoleState(RETRAIN, 0, share, first)
            await self._persist()
            self._export()
            return asdict(self.roles[role])

    # ------------------------------------------------------------------ views
    def _export(self) -> None:
        self.metrics.export(self.roles, self.decision)

    def view(self) -> dict[str, Any]:
        return {**self._section(), "rounds": self.rounds, "window_s": self.settings.window_s,
                "last_decision_ms": self.last_decision_ms, "last_switches": self.last_switches,
                "last_camera_changes": self.last_camera_changes, "teacher": self.teacher,
                "total_gpu": self.settings.total_gpu, "capacity_gpu": self._capacity(), "updated_at": time.time()}

    async def current_plan(self) -> dict[str, Any]:
        return self.view()


PlannerActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)(Planner)


def get_or_create_planner(serve_config: ServeConfig, settings: PlannerSettings | None = None) -> ActorHandle:
    """The cluster's single Planner (named, detached when the executors are), created on first use.

    It runs where the ingress replicas may (`ingress.node_labels`, e.g. the head): control plane
    beside control plane, so losing a GPU node does not also restart the Planner that must re-plan."""
    ex, labels = serve_config.executors, serve_config.ingress.node_labels
    return PlannerActor.options(
        name=ACTOR_NAME, namespace=ex.namespace, get_if_exists=True, lifetime="detached" if ex.detached else None,
        **label_options(labels),
    ).remote(serve_config.model_dump(mode="json"), settings)
