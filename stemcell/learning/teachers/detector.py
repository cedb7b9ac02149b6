"""torchvision detectors as teachers, from a local weights file (nothing is downloaded).

The four builders take `weights=None, weights_backbone=None` (torchvision would otherwise fetch the
ImageNet backbone), then the user's state dict is loaded strictly: a checkpoint of another
architecture fails naming the keys that do not fit, instead of labelling with random layers.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models import detection

from stemcell.learning.teachers.base import ClassObjects, FrameMeta, FrameObjects
from stemcell.learning.teachers.config import DetectorTeacherConfig
from stemcell.models.weights import load_safetensors

log = logging.getLogger(__name__)

_BUILDERS: dict[str, tuple[Callable[..., nn.Module], object]] = {
    "fasterrcnn_mobilenet_v3_large_fpn": (detection.fasterrcnn_mobilenet_v3_large_fpn,
                                          detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1),
    "fasterrcnn_resnet50_fpn_v2": (detection.fasterrcnn_resnet50_fpn_v2, detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1),
    "retinanet_resnet50_fpn_v2": (detection.retinanet_resnet50_fpn_v2, detection.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1),
    "ssdlite320_mobilenet_v3_large": (detection.ssdlite320_mobilenet_v3_large,
                                      detection.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1),
}
_KEYS_SHOWN = 8  # keys named in a mismatch error (a whole list of hundreds helps nobody)


def coco_categories(arch: str) -> list[str]:
    """torchvision's category names for `arch`'s COCO weights (metadata only: no download)."""
    return list(_BUILDERS[arch][1].meta["categories"])  # type: ignore[attr-defined]


def build_detector(arch: str, num_classes: int, min_size: int | None = None) -> nn.Module:
    """`arch` with random weights (the checkpoint is loaded next); `min_size` resizes inputs smaller
    (faster) for the R-CNN and RetinaNet families; SSDlite always runs at 320 px."""
    builder, _ = _BUILDERS[arch]
    extra = {"min_size": min_size, "max_size": max(min_size, 1333 * min_size // 800)} if min_size and not arch.startswith("ssd") else {}
    return builder(weights=None, weights_backbone=None, num_classes=num_classes, **extra)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a torch file read with `weights_only=True` (no pickled
    code); `{"model": ...}` / `{"state_dict": ...}` wrappers of training checkpoints are unwrapped."""
    if not path.is_file():
        raise FileNotFoundError(f"detector weights not found: {path}")
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a corrupt or pickled file
        raise ValueError(f"{path}: not a torch state dict readable with weights_only=True: {exc}") from exc
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: does not hold a state dict (name -> tensor)")
    return state


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    """Load `state` into `model` or raise a ValueError naming the missing, unexpected and
    wrongly shaped keys (a checkpoint of another architecture or category count)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{name} ({len(keys)}): {keys[:_KEYS_SHOWN]}" for name, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes)) if keys]
        raise ValueError(f"{path}: weights do not fit {arch}: " + "; ".join(parts))
    model.load_state_dict(state)


class DetectorTeacher:
    """Boxes of the mapped categories above the score threshold, per app class."""

    def __init__(self, config: DetectorTeacherConfig, device: str = "cpu") -> None:
        self.config = config
        self.categories = config.categories or coco_categories(config.arch)
        unknown = sorted(set(config.class_map) - set(self.categories))
        if unknown:
            raise ValueError(f"class_map names detector categories {unknown} that {config.arch} does not have "
                             f"(its categories: {[c for c in self.categories if c not in ('__background__', 'N/A')]})")
        self.classes = tuple(dict.fromkeys(config.class_map.values()))
        self.device = torch.device(device)
        model = build_detector(config.arch, len(self.categories), config.min_size)
        load_strict(model, read_state_dict(config.weights), config.weights, config.arch)
        self.model = model.to(self.device).eval()
        log.info("teacher %s loaded from %s (%d categories -> %s)", config.arch, config.weights,
                 len(self.categories), list(self.classes))

    @torch.no_grad()
    def label(self, frames: np.ndarray, meta: FrameMeta | None = None) -> list[FrameObjects]:
        out: list[FrameObjects] = []
        for start in range(0, len(frames), self.config.batch_size):
            batch = [torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1).float().div_(255.0).to(self.device)
                     for f in frames[start : start + self.config.batch_size]]
            out.extend(self._objects(d) for d in self.model(batch))
        return out

    def _objects(self, detections: dict[str, torch.Tensor]) -> FrameObjects:
        keep = detections["scores"] >= self.config.score_threshold
        boxes, scores = detections["boxes"][keep].cpu().numpy(), detections["scores"][keep].cpu().numpy()
        labels = detections["labels"][keep].cpu().tolist()
        by_class: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            cls = self.config.class_map.get(self.categories[label]) if label < len(self.categories) else None
            if cls is not None:
                by_class.setdefault(cls, []).append(i)
        return FrameObjects({c: ClassObjects(len(idx), boxes[idx], scores[idx]) for c, idx in by_class.items()})
