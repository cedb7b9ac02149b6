"""MergeWorker: the joint-retraining merge of one executor's per-camera models, from the learner's buffers.

A thin shell over `stemcell.sharing.merge_jobs` and `stemcell.sharing.joint_merge`. `merge(executor,
checkpoint)` takes a RetrainWorker checkpoint (`RetrainWorker.checkpoint()`: the learner's models and
teacher-labelled buffers), merges greedily under the accuracy target, and ships every merged model to
the executor (`StemExecutor.set_app_weights(..., merged=True)`, at the learner's version): tied units
are byte-identical there, so its content-addressed store holds them once and its memory report (the
Planner's memory floor and fit) shrinks. A later learner version replaces a model as usual; the
next `merge` of that executor then re-merges (counted). `check(executor, checkpoint)` holds the
merge to its targets on the samples that arrived since, undoing it for the members that fell below.

The per-executor counts are saved as the plan's `executors` section, `{actor: {"merge": {...}}}`,
which `GET /admin/plan` shows. Training runs on one thread (the merge is CPU/GPU heavy; calls queue).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import ray
from actors.retrain_worker import read_checkpoint
from actors.state_store import get_or_create_state_store
from stemcell.learning.ams import AmsConfig, AmsTrainer
from stemcell.package import load_package
from stemcell.sharing.joint_merge import JointMerger, MergeConfig
from stemcell.sharing.merge_jobs import (
    JobKey,
    LearnerWorkload,
    MergeCheck,
    MergeSummary,
    MergeView,
    learner_workload,
    store_bytes,
)
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


@ray.remote(num_cpus=1)
class MergeWorker:
    def __init__(self, package_dir: str, *, state_path: str | None = None, namespace: str = "stemcell",
                 config: dict[str, Any] | None = None, holdout_every: int = 3, min_samples: int = 12) -> None:
        self._package = load_package(package_dir)
        base = self._package.manifest.base  # frames reach the models as they did in training
        self._ams = AmsConfig(input_size=base.input_size, mean=base.normalization.mean, std=base.normalization.std)
        self._cfg = MergeConfig(**(config or {}))
        self._holdout_every, self._min_samples = holdout_every, min_samples
        self._namespace = namespace
        self._store = get_or_create_state_store(state_path, namespace=namespace)
        self._merges: dict[str, _ExecutorMerge] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="merge")

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
        view = MergeView(store_bytes(result.models), store_bytes(work.models), remerges, undone)
        state = _ExecutorMerge(work.keys, LiveMerge.from_result(result, self._cfg), work.newest_s, view)
        summary = MergeSummary(executor, len(work.keys), len(result.groups), len(result.failed), result.stopped,
                               result.seconds, view)
        return work, state, summary

    async def merge(self, executor: str, checkpoint: bytes) -> MergeSummary:
        """Merge the learner's models of `executor`'s cameras and ship them to it; returns a summary."""
        work, state, summary = await self._on(self._merge, executor, checkpoint)
        handle = ray.get_actor(executor, namespace=self._namespace)
        await asyncio.gather(*(handle.set_app_weights.remote(app, camera, model.trainable_state_dict(), version,
                                                             merged=True)
                               for (camera, app), model, version in zip(state.keys, state.live.models, work.versions)))
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

    async def view(self) -> Mapping[str, MergeView]:
        """Per executor actor: what its merge saves, and how often it was re-merged or undone."""
        return {ex: m.view for ex, m in self._merges.items()}

    async def _save(self) -> None:
        """The plan's `executors` section: `{actor: {"merge": {merged_bytes, unmerged_bytes, remerges, undone}}}`."""
        section = {ex: {"merge": m.view.as_dict()} for ex, m in self._merges.items()}
        await self._store.save_plan_section.remote(SECTION, section)
