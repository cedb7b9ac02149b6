"""Teachers: the oracle returns the world's ground truth; a model teacher thresholds its scores."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from stemcell.learning.teacher import FrameMeta, ModelTeacher, OracleTeacher
from stemcell.world import CLASSES, World, WorldConfig


def _world() -> World:
    return World(WorldConfig(seed=3, num_cameras=2, duration_s=20.0, height=32, width=32))


def test_oracle_returns_ground_truth_presence_per_camera_and_frame() -> None:
    world = _world()
    teacher = OracleTeacher(world)
    for camera in (0, 1):
        timeline = world.camera(camera)
        indices = np.array([0, 17, 55, 199])
        labels = teacher.label(timeline.frames(indices), FrameMeta(camera, indices))
        assert labels.dtype == np.float32 and labels.shape == (4, len(CLASSES))
        for row, index in zip(labels, indices):
            assert np.array_equal(row.astype(bool), timeline.labels(int(index)).presence)
    with pytest.raises(ValueError):
        teacher.label(np.zeros((2, 32, 32, 3), np.uint8), FrameMeta(0, np.array([1])))
    with pytest.raises(ValueError, match="out of range"):
        teacher.label(np.zeros((1, 32, 32, 3), np.uint8), FrameMeta(0, np.array([10_000])))


class _MeanColour(nn.Module):
    """Fixed logits: channel means of the normalised input (so the expected labels are known)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def test_model_teacher_thresholds_sigmoid_scores_per_class() -> None:
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    frames[0, ..., 0] = 255  # red: channel-0 logit high
    frames[1, ..., 2] = 255  # blue
    teacher = ModelTeacher(_MeanColour(), thresholds=[0.5, 0.5, 0.9], batch_size=2)
    scores = teacher.scores(frames)
    labels = teacher.label(frames, FrameMeta(0, np.arange(3)))
    assert scores.shape == labels.shape == (3, 3)
    assert np.array_equal(labels, (scores >= np.array([0.5, 0.5, 0.9])).astype(np.float32))
    assert labels[0, 0] == 1.0 and labels[2].sum() == 0.0
    assert scores[1, 2] > 0.9 and labels[1, 2] == 1.0
