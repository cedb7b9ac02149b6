"""`stemcell pretrain`: train a base on the synthetic world (or a local image folder, loaded by
`stemcell.data`), since no pretrained weights can be downloaded."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from stemcell.models import SegmentedNet, build_base, to_input
from stemcell.training.data import LabelledFrames
from stemcell.training.loop import fit_bce, training_device

log = logging.getLogger(__name__)


def pretrain_base(
    name: str,
    data: LabelledFrames,
    *,
    input_size: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int = 0,
    torchvision_weights: str | Path | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> SegmentedNet:
    """Train every segment + the multi-label head of base `name` on `data` (class presence), on the
    training device (the GPU when there is one); the returned base is on the CPU, ready to save."""
    num_classes = data.presence.shape[1]
    device = training_device()
    base = build_base(name, num_classes=num_classes, seed=seed, torchvision_weights=torchvision_weights).to(device)
    x = to_input(data.frames, input_size, mean=mean, std=std).to(device)
    y = torch.from_numpy(data.presence.astype(np.float32)).to(device)
    log.info("pretraining %s on %s", name, device)
    torch.manual_seed(seed)
    base.train()

    def report(epoch: int, loss: float) -> None:
        log.info("pretrain %s epoch %d/%d loss %.4f", name, epoch, epochs, loss)

    fit_bce(base, base.parameters(), x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=report)
    return base.cpu().eval()
