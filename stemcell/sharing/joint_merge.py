"""Merging layers whose weights differ: greedy choice, tied weights, joint retraining, rollback.

Models fine-tuned per app or per camera hold matching layers (`stemcell.sharing.matching`) with
different weights, so they cannot be stored once as they are. Gemel's answer, followed here:
1. candidates: a group of matching units, one per model (k-th unit of a signature in each model);
2. greedy: try the candidate that saves the most bytes first (memory is dominated by few big layers);
   a group that fails is tried again without the models that missed their target (Gemel's
   incremental choice of who shares, `retry_subsets`), or split in two by weight distance;
3. tie: every member points at one module (one `nn.Parameter` per tensor, one copy in memory),
   initialised from the medoid member's weights or the members' mean (`MergeConfig.init`);
4. check the tied weights as they start (epoch 0: the mean of models fine-tuned from one base often
   serves them all), then retrain jointly every model that shares anything with the group, each from
   its lowest tied segment up on the cached activation below it (`joint_train`), one batch of every
   model per optimiser step, tied units at a smaller learning rate, for at most `max_epochs`; stop
   as soon as every model is within `tolerance_points` of its unmerged validation accuracy (or its
   explicit target), otherwise roll back to the checkpoint taken before the step;
5. stop when no candidate is left or the time budget is spent.
Tied segments are byte-identical afterwards, so the `ModuleStore` of a stem tree stores them once
and the executors' memory accounting reflects the merge without any special case.
"""
from __future__ import annotations

import copy
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from stemcell.models import AppModel
from stemcell.sharing.joint_train import (
    Init,
    MergeConfig,
    ModelData,
    Suffix,
    accuracy_points,
    prefix_features,
    train_jointly,
)
from stemcell.sharing.matching import Unit, model_units

log = logging.getLogger(__name__)
Member = tuple[int, str]  # (model index, unit path)

@dataclass(frozen=True)
class Candidate:
    """Units that can become one: same signature, one per model."""

    signature: str  # their common `layer_signature`
    members: tuple[Member, ...]  # (model index, unit path), in model order
    unit_bytes: int  # bytes of one copy

    @property
    def bytes_saved(self) -> int:
        return self.unit_bytes * (len(self.members) - 1)


@dataclass(frozen=True)
class MergeStep:
    candidate: Candidate
    accepted: bool  # kept (True) or rolled back (False)
    epochs: int  # joint-retraining epochs run
    models: tuple[int, ...]  # every model retrained and checked (those sharing anything with the group)
    accuracy: tuple[float, ...]  # held-out accuracy reached by each of `models`, points
    targets: tuple[float, ...]  # their targets, points
    seconds: float
    reason: str  # "target met" | "target missed" | "budget"


@dataclass
class MergeResult:
    models: list[AppModel]  # the merged models (tied units are shared module objects)
    groups: list[Candidate]  # accepted merges, in order
    steps: list[MergeStep]  # every attempt, accepted or not
    baseline: tuple[float, ...]  # unmerged held-out accuracy per model, points
    targets: tuple[float, ...]  # per-model accuracy target, points
    accuracy: tuple[float, ...]  # held-out accuracy after merging, points
    stopped: str  # "no candidates" | "budget"
    seconds: float = 0.0
    failed: list[Candidate] = field(default_factory=list)  # rolled back


def merge_candidates(units: Sequence[Sequence[Unit]], exclude: frozenset[Member] = frozenset()) -> list[Candidate]:
    """Every candidate group, most bytes saved first (the greedy order; ties by first position).

    The k-th unit with a signature in each model forms one group, so a model never shares a unit with
    itself and models from different bases that share structure group by position within it.
    """
    groups: dict[tuple[str, int], list[tuple[Member, int]]] = defaultdict(list)
    first_seen: dict[tuple[str, int], int] = {}
    for i, model_units_ in enumerate(units):
        seen: dict[str, int] = defaultdict(int)
        for pos, u in enumerate(model_units_):
            key = (u.signature, seen[u.signature])
            seen[u.signature] += 1
            if (i, u.path) not in exclude:
                groups[key].append(((i, u.path), u.bytes))
                first_seen.setdefault(key, pos)
    out = [(Candidate(key[0], tuple(m for m, _ in members), members[0][1]), first_seen[key])
           for key, members in groups.items() if len(members) > 1]
    return [c for c, _ in sorted(out, key=lambda cp: (-cp[0].bytes_saved, cp[1], cp[0].signature))]


