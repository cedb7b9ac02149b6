"""Teachers without boxes of their own: the world's ground truth and a presence model.

`OracleTeacher` reads the synthetic world's ground truth (experiments that isolate the learning loop
from teacher errors): exact counts and boxes. `ModelTeacher` runs a bigger multi-label network loaded
from local weights (a package's base, or `stemcell pretrain`'s) and reports presence as count 1.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from stemcell.learning.teachers.base import ClassObjects, FrameMeta, FrameObjects
from stemcell.models import to_input
from stemcell.world.datatypes import CLASSES, FrameLabels


class _Timeline(Protocol):
    num_frames: int

    def labels(self, index: int) -> FrameLabels: ...


class _World(Protocol):
    def camera(self, index: int) -> _Timeline: ...


class OracleTeacher:
    """Ground truth from the world for (camera, frame index); the frames are not read."""

    classes: tuple[str, ...] = CLASSES

    def __init__(self, world: _World) -> None:
        self.world = world

    def label(self, frames: np.ndarray, meta: FrameMeta | None = None) -> list[FrameObjects]:
        if meta is None:
            raise ValueError("the oracle teacher needs the world camera and frame index of every frame")
        indices = np.asarray(meta.indices, dtype=np.int64)
        if len(frames) != len(indices):
            raise ValueError(f"{len(frames)} frames but {len(indices)} frame indices")
        timeline = self.world.camera(meta.camera)
        if len(indices) and (indices.min() < 0 or indices.max() >= timeline.num_frames):
            # ValueError: the indices come from clients' timestamps, so this is bad input (a 4xx), not a bug
            raise ValueError(f"frame index out of range for world camera {meta.camera}: its timeline has "
                             f"{timeline.num_frames} frames, asked for {indices.min()}..{indices.max()}")
        return [_objects(timeline.labels(int(i))) for i in indices]


def _objects(truth: FrameLabels) -> FrameObjects:
    """The world's boxes (half-open pixel boxes) grouped by class name, score 1."""
    by_class: dict[str, list[tuple[int, int, int, int]]] = {}
    for box in truth.boxes:
        by_class.setdefault(box.name, []).append((box.x0, box.y0, box.x1, box.y1))
    return FrameObjects({name: ClassObjects(len(boxes), np.array(boxes, np.float32), np.ones(len(boxes), np.float32))
                         for name, boxes in by_class.items()})


class ModelTeacher:
    """A larger multi-label model (e.g. a resnet18 base trained on the world) with per-class thresholds."""

    def __init__(
        self,
        model: nn.Module,
        *,
        classes: Sequence[str] = CLASSES,
        thresholds: float | Sequence[float] = 0.5,
        input_size: int | None = None,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.classes = tuple(classes)
        self.thresholds = torch.as_tensor(thresholds, dtype=torch.float32)
        self.input_size = input_size
        self.batch_size = batch_size
        self.device = torch.device(device)

    @torch.no_grad()
    def scores(self, frames: np.ndarray) -> np.ndarray:
        """Per-class probabilities (sigmoid of the logits), float32 (N, num_classes)."""
        out = []
        for start in range(0, len(frames), self.batch_size):
            x = to_input(frames[start : start + self.batch_size], self.input_size).to(self.device)
            out.append(torch.sigmoid(self.model(x)).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), dtype=np.float32)

    def label(self, frames: np.ndarray, meta: FrameMeta | None = None) -> list[FrameObjects]:
        scores = self.scores(frames)
        if scores.shape[1] != len(self.classes):
            raise ValueError(f"the teacher model has {scores.shape[1]} outputs for {len(self.classes)} classes "
                             f"{list(self.classes)}")
        on = torch.from_numpy(scores) >= self.thresholds
        return [FrameObjects({c: ClassObjects(1) for c, hit in zip(self.classes, row) if hit}) for row in on.tolist()]
