"""Incremental re-merging: keep a merge alive while continual learning updates its models.

An update (AMS, RECL, live learning) to a model that takes part in a merge must not silently change
weights other models use, so it trains with every shared unit frozen (their weights and BatchNorm
statistics): only the model's own layers adapt. When drift makes a model fall below its target on
fresh labelled samples anyway, only the merges it takes part in are undone (each member gets its own
copy of the shared weights back, free to adapt on its next update): the rest of the merge stays,
nothing restarts from scratch.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from stemcell.models import AppModel
from stemcell.sharing.joint_merge import (
    Candidate,
    MergeConfig,
    MergeResult,
    ModelData,
    accuracy_points,
    get_unit,
    give_own_copy,
    train_jointly,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemergeCounts:
    """What the plan view shows about a live merge."""

    groups: int  # merges currently in force
    updates: int  # model updates trained with shared units frozen
    checks: int  # fresh-sample checks run
    undone: int  # merges undone (for the members that fell below target)


@dataclass
class LiveMerge:
    """A merge in service: the models, its accepted groups and the per-model targets (points)."""

    models: list[AppModel]
    groups: list[Candidate]
    targets: tuple[float, ...]
    cfg: MergeConfig = field(default_factory=MergeConfig)
    updates: int = 0
    checks: int = 0
    undone: list[Candidate] = field(default_factory=list)

    @classmethod
    def from_result(cls, result: MergeResult, cfg: MergeConfig | None = None) -> LiveMerge:
        return cls(result.models, list(result.groups), result.targets, cfg or MergeConfig())

    def shared_units(self, model: int) -> list[nn.Module]:
        """The units of `model` that other models also use (frozen during its updates)."""
        return [get_unit(self.models[model], path) for g in self.groups for i, path in g.members if i == model]

    def update(self, model: int, data: ModelData, epochs: int = 1, seed: int = 0) -> None:
        """Train `model` on new samples with its shared units frozen: other models are unaffected."""
        train_jointly([self.models[model]], [data], epochs, self.cfg, torch.Generator().manual_seed(seed),
                      frozen=self.shared_units(model))
        self.updates += 1

    def check(self, fresh: Mapping[int, tuple[torch.Tensor, torch.Tensor]]) -> list[Candidate]:
        """Evaluate models on fresh labelled samples; take every below-target model out of its merges.

        The model gets its own copy of each shared unit (the current shared weights, consistent with
        its other layers, free to adapt on its next update); the other members keep sharing, and a
        group left with one member is dissolved. Returns the merges touched by this check.
        """
        self.checks += 1
        below = {}
        for i, (x, y) in fresh.items():
            acc = accuracy_points(self.models[i], x, y)
            if acc < self.targets[i]:
                below[i] = acc
        touched = [g for g in self.groups if any(i in below for i, _ in g.members)]
        for g in touched:
            out = [(i, path) for i, path in g.members if i in below]
            give_own_copy(self.models, out)
            kept = tuple(m for m in g.members if m not in out)
            self.groups[self.groups.index(g)] = replace(g, members=kept)
            self.undone.append(g)
            log.warning("merge of %s undone for models %s, below target on fresh samples (%s); %d models keep it",
                        g.members[0][1], [i for i, _ in out],
                        ", ".join(f"{i}: {below[i]:.1f} < {self.targets[i]:.1f}" for i, _ in out),
                        len(kept) if len(kept) > 1 else 0)
        self.groups = [g for g in self.groups if len(g.members) > 1]
        for i in below.keys() - {i for g in touched for i, _ in g.members}:
            log.info("model %d below target on fresh samples (%.1f < %.1f) but shares nothing", i, below[i],
                     self.targets[i])
        return touched

    def counts(self) -> RemergeCounts:
        return RemergeCounts(len(self.groups), self.updates, self.checks, len(self.undone))