def split_by_distance(candidate: Candidate, units: Sequence[nn.Module]) -> list[Candidate]:
    """Two groups of the members whose weights are closest (2 seeds: the first member and the one
    farthest from it), each kept if it still has two members: models fine-tuned from different
    bases, or drifted apart, fall on different sides and can still merge among themselves."""
    if len(candidate.members) < 4:
        return []
    flat = [_flat(u) for u in units]
    far = max(range(len(flat)), key=lambda k: float((flat[k] - flat[0]).norm()))
    near_first = [float((f - flat[0]).norm()) <= float((f - flat[far]).norm()) for f in flat]
    sides = ([m for m, n in zip(candidate.members, near_first) if n], [m for m, n in zip(candidate.members, near_first)
                                                                     if not n])
    return [Candidate(candidate.signature, tuple(side), candidate.unit_bytes) for side in sides if len(side) > 1]


def presplit(candidate: Candidate, units: Sequence[nn.Module], ratio: float) -> list[Candidate]:
    """`split_by_distance`'s halves straight away when the members form two clusters (mean distance
    across > `ratio` x mean distance within: models fine-tuned from different bases), else the
    candidate itself. Such a group would only be tried, fail and be split anyway, at the cost of a
    whole joint retraining of every model in it."""
    halves = split_by_distance(candidate, units)
    if len(halves) < 2:
        return [candidate]
    flat = {m: _flat(u) for m, u in zip(candidate.members, units)}

    def mean_dist(pairs: list[tuple[Member, Member]]) -> float:
        return sum(float((flat[a] - flat[b]).norm()) for a, b in pairs) / max(1, len(pairs))

    within = [(a, b) for h in halves for k, a in enumerate(h.members) for b in h.members[k + 1:]]
    across = [(a, b) for a in halves[0].members for b in halves[1].members]
    return halves if mean_dist(across) > ratio * mean_dist(within) else [candidate]


