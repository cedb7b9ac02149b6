"""TeacherLabeler: labels the frames edges sample (AMS's knowledge-distillation target), on its own
GPU share. A thin shell over `stemcell.learning.teachers`: any kind of its registry (a torchvision
detector, OpenCV's HOG people detector, a user's `module:factory`, a package's model, or the
synthetic world's ground truth for experiments that must not confound learning with teacher errors).

Create with `.options(num_gpus=share, num_cpus=...)`; on CUDA the share is also enforced as a
memory fraction (Ray's fractional GPUs are bookkeeping only). `label` is pure in its inputs, so
Ray's at-least-once retries are harmless.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import ray
import torch

from actors.gpu_share import enforce_share
from stemcell.control.contracts import TeacherReady, TeacherStats
from stemcell.learning.detect_labels import TeacherLabels, teacher_labels
from stemcell.learning.teachers import FrameMeta, OracleTeacherConfig, TeacherConfig, build_teacher, presence

log = logging.getLogger(__name__)


@ray.remote
class TeacherLabeler:
    def __init__(self, *, teacher: TeacherConfig, classes: Sequence[str], share: float = 0.0) -> None:
        """`classes`: the columns `label` answers, in the learners' order (a class the teacher does
        not know is never present)."""
        enforce_share(share)
        self._share, self._kind, self._classes = share, teacher.kind, tuple(classes)
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        self._teacher = build_teacher(teacher, self._device)
        self._world_fps = teacher.world_config.fps if isinstance(teacher, OracleTeacherConfig) else None
        # the oracle's boxes are in the world's pixels whatever size the frames were resized to
        self._world_size = ((teacher.world_config.height, teacher.world_config.width)
                            if isinstance(teacher, OracleTeacherConfig) else None)
        self._frames, self._seconds = 0, 0.0

    def ready(self) -> TeacherReady:
        return TeacherReady(self._kind, self._device, self._share,
                            tuple(c for c in self._classes if c in self._teacher.classes))

    def label(self, frames: np.ndarray, camera: int = 0, timestamps: list[float] | None = None,
              boxes: bool = False) -> np.ndarray | TeacherLabels:
        """float32 (N, len(classes)) presence labels; with `boxes`, also each frame's boxes, normalised
        (`TeacherLabels`: detect apps learn from them). The oracle needs the world camera and the
        frames' timestamps (frame index = round(ts * fps)); other teachers read only pixels."""
        started = time.perf_counter()
        indices = np.zeros(len(frames), dtype=np.int64)
        if self._world_fps is not None:
            if timestamps is None or len(timestamps) != len(frames):
                raise ValueError("the oracle teacher needs one timestamp per frame")
            indices = np.rint(np.asarray(timestamps, dtype=np.float64) * self._world_fps).astype(np.int64)
        objects = self._teacher.label(np.asarray(frames), FrameMeta(camera, indices))
        size = self._world_size or tuple(np.asarray(frames).shape[1:3])
        labels = teacher_labels(objects, self._classes, size) if boxes else presence(objects, self._classes)
        self._frames += len(frames)
        self._seconds += time.perf_counter() - started
        return labels

    def stats(self) -> TeacherStats:
        """Frames labelled and measured labelling seconds (the teacher's share of the GPU budget)."""
        return TeacherStats(self._frames, self._seconds, self._device, self._share)
