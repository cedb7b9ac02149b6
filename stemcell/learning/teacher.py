"""Teachers: whatever labels the frames the edge samples (AMS's knowledge-distillation target).

Two kinds: `OracleTeacher` reads the synthetic world's ground truth (experiments that isolate the
learning loop from teacher errors), `ModelTeacher` runs a bigger network loaded from local weights
(what a deployment uses). Both return per-class presence labels in {0, 1} as float32, so the
buffer, the φ-score and the loss treat them identically.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from stemcell.models import to_input


@dataclass(frozen=True, eq=False)
class FrameMeta:
    """Where frames came from: needed by the oracle, ignored by model teachers."""

    camera: int  # camera id in the world
    indices: np.ndarray  # int (N,) frame index of each frame in the camera's timeline


class Teacher(Protocol):
    """Labels a batch of frames: uint8 RGB (N,H,W,3) -> float32 (N, num_classes) in {0, 1}."""

    def label(self, frames: np.ndarray, meta: FrameMeta) -> np.ndarray: ...


class _PresenceSource(Protocol):
    def presence(self) -> np.ndarray: ...


class _World(Protocol):
    def camera(self, index: int) -> _PresenceSource: ...


class OracleTeacher:
    """Ground-truth presence from the world for (camera, frame index); the frames are not read."""

    def __init__(self, world: _World) -> None:
        self.world = world
        self._presence: dict[int, np.ndarray] = {}

    def label(self, frames: np.ndarray, meta: FrameMeta) -> np.ndarray:
        indices = np.asarray(meta.indices, dtype=np.int64)
        if len(frames) != len(indices):
            raise ValueError(f"{len(frames)} frames but {len(indices)} frame indices")
        if meta.camera not in self._presence:
            self._presence[meta.camera] = np.asarray(self.world.camera(meta.camera).presence(), dtype=bool)
        presence = self._presence[meta.camera]
        if len(indices) and (indices.min() < 0 or indices.max() >= len(presence)):
            # ValueError: the indices come from clients' timestamps, so this is bad input (a 4xx), not a bug
            raise ValueError(f"frame index out of range for world camera {meta.camera}: its timeline has "
                             f"{len(presence)} frames, asked for {indices.min()}..{indices.max()}")
        return presence[indices].astype(np.float32)


class ModelTeacher:
    """A larger multi-label model (e.g. a resnet18 base trained on the world) with per-class thresholds."""

    def __init__(
        self,
        model: nn.Module,
        *,
        thresholds: float | Sequence[float] = 0.5,
        input_size: int | None = None,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.thresholds = torch.as_tensor(thresholds, dtype=torch.float32, device=device)
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
        return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)

    def label(self, frames: np.ndarray, meta: FrameMeta) -> np.ndarray:
        probs = torch.from_numpy(self.scores(frames))
        return (probs >= self.thresholds.cpu()).float().numpy()
