"""`stemcell pretrain`: train a base on the synthetic world (or a local image folder), since no
pretrained weights can be downloaded."""
from __future__ import annotations

import logging
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
) -> SegmentedNet:
    """Train every segment + the multi-label head of base `name` on `data` (class presence), on the
    training device (the GPU when there is one); the returned base is on the CPU, ready to save."""
    num_classes = data.presence.shape[1]
    device = training_device()
    base = build_base(name, num_classes=num_classes, seed=seed, torchvision_weights=torchvision_weights).to(device)
    x = to_input(data.frames, input_size).to(device)
    y = torch.from_numpy(data.presence.astype(np.float32)).to(device)
    log.info("pretraining %s on %s", name, device)
    torch.manual_seed(seed)
    base.train()

    def report(epoch: int, loss: float) -> None:
        log.info("pretrain %s epoch %d/%d loss %.4f", name, epoch, epochs, loss)

    fit_bce(base, base.parameters(), x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=report)
    return base.cpu().eval()


def image_folder_frames(root: str | Path, size: int) -> LabelledFrames:
    """Load a user's local ImageFolder tree (one sub-folder per class) as one-hot labelled frames."""
    import cv2

    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root}: expected one sub-folder per class, found none")
    frames, labels = [], []
    for c, cls in enumerate(classes):
        for path in sorted((root / cls).iterdir()):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                log.warning("skipping unreadable image %s", path)
                continue
            frames.append(cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (size, size)))
            onehot = np.zeros(len(classes), dtype=bool)
            onehot[c] = True
            labels.append(onehot)
    if not frames:
        raise ValueError(f"{root}: no readable images")
    n = len(frames)
    return LabelledFrames(np.stack(frames), np.stack(labels), np.zeros(n, int), np.arange(n))
