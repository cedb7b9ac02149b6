"""The RECL model zoo as one object: store + per-app gating networks + selection + admission + pruning.

Flow per camera and update window (RECL Fig. 5):
1. `select(...)` on the window's fresh teacher-labelled frames: gating top-K + current + last
   retrained -> safety check -> the model to deploy (a fresh copy, safe to fine-tune further).
2. The caller retrains that model (RECL slicing) and snapshots it with `expert_from_model`.
3. Next window, the retrained model is `last_retrained` in `select`; `offer(...)` then queues it if
   it beat every other candidate by alpha; a full queue is flushed into the store, the app's gating
   network grows one output per new expert and is fine-tuned briefly.
4. `prune()` now and then drops experts nobody picks.

Experts never cross apps: each app has its own gating network and candidate set; nor tasks (an app
renamed onto another task keeps its old experts out of its shortlist). Detect experts are scored by
their event (an object of the app's first class is there: `presence_logits`), as presence ones. This
module is pure torch (no Ray): the ModelZoo actor is a thin shell around one `ModelZoo`.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stemcell.learning.zoo.admission import AdmissionContext, AdmissionDecision, AdmissionQueue, admission_decision
from stemcell.learning.zoo.gating import GatingDataset, GatingNet, gating_input, train_gating
from stemcell.learning.zoo.selection import (
    CandidateContext,
    SelectionHistory,
    prune_context,
    prune_decision,
    safety_check,
    shortlist,
)
from stemcell.learning.zoo.store import Expert, ZooStore, load_expert
from stemcell.models import AppModel, SegmentedNet, make_app_model, make_task_model, to_input
from stemcell.models.detection import model_task, presence_logits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZooConfig:
    k: int = 10  # gating picks passed to the safety checker
    alpha: float = 0.02  # admission margin over the best other candidate
    gamma: int = 4  # admission queue flushes when it holds this many models
    max_wait_s: float | None = None  # ...or when its oldest model waited this long (None: count only)
    eta: int = 4  # prune experts chosen fewer than eta times...
    q: int = 3000  # ...in the last q selections
    input_size: int = 64  # expert input resolution (to_input size)
    mean: tuple[float, float, float] | None = None  # input normalisation as the package trained (None: ImageNet's)
    std: tuple[float, float, float] | None = None
    gating_width: int = 16  # channels of the gating CNN's first block
    gating_capacity: int = 512  # frames kept to (re)train each app's gating network
    gating_steps: int = 150  # Adam steps when an app's gating network is trained from scratch
    gating_finetune_steps: int = 40  # Adam steps after growing by new experts
    gating_lr: float = 3e-3
    cache_size: int = 32  # materialised expert models kept in memory
    seed: int = 0


@dataclass(frozen=True)
class Selection:
    chosen: str  # id of the model to deploy
    model: nn.Module  # that model (a fresh AppModel for zoo experts, else the caller's object)
    accuracy: float  # its accuracy on the fresh teacher-labelled frames
    accuracies: tuple[tuple[str, float], ...]  # every shortlisted candidate's accuracy
    from_zoo: bool  # True when a stored zoo expert won (model reuse)


@dataclass
class _AppGating:
    net: GatingNet
    expert_ids: list[str]
    data: GatingDataset


@torch.no_grad()
def predict_logits(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits on the CPU, the model run where it lives (a RetrainWorker's models are on its GPU)."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([presence_logits(model, model(inputs[i : i + batch_size].to(device))).cpu()
                      for i in range(0, len(inputs), batch_size)])


def accuracy_of(logits: torch.Tensor, labels: np.ndarray) -> float:
    """Fraction of (frame, output) decisions (logit > 0) that agree with the teacher's labels."""
    target = torch.as_tensor(np.asarray(labels, dtype=bool)).reshape(logits.shape)
    return float(((logits > 0) == target).float().mean())


def loss_of(logits: torch.Tensor, labels: np.ndarray) -> float:
    """Mean binary cross-entropy against the teacher's labels: the safety check's tie-break."""
    target = torch.as_tensor(np.asarray(labels, dtype=bool)).reshape(logits.shape).float()
    return float(F.binary_cross_entropy_with_logits(logits.float(), target))


