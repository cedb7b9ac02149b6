"""Joint retraining for a merge step: only what the step can change is trained, on cached features.

A merge step ties units of several models; retraining must let those models find one set of weights
for the tied units and adapt what lies above them. What lies *below* a model's lowest tied unit is
the model's own and unchanged by the step, so it is frozen and run once: its output on the model's
training and validation frames is cached (`suffix_data`) and every epoch trains only the suffix
from the lowest tied unit up. The greedy order ties the heaviest units first, which in a CNN are
the deepest, so the cached prefix is most of the network's compute and the step costs a fraction of
whole-model retraining.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from stemcell.models import AppModel
from stemcell.training.loop import balanced_pos_weight, batched

Init = Literal["medoid", "mean", "most_data"]  # where a tied unit's weights start (`joint_merge.tie`)


@dataclass(frozen=True)
class ModelData:
    """One model's labelled frames: what its learner buffers or M-Trainer already holds."""

    train_x: torch.Tensor  # model inputs (N, C, H, W), or the cached activation a `Suffix` reads
    train_y: torch.Tensor  # 0/1 float targets (N, outputs)
    val_x: torch.Tensor  # held-out inputs: accuracy targets are checked here
    val_y: torch.Tensor


@dataclass(frozen=True)
class MergeConfig:
    tolerance_points: float = 1.0  # target = unmerged held-out accuracy - this (accuracy in points)
    max_epochs: int = 3  # joint-retraining epochs per merge step (the bound)
    patience: int | None = 2  # give a step up after this many epochs without getting closer to the targets
    lr: float = 1e-3
    tied_lr_scale: float = 0.5  # tied units learn at lr x this: they start from weights that serve everyone
    batch_size: int = 32
    budget_s: float = 600.0  # wall-clock budget of the whole merge
    seed: int = 0
    init: Init = "medoid"  # a tied unit starts from the medoid member, the members' mean or the best-fed member
    presplit_ratio: float | None = None  # split two-cluster groups before trying them (`presplit`); None: never
    batch_stats: bool = False  # BatchNorm on batch statistics while retraining (False: running ones, as served)
    cache_prefix: bool = True  # freeze and cache what lies below each model's lowest tied unit (`Suffix`)


class Suffix(nn.Module):
    """`model` from segment `start` on (stem then upper segments, then the head).

    It holds the model's own module objects, not copies: training it trains the model, and tied
    units stay tied.
    """

    def __init__(self, model: AppModel, start: int) -> None:
        super().__init__()
        self.segments = nn.ModuleList([*model.stem, *model.upper][start:])
        self.head = model.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for segment in self.segments:
            x = segment(x)
        return self.head(x)


@torch.no_grad()
def prefix_features(model: AppModel, start: int, x: torch.Tensor) -> torch.Tensor:
    """The activation entering segment `start` (eval mode: frozen layers use their running statistics)."""
    segments = [*model.stem, *model.upper][:start]
    was_training = model.training
    model.eval()

    def run(chunk: torch.Tensor) -> torch.Tensor:
        for segment in segments:
            chunk = segment(chunk)
        return chunk

    out = batched(run, x)
    model.train(was_training)
    return out


@torch.no_grad()
def accuracy_points(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Held-out frame accuracy in points (logit > 0 means present)."""
    was_training = model.training
    model.eval()
    logits = batched(model, x)
    model.train(was_training)
    return 100.0 * float(((logits > 0).float() == y).float().mean())


def param_groups(models: Iterable[nn.Module], lr: float, tied: Iterable[nn.Module] = (), tied_lr: float | None = None,
                 frozen: Iterable[nn.Module] = ()) -> list[dict[str, object]]:
    """Adam parameter groups: each trainable tensor once (tied tensors are one object), tied units
    at `tied_lr`, `frozen` units left out."""
    frozen_ids = {id(p) for m in frozen for p in m.parameters()}
    tied_ids = {id(p) for m in tied for p in m.parameters()} - frozen_ids
    params = {id(p): p for m in models for p in m.parameters() if p.requires_grad and id(p) not in frozen_ids}
    own = [p for k, p in params.items() if k not in tied_ids]
    shared = [p for k, p in params.items() if k in tied_ids]
    groups: list[dict[str, object]] = [{"params": own, "lr": lr}] if own else []
    if shared:
        groups.append({"params": shared, "lr": lr if tied_lr is None else tied_lr})
    return groups


def interleaved_batches(sizes: Sequence[int], batch_size: int, generator: torch.Generator) -> list[list[torch.Tensor]]:
    """One epoch's mini-batch indices per model, as many steps as the largest data set needs.

    Every step holds one batch of *each* model, so a shared tensor's update always sums every member's
    gradient (one model's data never pulls it alone); a smaller data set wraps around its permutation.
    """
    steps = max(math.ceil(n / batch_size) for n in sizes)
    out = []
    for n in sizes:
        order = torch.randperm(n, generator=generator)
        out.append([order.roll(-((s * batch_size) % n))[:batch_size] for s in range(steps)])
    return out


def set_mode(models: Sequence[nn.Module], frozen: Sequence[nn.Module], batch_stats: bool) -> None:
    """Train mode for `models` (BatchNorm on batch statistics only if `batch_stats`); `frozen` in eval."""
    for m in models:
        m.train()
        if not batch_stats:
            for sub in m.modules():
                if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                    sub.eval()
    for m in frozen:
        m.eval()


def train_jointly(models: Sequence[nn.Module], data: Sequence[ModelData], epochs: int, cfg: MergeConfig,
                  generator: torch.Generator, frozen: Sequence[nn.Module] = (), tied: Sequence[nn.Module] = ()) -> None:
    """`epochs` passes of summed per-model BCE, one Adam over the union of their parameters.

    Shared tensors get the gradient of every model using them (autograd sums them), which is what
    makes one set of weights serve all; `tied` units learn at `cfg.tied_lr_scale` x the rate.
    `frozen` modules keep their weights and BatchNorm statistics. With `cfg.batch_stats` off every
    BatchNorm normalises with its running statistics, as at serving time: a tied BatchNorm would
    otherwise train on one model's batch statistics and serve with a blend of all members'.
    """
    groups = param_groups(models, cfg.lr, tied, cfg.lr * cfg.tied_lr_scale, frozen)
    if not groups:
        return
    frozen_params = [p for m in frozen for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(groups)
    losses = [nn.BCEWithLogitsLoss(pos_weight=balanced_pos_weight(d.train_y)) for d in data]
    set_mode(models, frozen, cfg.batch_stats)
    for p in frozen_params:
        p.requires_grad_(False)
    try:
        for _ in range(epochs):
            batches = interleaved_batches([len(d.train_x) for d in data], cfg.batch_size, generator)
            for step in zip(*batches):
                total = sum(loss_fn(m(d.train_x[idx]), d.train_y[idx])
                            for m, d, idx, loss_fn in zip(models, data, step, losses))
                optimizer.zero_grad(set_to_none=True)
                total.backward()  # type: ignore[union-attr]
                optimizer.step()
    finally:
        for p in frozen_params:
            p.requires_grad_(True)
        for m in models:
            m.eval()
