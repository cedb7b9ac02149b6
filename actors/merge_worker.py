"""MergeWorker: the joint-retraining merge of one executor's per-camera models, from the learner's buffers.

A thin shell over `stemcell.sharing.merge_jobs` and `stemcell.sharing.joint_merge`. `merge(executor,
checkpoint)` takes a RetrainWorker checkpoint (`RetrainWorker.checkpoint()`: the learner's models and
teacher-labelled buffers), merges greedily under the accuracy target, and ships every merged model to
the executor (`StemExecutor.set_app_weights(..., merged=True)`, at the learner's version): tied units
are byte-identical there, so its content-addressed store holds them once and its memory report (the
Planner's memory floor and fit) shrinks. A later learner version replaces a model as usual; the
next `merge` of that executor then re-merges (counted). `check(executor, checkpoint)` holds the
merge to its targets on the samples that arrived since, undoing it for the members that fell below.

Scheduled (`start(executors, learner)`): every `poll_s` it reads the learner's checkpoint and each
executor's memory report and acts as `merge_jobs.merge_due` says: a merged model the learner moved on
is `update`d (retrained here on its fresh samples with the shared units frozen, checked, and shipped
as the merged weights of the learner's new version), and a tight executor is (re-)merged at most every
`every_s`. The learner's cameras are taken to be the executor's, as for `merge`.

The per-executor counts are saved as the plan's `executors` section, `{actor: {"merge": {...}}}`,
which `GET /admin/plan` shows. Training runs on one thread (the merge is CPU/GPU heavy; calls queue).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import ray
from ray.actor import ActorHandle
from actors.retrain_worker import read_checkpoint
from actors.state_store import get_or_create_state_store
from stemcell.learning.ams import AmsConfig, AmsTrainer
from stemcell.models import AppModel
from stemcell.package import load_package
from stemcell.sharing.joint_merge import JointMerger, MergeConfig
from stemcell.sharing.merge_jobs import (
    ExecutorMergeState,
    JobKey,
    LearnerWorkload,
    MergeAction,
    MergeCheck,
    MergeSchedule,
    MergeSummary,
    MergeView,
    learner_workload,
    merge_due,
    store_bytes,
)
from stemcell.serve_config import ServeConfig
from stemcell.sharing.remerge import LiveMerge

log = logging.getLogger(__name__)
V = TypeVar("V")
SECTION = "executors"  # plan section: executor actor -> {"merge": MergeView}


@dataclass
class _ExecutorMerge:
    keys: list[JobKey]
    live: LiveMerge
    newest_s: dict[str, float]
    view: MergeView
    versions: dict[JobKey, int]  # the learner version each merged model was last merged or updated at
    merged_at_s: float


def _versions(trainer: AmsTrainer) -> dict[JobKey, int]:
    return {key: trainer.job(*key).version for key in trainer.order}


@ray.remote(num_cpus=1)
class MergeWorker:
    def __init__(self, package_dir: str, *, state_path: str | None = None, namespace: str = "stemcell",
                 config: dict[str, Any] | None = None, holdout_every: int = 3, min_samples: int = 12,
                 schedule: dict[str, float] | None = None,
                 run_over: tuple[Mapping[str, float], str] | None = None) -> None:
        self._package = load_package(package_dir)
        base = self._package.manifest.base  # frames reach the models as they did in training
        self._ams = AmsConfig(input_size=base.input_size, mean=base.normalization.mean, std=base.normalization.std)
        self._cfg = MergeConfig(**(config or {}))
        self._holdout_every, self._min_samples = holdout_every, min_samples
        self._namespace = namespace
        self._store = get_or_create_state_store(state_path, namespace=namespace)
        self._merges: dict[str, _ExecutorMerge] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="merge")
        self._schedule = MergeSchedule(**(schedule or {}))
        self._timer: asyncio.Task[None] | None = None
        if run_over is not None:  # from the constructor, so a restarted worker (max_restarts) runs its timer again
            ray.get_runtime_context().current_actor.start.remote(*run_over)

    async def _on(self, fn: Callable[..., V], *args: Any) -> V:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _trainer(self, checkpoint: bytes) -> AmsTrainer:
        trainer = AmsTrainer(self._ams)
        trainer.load_state_dict(read_checkpoint(checkpoint),
                                lambda _camera, app, spec: self._package.app_model(app, int(spec["branchpoint"])))
        return trainer

    def _merge(self, executor: str, checkpoint: bytes) -> tuple[LearnerWorkload, _ExecutorMerge, MergeSummary]:
        work = learner_workload(self._trainer(checkpoint), holdout_every=self._holdout_every,
                                min_samples=self._min_samples)
        result = JointMerger(work.models, work.data, self._cfg).run()
        before = self._merges.get(executor)
        remerges = 0 if before is None else before.view.remerges + 1
        undone = 0 if before is None else before.view.undone
        view = MergeView(store_bytes(result.models), store_bytes(work.models), remerges, undone,
                         0 if before is None else before.view.updates)
        state = _ExecutorMerge(work.keys, LiveMerge.from_result(result, self._cfg), work.newest_s, view,
                               dict(zip(work.keys, work.versions)), time.time())
        summary = MergeSummary(executor, len(work.keys), len(result.groups), len(result.failed), result.stopped,
                               result.seconds, view)
        return work, state, summary

    async def merge(self, executor: str, checkpoint: bytes) -> MergeSummary:
        """Merge the learner's models of `executor`'s cameras and ship them to it; returns a summary."""
        work, state, summary = await self._on(self._merge, executor, checkpoint)
        await self._ship(executor, zip(state.keys, state.live.models, work.versions))
        self._merges[executor] = state
        await self._save()
        log.info("merge on %s: %d models, %d groups kept, %d bytes -> %d", executor, summary.models,
                 summary.groups, state.view.unmerged_bytes, state.view.merged_bytes)
        return summary

    def _check(self, executor: str, checkpoint: bytes) -> MergeCheck:
        state = self._merges[executor]
        fresh = learner_workload(self._trainer(checkpoint), holdout_every=1, min_samples=1, since_s=state.newest_s)
        samples = {state.keys.index(k): (d.val_x, d.val_y) for k, d in zip(fresh.keys, fresh.data)
                   if k in state.keys}
        touched = state.live.check(samples)
        state.view = replace(state.view, undone=state.view.undone + len(touched))
        return MergeCheck(executor, len(samples), len(touched), state.live.counts())

    async def check(self, executor: str, checkpoint: bytes) -> MergeCheck:
        """Hold `executor`'s merge to its targets on the samples newer than those it was merged on.

        Undone members get their own copy of the weights: same values, so the executor keeps one copy
        until their next learner version diverges (nothing to ship now)."""
        if executor not in self._merges:
            raise KeyError(f"no merge on executor {executor!r}")
        out = await self._on(self._check, executor, checkpoint)
        await self._save()
        return out

    async def _ship(self, executor: str, models: Iterable[tuple[JobKey, AppModel, int]]) -> None:
        """Merged weights to the executor at the learner's version (`merged=True`: they replace it)."""
        handle = ray.get_actor(executor, namespace=self._namespace)
        await asyncio.gather(*(handle.set_app_weights.remote(app, camera, model.trainable_state_dict(), version,
                                                             merged=True) for (camera, app), model, version in models))

    def _update(self, executor: str, checkpoint: bytes) -> list[tuple[JobKey, AppModel, int]]:
        """Merged models the learner moved on: retrained on their fresh samples with the shared units
        frozen, the merge checked on them; returns those still sharing, to ship at the new version."""
        state = self._merges[executor]
        trainer = self._trainer(checkpoint)
        versions = _versions(trainer)
        moved = [k for k in state.keys if versions.get(k, state.versions[k]) > state.versions[k]]
        fresh = learner_workload(trainer, holdout_every=self._holdout_every, min_samples=1, since_s=state.newest_s)
        data = {k: d for k, d in zip(fresh.keys, fresh.data) if k in state.keys}
        sharing = {i for g in state.live.groups for i, _ in g.members}
        updated = [k for k in moved if state.keys.index(k) in sharing and k in data and len(data[k].train_x)]
        for k in updated:
            state.live.update(state.keys.index(k), data[k])
        touched = state.live.check({state.keys.index(k): (d.val_x, d.val_y) for k, d in data.items() if len(d.val_x)})
        state.versions.update({k: versions[k] for k in moved})
        state.newest_s.update(fresh.newest_s)
        state.view = replace(state.view, merged_bytes=store_bytes(state.live.models), updates=state.view.updates
                             + len(updated), undone=state.view.undone + len(touched))
        sharing = {i for g in state.live.groups for i, _ in g.members}
        return [(k, state.live.models[state.keys.index(k)], versions[k]) for k in moved
                if state.keys.index(k) in sharing]

    async def update(self, executor: str, checkpoint: bytes) -> int:
        """Keep `executor`'s merge through the learner's new versions of its models; returns models shipped."""
        if executor not in self._merges:
            raise KeyError(f"no merge on executor {executor!r}")
        ship = await self._on(self._update, executor, checkpoint)
        await self._ship(executor, ship)
        await self._save()
        log.info("merge on %s kept through %d learner updates (shared units frozen)", executor, len(ship))
        return len(ship)

    async def tick(self, executors: Mapping[str, float], checkpoint: bytes | None = None,
                   learner: str | None = None) -> Mapping[str, MergeAction | None]:
        """One round of the schedule over `executors` (actor name -> GPU share); the learner's
        checkpoint is `checkpoint`, or asked of the RetrainWorker actor `learner`."""
        if checkpoint is None:
            if learner is None:
                raise ValueError("tick needs a checkpoint or the learner's actor name")
            checkpoint = await ray.get_actor(learner, namespace=self._namespace).checkpoint.remote()
        blob = checkpoint
        versions = await self._on(lambda: _versions(self._trainer(blob)))
        actions: dict[str, MergeAction | None] = {}
        for executor, share in executors.items():
            report = await ray.get_actor(executor, namespace=self._namespace).memory_report.remote()
            done = self._merges.get(executor)
            state = ExecutorMergeState(
                report.bytes_merged, report.activation_peak,
                int(share * report.gpu_total_bytes) if report.gpu_total_bytes else None,
                bool(report.details.get("swap")), done.merged_at_s if done else None,
                done.versions if done else {}, versions)
            actions[executor] = merge_due(state, time.time(), self._schedule)
            if actions[executor] == "update":
                await self.update(executor, blob)
            elif actions[executor] == "merge":
                await self.merge(executor, blob)
        return actions

    async def start(self, executors: Mapping[str, float], learner: str) -> None:
        """Run `tick` every `poll_s` until `stop` (a failed round is logged and retried next time)."""
        await self.stop()

        async def loop() -> None:
            while True:
                try:
                    actions = await self.tick(executors, learner=learner)
                    log.info("merge schedule: %s", actions)
                except Exception:  # noqa: BLE001 - an executor or the learner away for a while: next round
                    log.exception("merge schedule round failed")
                await asyncio.sleep(self._schedule.poll_s)
        self._timer = asyncio.get_running_loop().create_task(loop())

    async def scheduled(self) -> bool:
        """Whether the timer is running (the schedule survives the actor's restarts)."""
        return self._timer is not None and not self._timer.done()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def view(self) -> Mapping[str, MergeView]:
        """Per executor actor: what its merge saves, and how often it was re-merged or undone."""
        return {ex: m.view for ex, m in self._merges.items()}

    async def _save(self) -> None:
        """The plan's `executors` section: `{actor: {"merge": {merged_bytes, unmerged_bytes, remerges, undone}}}`."""
        section = {ex: {"merge": m.view.as_dict()} for ex, m in self._merges.items()}
        await self._store.save_plan_section.remote(SECTION, section)


def start_merge_schedule(config: ServeConfig, executors: Sequence[str], learner: str) -> ActorHandle:
    """The Serve app's MergeWorker (`<learning.worker_name>-merge`, one per app: replicas find it by
    name), started on its timer over `executors` with the learner `learner` (`learning.merge_poll_s`)."""
    c, ns = config.learning, config.executors.namespace
    assert c.merge_poll_s is not None
    return MergeWorker.options(name=f"{c.worker_name}-merge", namespace=ns, get_if_exists=True,
                               num_cpus=c.num_cpus, max_restarts=-1).remote(
        str(config.package_dir), state_path=str(config.state_path), namespace=ns,
        schedule={"poll_s": c.merge_poll_s, "every_s": c.merge_every_s},
        run_over=({name: config.executors.num_gpus for name in executors}, learner))
