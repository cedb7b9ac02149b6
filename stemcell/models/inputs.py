"""Turning decoded frames into model input, identically in training, serving and at the edge."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stemcell.imaging import resize_frames

# ImageNet statistics: user checkpoints from torchvision expect them, and our own bases are trained
# with the same normalisation so both kinds of weights are interchangeable.
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def to_input(
    frames: np.ndarray, size: int | None = None, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> torch.Tensor:
    """uint8 RGB frames (N,H,W,3) or one (H,W,3) -> normalised float32 (N,3,size,size).

    The resize is `stemcell.imaging.resize_frames` (in uint8), the one every path uses, so a frame
    resized where it entered (the ingress, a client) and one resized here give the same input.
    `mean`/`std` default to ImageNet's; a package records its own (the manifest's `normalization`).
    """
    batch = resize_frames(frames, size) if size is not None else frames
    if batch.dtype != np.uint8 or batch.shape[-1] != 3 or batch.ndim not in (3, 4):
        raise ValueError(f"expected uint8 RGB frames (N,H,W,3) or (H,W,3), got {batch.dtype} {batch.shape}")
    batch = batch if batch.ndim == 4 else batch[None]
    # Frames from Ray's object store are read-only; `.float()` copies anyway, so copy only the uint8s.
    batch = np.array(batch) if not batch.flags.writeable else np.ascontiguousarray(batch)
    return normalised(torch.from_numpy(batch).permute(0, 3, 1, 2), None, mean=mean, std=std)


def normalised(
    images: torch.Tensor, size: int | None = None, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> torch.Tensor:
    """uint8 RGB (N,3,H,W) on any device (e.g. decoded on the GPU) -> the model input, on that device.

    A `size` other than the images' own is resized here, on that device, in float (bilinear with
    antialiasing: close to, not exactly, `stemcell.imaging.resize_frames`' area average): the
    GPU-decode path only; every CPU path resizes with `resize_frames` first."""
    x = images.float().div_(255.0)
    if size is not None and x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    m = _MEAN if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    sd = _STD if std is None else torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m.to(x.device)) / sd.to(x.device)