def get_unit(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def set_unit(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def _flat(unit: nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().float().flatten() for t in unit.state_dict().values()])


def tie(models: Sequence[nn.Module], candidate: Candidate, init: Init = "medoid",
        frames: Sequence[int] | None = None) -> nn.Module:
    """Point every member at one member's module: afterwards they are one set of tensors.

    The module kept is the medoid's (least summed weight distance to the others): the starting point
    that the other models need to move least from, so joint retraining has the least to repair. With
    `init="mean"` its floating-point tensors (weights, BatchNorm statistics) then take the members'
    average: models fine-tuned from one base stay in one basin, where the average serves all of them
    better than any one member does (weight averaging, "model soups"); integer counters stay the medoid's.
    With `init="most_data"` the member whose model has the most training frames (`frames`, per model
    index) is kept as it is: its weights saw the most of the world, the others adapt to them.
    """
    units = [get_unit(models[i], p) for i, p in candidate.members]
    if init == "most_data":
        if frames is None:
            raise ValueError('init="most_data" needs the training frames per model')
        shared = units[max(range(len(units)), key=lambda k: frames[candidate.members[k][0]])]
    else:
        flat = [_flat(u) for u in units]
        shared = units[min(range(len(flat)), key=lambda k: sum(float((flat[k] - f).norm()) for f in flat))]
    if init == "mean":
        states = [u.state_dict() for u in units]
        mean = {k: torch.stack([st[k] for st in states]).mean(0) for k, t in shared.state_dict().items()
                if t.is_floating_point()}
        with torch.no_grad():
            for k, t in shared.state_dict().items():
                if k in mean:
                    t.copy_(mean[k])
    for i, path in candidate.members:
        set_unit(models[i], path, shared)
    return shared


def give_own_copy(models: Sequence[nn.Module], members: Sequence[Member]) -> None:
    """Replace each member's (shared) unit by its own copy of the current weights."""
    for i, path in members:
        set_unit(models[i], path, copy.deepcopy(get_unit(models[i], path)))


def sharing_closure(groups: Sequence[Candidate], start: set[int]) -> list[int]:
    """Models that share a unit, directly or through others, with any of `start`: retraining one of
    them changes weights the others use, so they are retrained and checked together."""
    closure = set(start)
    changed = True
    while changed:
        changed = False
        for g in groups:
            ids = {i for i, _ in g.members}
            if ids & closure and not ids <= closure:
                closure |= ids
                changed = True
    return sorted(closure)


def retry_subsets(candidate: Candidate, step: MergeStep, units: Sequence[nn.Module]) -> list[Candidate]:
    """What to try after `candidate` failed in `step` (Gemel's incremental choice of who shares).

    The members whose models missed their target are taken out and the rest tried again (the
    others met theirs with the group, so without the misfits they most likely still do); the
    misfits may still share among themselves. When none of the members missed (a model that only
    shares other units with them did) or too few would be left, the group is split by weight
    distance (`split_by_distance`) instead.
    """
    missed = {i for i, a, t in zip(step.models, step.accuracy, step.targets) if a < t}
    fits = tuple(m for m in candidate.members if m[0] not in missed)
    misfits = tuple(m for m in candidate.members if m[0] in missed)
    if len(fits) < 2 or not misfits:
        return split_by_distance(candidate, units)
    return [Candidate(candidate.signature, side, candidate.unit_bytes) for side in (fits, misfits) if len(side) > 1]


def stalled(shortfalls: Sequence[float], patience: int | None) -> bool:
    """Whether the last `patience` epochs brought the models no closer to their targets (summed
    points missing after each check, epoch 0 first): more epochs are then unlikely to help and the
    step is given up early (Gemel's early stop of hopeless merges). `None`: never."""
    if patience is None or len(shortfalls) <= patience:
        return False
    return min(shortfalls[-patience:]) >= min(shortfalls[:-patience])


def segment_index(model: AppModel, path: str) -> int:
    """Position in execution order (stem segments, then upper ones) of the segment holding unit `path`."""
    kind, index = path.split(".")[:2]
    return int(index) + (len(model.stem) if kind == "upper" else 0)


class JointMerger:
    """Greedy joint-retraining merge of models fine-tuned from one or more bases sharing structure.

    The engine holds no actor state: an actor (or a benchmark) builds it with the models and their
    data, calls `run()`, and ships `MergeResult.models` to the executors. It works on its own copy
    of the models, so the caller's (serving) models are never half-merged.
    """

    def __init__(self, models: Sequence[AppModel], data: Sequence[ModelData], cfg: MergeConfig | None = None, *,
                 targets: Sequence[float] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if len(models) != len(data):
            raise ValueError(f"{len(models)} models but {len(data)} data sets")
        self.cfg = cfg or MergeConfig()
        self.models = copy.deepcopy(list(models))  # one deepcopy: ties already among them are kept
        self.data = list(data)
        self.clock = clock
        self.baseline = tuple(accuracy_points(m, d.val_x, d.val_y) for m, d in zip(self.models, self.data))
        self.targets = tuple(targets) if targets is not None else tuple(
            b - self.cfg.tolerance_points for b in self.baseline)
        self._generator = torch.Generator().manual_seed(self.cfg.seed)

    def run(self) -> MergeResult:
        started = self.clock()
        units = [model_units(str(i), m) for i, m in enumerate(self.models)]
        frozen = frozenset((i, u.path) for i, us in enumerate(units) for u in us  # e.g. a learner's shared stem
                           if not any(p.requires_grad for p in get_unit(self.models[i], u.path).parameters()))
        candidates = merge_candidates(units, exclude=frozen)
        if self.cfg.presplit_ratio is not None:
            candidates = sorted((h for c in candidates for h in presplit(
                c, self._units(c), self.cfg.presplit_ratio)), key=lambda c: -c.bytes_saved)  # stable: order kept
        if not candidates:
            log.info("no matching layers among %d models: nothing to merge, models left alone", len(self.models))
        groups: list[Candidate] = []
        steps: list[MergeStep] = []
        stopped = "no candidates"
        while candidates:
            candidate = candidates.pop(0)
            if self.clock() - started >= self.cfg.budget_s:
                stopped = "budget"
                break
            step = self._try(candidate, groups, started)
            steps.append(step)
            if step.accepted:
                groups.append(candidate)
            elif step.reason == "budget":
                stopped = "budget"
                break
            else:  # a subset of the group may still find weights that serve it
                retry = retry_subsets(candidate, step, self._units(candidate))
                candidates = sorted([*candidates, *retry], key=lambda c: -c.bytes_saved)  # stable: order kept
        accuracy = tuple(accuracy_points(m, d.val_x, d.val_y) for m, d in zip(self.models, self.data))
        return MergeResult(self.models, groups, steps, self.baseline, self.targets, accuracy, stopped,
                           self.clock() - started, [s.candidate for s in steps if not s.accepted])

    def _units(self, candidate: Candidate) -> list[nn.Module]:
        return [get_unit(self.models[i], p) for i, p in candidate.members]

    def _retrained(self, ids: Sequence[int], tied: Sequence[Candidate]) -> tuple[list[nn.Module], list[ModelData]]:
        """What the step trains and checks: each model from its lowest tied segment up, on the cached
        activation entering it (`cfg.cache_prefix`), or the whole models on their frames."""
        if not self.cfg.cache_prefix:
            return [self.models[i] for i in ids], [self.data[i] for i in ids]
        nets, data = [], []
        for i in ids:
            model, d = self.models[i], self.data[i]
            start = min(segment_index(model, p) for g in tied for j, p in g.members if j == i)
            nets.append(Suffix(model, start))
            data.append(ModelData(prefix_features(model, start, d.train_x), d.train_y,
                                  prefix_features(model, start, d.val_x), d.val_y))
        return nets, data

    def _try(self, candidate: Candidate, groups: Sequence[Candidate], started: float) -> MergeStep:
        """Checkpoint, tie, check, retrain epoch by epoch until every target holds; roll back otherwise."""
        t0 = self.clock()
        ids = sharing_closure([*groups, candidate], {i for i, _ in candidate.members})
        checkpoint = copy.deepcopy([self.models[i] for i in ids])  # one deepcopy keeps ties among them
        tie(self.models, candidate, self.cfg.init, [len(d.train_x) for d in self.data])
        tied = [g for g in (*groups, candidate) if g.members[0][0] in ids]
        shared = list({id(u): u for g in tied for u in self._units(g)}.values())
        nets, data = self._retrained(ids, tied)
        targets = tuple(self.targets[i] for i in ids)
        reason, epochs, shortfalls = "target missed", 0, []
        while True:  # epoch 0 checks the tied weights as they start (the members' mean often serves all)
            reached = tuple(accuracy_points(m, d.val_x, d.val_y) for m, d in zip(nets, data))
            shortfalls.append(sum(max(0.0, t - a) for a, t in zip(reached, targets)))
            if shortfalls[-1] == 0.0:
                reason = "target met"
                break
            if epochs >= self.cfg.max_epochs or stalled(shortfalls, self.cfg.patience):
                break
            if self.clock() - started >= self.cfg.budget_s:
                reason = "budget"
                break
            train_jointly(nets, data, 1, self.cfg, self._generator, tied=shared)
            epochs += 1
        accepted = reason == "target met"
        if not accepted:
            for i, original in zip(ids, checkpoint):
                self.models[i] = original
            worst = min(range(len(ids)), key=lambda k: reached[k] - targets[k])
            log.warning("merge of %s over models %s rolled back (%s) after %d epochs: model %d reached %.1f points "
                        "< target %.1f", candidate.members[0][1], ids, reason, epochs, ids[worst], reached[worst],
                        targets[worst])
        else:
            log.info("merged %s across %d models (saves %d bytes) after %d epochs", candidate.members[0][1],
                     len(candidate.members), candidate.bytes_saved, epochs)
        return MergeStep(candidate, accepted, epochs, tuple(ids), reached, targets, self.clock() - t0, reason)