def label_confidence(logits: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
    """Per frame, the probability the model gives the teacher's label (mean over outputs): (N,)."""
    prob = torch.sigmoid(logits)
    target = torch.as_tensor(np.asarray(labels, dtype=bool)).reshape(prob.shape).float()
    return (target * prob + (1 - target) * (1 - prob)).mean(1)


class ModelZoo:
    """Shared across cameras; keeps models per app. Not thread-safe (one actor owns it)."""

    def __init__(
        self,
        store: ZooStore,
        base: SegmentedNet,
        config: ZooConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.base = base
        self.config = config or ZooConfig()
        cfg = self.config
        self.history = SelectionHistory(q=cfg.q)
        self.history.load_state_dict(store.get_history() or {})  # experts' uses survive a restart
        self.queue: AdmissionQueue[tuple[Expert, np.ndarray, np.ndarray]] = AdmissionQueue(cfg.gamma, cfg.max_wait_s, clock)
        self.in_use: dict[str, str] = {}  # camera -> id of the model it runs
        self._models: OrderedDict[str, AppModel] = OrderedDict()
        self._gating: dict[str, _AppGating] = {}
        self._rng = np.random.default_rng(cfg.seed)
        self._torch_gen = torch.Generator().manual_seed(cfg.seed)
        for app in {m.app for m in store.metas()}:
            self._gating[app] = self._restore_gating(app)

    # -- experts ----------------------------------------------------------------------------------
    def expert_ids(self, app: str) -> list[str]:
        return list(self._gating[app].expert_ids) if app in self._gating else []

    def load_model(self, expert_id: str) -> AppModel:
        """A fresh AppModel holding the expert (on the shared base stem); safe to train."""
        expert = self.store.get(expert_id)
        if expert.meta.task == "detect":  # heatmaps per class, then 2 offsets and 2 sizes
            classes = expert.state["head.out.weight"].shape[0] - 4
            return load_expert(make_task_model(self.base, expert.meta.branchpoint, "detect", classes), expert)
        outputs = expert.state["head.fc.weight"].shape[0]
        return load_expert(make_app_model(self.base, expert.meta.branchpoint, outputs), expert)

    def _model(self, expert_id: str) -> AppModel:
        """Cached read-only copy for evaluation (the safety checker runs many experts per query)."""
        if expert_id in self._models:
            self._models.move_to_end(expert_id)
        else:
            self._models[expert_id] = self.load_model(expert_id)
            while len(self._models) > self.config.cache_size:
                self._models.popitem(last=False)
        return self._models[expert_id]

    def _inputs(self, frames: np.ndarray) -> torch.Tensor:
        return to_input(frames, size=self.config.input_size, mean=self.config.mean, std=self.config.std)

    # -- selection --------------------------------------------------------------------------------
    def select(
        self,
        camera: str,
        app: str,
        frames: np.ndarray,
        labels: np.ndarray,
        *,
        current: tuple[str, nn.Module] | None = None,
        last_retrained: tuple[str, nn.Module] | None = None,
        task: str | None = None,
    ) -> Selection:
        """Gating top-K + current + last retrained, measured on `frames` with teacher `labels`; only
        experts of the app's `task` (default: the given models' task) are candidates."""
        extra = dict(m for m in (current, last_retrained) if m is not None)
        task = task or next((model_task(m) for m in extra.values()), "presence")
        gating = self._gating.get(app)
        ids = tuple(gating.expert_ids) if gating else ()
        scores = tuple(gating.net.mean_scores(gating_input(frames)).tolist()) if gating and ids else ()
        mine = [i for i, e in enumerate(ids) if self.store.meta(e).task == task]
        ids, scores = tuple(ids[i] for i in mine), tuple(scores[i] for i in mine)
        ctx = CandidateContext(
            ids, scores, current[0] if current else None, last_retrained[0] if last_retrained else None, self.config.k
        )
        inputs = self._inputs(frames)
        logits = {c: predict_logits(extra[c] if c in extra else self._model(c), inputs) for c in shortlist(ctx)}
        if not logits:
            raise ValueError(f"nothing to select for {camera}/{app}: the zoo is empty and no model was given")
        accuracies = {c: accuracy_of(v, labels) for c, v in logits.items()}
        decision = safety_check(accuracies, ctx.current, {c: loss_of(v, labels) for c, v in logits.items()})
        self.history.record(decision.chosen)
        self.store.put_history(self.history.state_dict())
        self.in_use[camera] = decision.chosen
        chosen = decision.chosen
        model = extra[chosen] if chosen in extra else self.load_model(chosen)
        return Selection(chosen, model, decision.accuracy, decision.accuracies, chosen in self.store)

    # -- admission --------------------------------------------------------------------------------
    def offer(
        self, selection: Selection, expert: Expert, train_frames: np.ndarray, train_labels: np.ndarray
    ) -> AdmissionDecision:
        """Queue `expert` if it beat the other candidates of `selection` by alpha; flush when due.

        `expert` must have been the `last_retrained` candidate of `selection` (same id); its
        training frames become gating-network training data when it is admitted.
        """
        accuracies = dict(selection.accuracies)
        ctx = AdmissionContext(expert.meta.expert_id, accuracies, self.config.alpha)
        decision = admission_decision(ctx)
        if decision.admit and expert.meta.expert_id not in self.store:
            self.queue.push((expert, np.asarray(train_frames), np.asarray(train_labels)))
            if self.queue.due():
                self.flush()
        return decision

    def flush(self) -> list[str]:
        """Admit everything queued: store it, grow each app's gating net, fine-tune it."""
        items = self.queue.drain()
        by_app: dict[str, list[tuple[Expert, np.ndarray, np.ndarray]]] = {}
        for item in items:
            self.store.put(item[0])
            self.history.admitted(item[0].meta.expert_id)
            by_app.setdefault(item[0].meta.app, []).append(item)
        for app, new in by_app.items():
            self._admit_to_gating(app, new)
        if items:
            self.store.put_history(self.history.state_dict())
        admitted = [item[0].meta.expert_id for item in items]
        if admitted:
            log.info("zoo admitted %s", admitted)
        return admitted

    def _admit_to_gating(self, app: str, new: Sequence[tuple[Expert, np.ndarray, np.ndarray]]) -> None:
        cfg = self.config
        gating = self._gating.get(app) or _AppGating(
            GatingNet(0, cfg.gating_width, cfg.seed), [], GatingDataset(cfg.gating_capacity)
        )
        self._gating[app] = gating
        had_experts = gating.net.num_experts > 0
        data = gating.data
        for expert, _, _ in new:  # old frames scored by the new experts
            eid = expert.meta.expert_id
            scores = self._confidence(eid, data.frames, data.labels) if len(data) else torch.zeros(0)
            data.add_expert(scores)
        gating.net.grow(len(new), generator=self._torch_gen)
        gating.expert_ids += [e.meta.expert_id for e, _, _ in new]
        for _, frames, labels in new:  # new frames scored by every expert
            scores = torch.stack([self._confidence(e, frames, labels) for e in gating.expert_ids], dim=1)
            data.add_frames(frames, labels, scores, self._rng)
        self._train_gating(app, cfg.gating_finetune_steps if had_experts else cfg.gating_steps)

    def _confidence(self, expert_id: str, frames: np.ndarray | None, labels: np.ndarray | None) -> torch.Tensor:
        assert frames is not None and labels is not None
        return label_confidence(predict_logits(self._model(expert_id), self._inputs(frames)), labels)

    def _train_gating(self, app: str, steps: int) -> None:
        gating = self._gating[app]
        assert gating.data.frames is not None
        train_gating(
            gating.net, gating_input(gating.data.frames), gating.data.targets(),
            steps=steps, lr=self.config.gating_lr, generator=self._torch_gen,
        )
        self.store.put_gating(app, gating.net.state_dict(), gating.expert_ids)

    def _restore_gating(self, app: str) -> _AppGating:
        saved = self.store.get_gating(app)
        if saved is None:
            net, ids = GatingNet(0, self.config.gating_width, self.config.seed), []
        else:
            state, ids = saved
            net = GatingNet(0, width=state["features.0.weight"].shape[0])  # the width it was saved with
            net.grow(len(ids))
            net.load_state_dict(state)
        return _AppGating(net, ids, GatingDataset(self.config.gating_capacity, scores=torch.zeros((0, len(ids)))))

    # -- pruning ----------------------------------------------------------------------------------
    def prune(self) -> list[str]:
        """Remove experts picked fewer than eta times in the last q selections (never one in use)."""
        removed: list[str] = []
        in_use = frozenset(self.in_use.values())
        for app, gating in self._gating.items():
            decision = prune_decision(prune_context(self.history, gating.expert_ids, in_use, self.config.eta))
            if not decision.remove:
                continue
            keep = [i for i, e in enumerate(gating.expert_ids) if e not in decision.remove]
            gating.net.keep(keep)
            gating.data.keep_experts(keep)
            gating.expert_ids = [gating.expert_ids[i] for i in keep]
            for eid in decision.remove:
                self.store.remove(eid)
                self.history.forget(eid)
                self._models.pop(eid, None)
            self.store.put_gating(app, gating.net.state_dict(), gating.expert_ids)
            removed += decision.remove
        if removed:
            self.store.put_history(self.history.state_dict())
            log.info("zoo pruned %s", removed)
        return removed
