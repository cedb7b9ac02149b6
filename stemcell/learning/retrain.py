"""The AMS retraining loop for one app (pure torch; the RetrainWorker actor is a shell around it).

Sharing-aware: only the AppModel's trainable part (upper segments + head) is optimised; the stem
is the base's shared modules, frozen and run without autograd, so its weights and its `segment_hash`
never change and it stays shareable across apps and cameras.

Choices, and why:
- The model trains in eval mode: BatchNorm running statistics stay frozen (only affine parameters
  learn). Statistics would otherwise change every BN coordinate on every step, which no γ-sparse
  update can carry, and single-camera mini-batches give noisy statistics anyway.
- The learner is continual: one `ContinualLearner` per app keeps its Adam moments and coordinate-
  descent scores across `retrain` calls (AMS carries m, v from one phase to the next).
- Server == edge, bit for bit: updates carry fp16 values, so the learner rounds its trainable
  weights to fp16 at start and rounds every coordinate it ships. An edge applying the updates then
  holds exactly the weights the server evaluates and keeps training.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch import nn

from stemcell.learning.buffer import SampleBuffer
from stemcell.learning.codec import SparseUpdate, encode, full_update, make_update
from stemcell.learning.coordinate_descent import GradientGuidedAdam, Selection
from stemcell.models import AppModel, to_input

# (model input (N,3,S,S) float32 -- or branchpoint activations with from_features --, targets (N, outputs) in {0,1})
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True, eq=False)
class RetrainResult:
    """One model update: the new weights and exactly what crosses the network."""

    version: int  # model version after this update
    base_version: int  # version the update applies to
    new_state: dict[str, torch.Tensor]  # trainable parameters after training (copies)
    update: SparseUpdate  # the decoded form of `update_bytes`
    update_bytes: bytes  # encoded update (what the downlink carries)
    mask_fraction: float  # fraction of trainable coordinates sent
    loss_before: float  # mean BCE on the evaluation batches before training
    loss_after: float  # same batches, after training


class ContinualLearner:
    """Holds one app model + its coordinate-descent Adam; each `retrain` call is one model update.

    `gamma=None` (or 1.0) is plain Adam on every trainable coordinate: the full-model baseline.
    """

    def __init__(
        self,
        model: AppModel,
        *,
        lr: float = 1e-3,
        gamma: float | None = 0.05,
        phase_steps: int = 20,
        selection: Selection = "cumulative",
        seed: int = 0,
        eval_batches: int = 4,
        from_features: bool = False,
    ) -> None:
        self.model = model.eval()
        # Where training runs: the model's device (the RetrainWorker moves it to its GPU when it has one).
        # Batches come from host memory and are moved here; everything that leaves the learner
        # (states, masks, updates) is on the CPU, so codecs, checkpoints and edges never see CUDA tensors.
        self.device = next(model.parameters()).device
        # True: batches carry activations at the branchpoint (e.g. cached from the stem tree, which
        # computes them for inference anyway), so the frozen stem is not run again for training.
        self.from_features = from_features
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not self.named:
            raise ValueError("the app model has no trainable parameters (branchpoint at the very top?)")
        self.eval_batches = eval_batches
        self.optimizer = GradientGuidedAdam(
            [p for _, p in self.named],
            gamma=1.0 if gamma is None else gamma,
            phase_steps=phase_steps,
            lr=lr,
            generator=torch.Generator().manual_seed(seed),
            selection=selection,
        )
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.version = 0
        with torch.no_grad():
            for _, p in self.named:
                p.copy_(p.half().to(p.dtype))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Copies of the trainable parameters, in the order every update lists them."""
        return {n: p.detach().to("cpu", copy=True) for n, p in self.named}

    def full_update(self) -> SparseUpdate:
        """The whole trainable state at the current version (new edge, or one too far behind)."""
        return full_update(self.trainable_state(), version=self.version)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if not self.from_features:
            with torch.no_grad():
                x = self.model.stem_features(x)
        return self.loss_fn(self.model.upper_forward(x), y)

    @torch.no_grad()
    def evaluate_loss(self, batches: Sequence[Batch]) -> float:
        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        return float(self._loss(x, y))

    def retrain(self, batches: Iterable[Batch], iterations: int = 20) -> RetrainResult:
        """Run `iterations` (K) optimiser steps, one per batch, then emit the update to ship."""
        taken = list(islice(iter(batches), iterations))
        if len(taken) < iterations:
            raise ValueError(f"need {iterations} batches, got {len(taken)}")
        held_out = taken[: self.eval_batches]
        self.model.eval()  # frozen BN statistics, whatever the caller did to the module since
        loss_before = self.evaluate_loss(held_out)
        old_state = self.trainable_state()
        for x, y in taken:
            self.optimizer.zero_grad()
            self._loss(x, y).backward()
            self.optimizer.step()
        masks = [m.cpu() for m in self.optimizer.take_applied_mask()]
        with torch.no_grad():
            for (_, p), m in zip(self.named, masks):
                p.copy_(torch.where(m.to(p.device), p.half().to(p.dtype), p))
        new_state = self.trainable_state()
        update = make_update(
            old_state, new_state, version=self.version + 1, base_version=self.version,
            mask={n: m for (n, _), m in zip(self.named, masks)},
        )
        self.version += 1
        return RetrainResult(
            version=self.version,
            base_version=self.version - 1,
            new_state=new_state,
            update=update,
            update_bytes=encode(update),
            mask_fraction=update.mask_fraction,
            loss_before=loss_before,
            loss_after=self.evaluate_loss(held_out),
        )

    def state_dict(self) -> dict[str, Any]:
        """Model version, trainable weights and optimiser state: enough to resume after a restart."""
        return {"version": self.version, "weights": self.trainable_state(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for n, p in self.named:
                p.copy_(state["weights"][n])
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = int(state["version"])


def retrain(
    app_model: AppModel,
    batches: Iterable[Batch],
    *,
    iterations: int = 20,
    lr: float = 1e-3,
    gamma: float | None = 0.05,
    seed: int = 0,
) -> RetrainResult:
    """One-shot retraining (a fresh learner); keep a `ContinualLearner` to carry Adam state over."""
    learner = ContinualLearner(app_model, lr=lr, gamma=gamma, phase_steps=iterations, seed=seed)
    return learner.retrain(batches, iterations)


def buffer_batches(
    buffer: SampleBuffer,
    *,
    count: int,
    batch_size: int,
    rng: np.random.Generator,
    targets: Sequence[int],
    input_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    before_s: float | None = None,
) -> list[Batch]:
    """`count` uniform mini-batches from `buffer` (items older than `before_s` when given), keeping
    label columns `targets` (the app's classes)."""
    out = []
    for _ in range(count):
        frames, labels = buffer.sample(batch_size, rng, before_s)
        out.append((to_input(frames, input_size, mean=mean, std=std), torch.from_numpy(labels[:, list(targets)].copy())))
    return out
