"""M-Trainer's unit of work: fine-tune one app above one branchpoint and evaluate it."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from stemcell.models import SegmentedNet, make_app_model, to_input
from stemcell.training.data import LabelledFrames
from stemcell.training.loop import batched, fit_bce, training_device
from stemcell.training.metrics import BinaryMetrics, binary_metrics


@dataclass(frozen=True)
class CandidateSpec:
    app: str  # app name (the candidate belongs to this app's model set)
    class_index: int  # which class's presence the binary app detects
    branchpoint: int  # number of frozen, shared base segments (0..S)
    epochs: int  # passes over the training frames
    lr: float  # Adam learning rate for the layers above the branchpoint
    batch_size: int  # mini-batch size
    input_size: int  # square model input resolution
    seed: int = 0  # makes the fine-tune reproducible


@dataclass(frozen=True)
class CandidateResult:
    spec: CandidateSpec  # what was trained
    trainable_state: dict[str, torch.Tensor]  # upper segments + head only (the stem is the base's)
    trainable_params: int  # parameter count of the app-specific part
    metrics: BinaryMetrics  # held-out frame-level metrics at threshold 0.5
    train_seconds: float  # wall time of feature extraction + training


def finetune_candidate(base: SegmentedNet, spec: CandidateSpec, train: LabelledFrames, val: LabelledFrames) -> CandidateResult:
    """Train segments [b, S) + a new head for one binary app; the stem is frozen and shared.

    The stem's activation at the branchpoint is computed once (the stem is frozen and in eval mode,
    so it is a fixed function), which makes deep branchpoints almost free to train, as on a GPU.
    """
    started = time.perf_counter()
    device = training_device()
    torch.manual_seed(spec.seed)
    model = make_app_model(base.to(device), spec.branchpoint, num_outputs=1).to(device)
    x_train = batched(model.stem_features, to_input(train.frames, spec.input_size).to(device))
    y_train = torch.from_numpy(train.presence[:, spec.class_index : spec.class_index + 1].astype(np.float32)).to(device)
    model.train()
    fit_bce(
        model.upper_forward,
        model.trainable_parameters(),
        x_train,
        y_train,
        epochs=spec.epochs,
        lr=spec.lr,
        batch_size=spec.batch_size,
        seed=spec.seed,
    )
    model.eval()
    logits = batched(model, to_input(val.frames, spec.input_size).to(device)).cpu()
    metrics = binary_metrics(logits[:, 0].numpy() > 0, val.presence[:, spec.class_index])
    return CandidateResult(
        spec=spec,
        trainable_state={k: v.detach().cpu().clone() for k, v in model.trainable_state_dict().items()},
        trainable_params=sum(p.numel() for p in model.trainable_parameters()),
        metrics=metrics,
        train_seconds=time.perf_counter() - started,
    )
