"""A joint merge over what a learner already holds: its per-camera models and their sample buffers.

The MergeWorker actor (`actors.merge_worker`) is a shell over this: it reads a RetrainWorker
checkpoint (the learner's models, Adam state and teacher-labelled buffers, `AmsTrainer.state_dict`),
builds one `ModelData` per (camera, app) job from the buffer (every `holdout_every`-th sample held
out for the accuracy targets), runs `JointMerger`, and ships each merged model's upper segments +
head to the executor (`set_app_weights`). Tied units are byte-identical there, so the executor's
content-addressed `ModuleStore` stores them once; `store_bytes` computes the same accounting here.
The plan view's per-executor `merge` entry (`merge_view`) counts bytes, re-merges and undone merges.

`merge_due` schedules the worker: a merged model whose learner published a newer version is
updated with its shared units frozen (and the merge checked on the fresh samples) at once; an
executor whose memory is tight (or that swaps layers) is merged, or re-merged, at most every
`every_s`; an executor with room is left alone (merging costs accuracy headroom and training time).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from stemcell.learning.ams import AmsTrainer
from stemcell.models import AppModel, to_input
from stemcell.models.detection import model_task
from stemcell.sharing.joint_merge import ModelData
from stemcell.sharing.remerge import RemergeCounts
from stemcell.sharing.stem_tree import StemTree

log = logging.getLogger(__name__)
JobKey = tuple[str, str]  # (camera, app)


@dataclass
class LearnerWorkload:
    """The learner's jobs that have enough samples to merge, with their data."""

    keys: list[JobKey]
    models: list[AppModel]
    data: list[ModelData]
    versions: list[int]  # the learner's version of each model (the executor serves it)
    newest_s: dict[str, float]  # per camera, the newest sample used: fresher ones check the merge


def learner_workload(trainer: AmsTrainer, *, holdout_every: int = 3, min_samples: int = 12,
                     since_s: dict[str, float] | None = None) -> LearnerWorkload:
    """One `ModelData` per job from its camera's buffer (samples after `since_s[camera]` only, when given).

    Jobs with fewer than `min_samples` labelled samples are left out with a log line: their held-out
    accuracy would be too noisy to hold a merge to its target.
    """
    cfg = trainer.config
    out = LearnerWorkload([], [], [], [], {})
    for camera, app in trainer.order:
        job = trainer.job(camera, app)
        if model_task(job.learner.model) == "detect":  # merged on presence targets only: detect heads stay apart
            continue
        items = trainer.session(camera).buffer.items((since_s or {}).get(camera))
        if len(items) < min_samples:
            log.info("job %s/%s has %d samples (< %d): left out of the merge", camera, app, len(items), min_samples)
            continue
        x = to_input(np.stack([it.frame for it in items]), cfg.input_size, mean=cfg.mean, std=cfg.std)
        y = torch.from_numpy((np.stack([it.labels for it in items])[:, job.target] > 0.5).astype(np.float32))[:, None]
        held = torch.arange(len(items)) % holdout_every == 0
        out.keys.append((camera, app))
        out.models.append(job.learner.model)
        out.data.append(ModelData(x[~held], y[~held], x[held], y[held]))
        out.versions.append(job.version)
        out.newest_s[camera] = max(it.t_s for it in items)
    return out


def store_bytes(models: Sequence[AppModel]) -> int:
    """What a stem tree's content-addressed store holds for these models: the executors' accounting
    (a unit tied by the merge is one module, so it is counted once)."""
    if not models:
        return 0
    tree = StemTree(max(m.branchpoint + len(m.upper) for m in models))
    for i, m in enumerate(models):
        tree.add((str(i), "app"), m)
    return tree.store.bytes()


@dataclass(frozen=True)
class MergeView:
    """Per executor in `GET /admin/plan`: what the merge saves and how it has been kept up."""

    merged_bytes: int  # the merged models as the executor's store holds them
    unmerged_bytes: int  # the same models before merging
    remerges: int  # merges re-run on this executor after its models changed
    undone: int  # merges undone because a member fell below target on fresh samples
    updates: int = 0  # learner versions of merged models retrained here with the shared units frozen

    def as_dict(self) -> dict[str, int]:
        return {"merged_bytes": self.merged_bytes, "unmerged_bytes": self.unmerged_bytes,
                "remerges": self.remerges, "undone": self.undone, "updates": self.updates}


@dataclass(frozen=True)
class MergeSummary:
    """What one `MergeWorker.merge` did."""

    executor: str
    models: int  # learner jobs merged (those with enough samples)
    groups: int  # merges kept
    rolled_back: int  # merge steps that missed a target and were rolled back
    stopped: str  # "no candidates" | "budget"
    seconds: float
    view: MergeView


@dataclass(frozen=True)
class MergeCheck:
    """What one `MergeWorker.check` did on the samples newer than the merge."""

    executor: str
    checked: int  # models with fresh samples
    undone: int  # merges undone by this check
    counts: RemergeCounts


@dataclass(frozen=True)
class MergeSchedule:
    """When the MergeWorker acts on its own (`MergeWorker.start`)."""

    poll_s: float = 60.0  # how often executors and the learner are looked at
    every_s: float = 1800.0  # a tight executor is (re-)merged at most this often
    tight_fraction: float = 0.8  # need / cap at or above which an executor's memory is tight
    margin: float = 1.25  # need = (weights + activations) x margin, as `memory_fit`


@dataclass(frozen=True)
class ExecutorMergeState:
    """One executor as the schedule sees it."""

    weight_bytes: int  # merged weights it holds now (its memory report)
    activation_bytes: int
    cap_bytes: int | None  # its share of the GPU's memory; None on the CPU (no cap)
    swapping: bool  # it swaps layers (`executors.weight_cap_mb`): its weights already exceed what it keeps
    last_merge_s: float | None  # None: never merged
    merged_versions: Mapping[JobKey, int] = field(default_factory=dict)  # per merged model, its learner version
    learner_versions: Mapping[JobKey, int] = field(default_factory=dict)  # the learner's newest versions


MergeAction = Literal["update", "merge"]


def merge_due(state: ExecutorMergeState, now_s: float, schedule: MergeSchedule) -> MergeAction | None:
    """"update" when the learner moved a merged model on (it would replace the merged weights), else
    "merge" when memory is tight and the last merge is older than `every_s`, else nothing."""
    if any(state.learner_versions.get(k, v) > v for k, v in state.merged_versions.items()):
        return "update"
    need = schedule.margin * (state.weight_bytes + state.activation_bytes)
    tight = state.swapping or (state.cap_bytes is not None and need >= schedule.tight_fraction * state.cap_bytes)
    if tight and (state.last_merge_s is None or now_s - state.last_merge_s >= schedule.every_s):
        return "merge"
    return None
