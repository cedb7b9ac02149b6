"""What M-Trainer trains (one app above one branchpoint) and what it gets back."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stemcell.config import IMAGENET_MEAN, IMAGENET_STD
from stemcell.training.data import LabelledFrames
from stemcell.training.metrics import BinaryMetrics


@dataclass(frozen=True)
class CandidateSpec:
    app: str  # app name (the candidate belongs to this app's model set)
    class_indices: tuple[int, ...]  # the classes the app watches (an object of any of them counts)
    branchpoint: int  # number of frozen, shared base segments (0..S)
    epochs: int  # passes over the training frames
    lr: float  # Adam learning rate for the layers above the branchpoint
    batch_size: int  # mini-batch size
    input_size: int  # square model input resolution
    seed: int = 0  # makes the fine-tune reproducible
    task: str = "presence"  # "presence" (logit head, BCE), "count" (log-rate head, Poisson) or "detect" (boxes)
    min_count: int = 1  # the event condition: count >= min_count
    mean: tuple[float, float, float] = IMAGENET_MEAN  # input normalisation (the manifest's)
    std: tuple[float, float, float] = IMAGENET_STD

    def truth(self, data: LabelledFrames) -> np.ndarray:
        """int (N,) objects of the app's classes per frame."""
        return data.object_counts()[:, list(self.class_indices)].sum(axis=1)


@dataclass(frozen=True)
class CandidateResult:
    spec: CandidateSpec  # what was trained
    trainable_state: dict[str, torch.Tensor]  # upper segments + head only (the stem is the base's)
    trainable_params: int  # parameter count of the app-specific part
    metrics: BinaryMetrics  # held-out frame-level metrics of the event condition
    train_seconds: float  # wall time of feature extraction + training
    count_mae: float | None = None  # count and detect apps: held-out mean absolute count error
    map50: float | None = None  # detect apps: held-out COCO mAP@0.5
    map50_95: float | None = None  # detect apps: held-out COCO mAP@[.5:.95]
