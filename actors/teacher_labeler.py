"""TeacherLabeler: labels the frames edges sample (AMS's knowledge-distillation target), on its own
GPU share. A thin shell over `stemcell.learning.teacher`.

Two teachers:
- oracle (`world=`): ground truth of the synthetic world, looked up by (world camera, timestamp),
  for experiments that must not confound the learning loop with teacher errors;
- model (`base=` + `weights=`): a bigger base trained here (`stemcell pretrain --out D` writes
  D/pretrained_base.safetensors) or a local checkpoint of the same registry architecture, loaded
  from safetensors only (no pickle). `package_dir=` uses an M-Package's own base and head.

Create with `.options(num_gpus=share, num_cpus=...)`; on CUDA the share is also enforced as a
memory fraction (Ray's fractional GPUs are bookkeeping only). `label` is pure in its inputs, so
Ray's at-least-once retries are harmless.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import ray
import torch

from actors.gpu_share import enforce_share
from stemcell.learning.teacher import FrameMeta, ModelTeacher, OracleTeacher
from stemcell.models import build_base, load_safetensors
from stemcell.package import load_package
from stemcell.world import World, WorldConfig

log = logging.getLogger(__name__)


def build_teacher(*, world: dict[str, Any] | None = None, base: str | None = None, weights: str | None = None,
                  package_dir: str | None = None, num_classes: int = 5, input_size: int | None = None,
                  thresholds: float | list[float] = 0.5, device: str = "cpu") -> OracleTeacher | ModelTeacher:
    """Exactly one of `world` (oracle), `base`+`weights` (checkpoint) or `package_dir` (package base)."""
    if sum(x is not None for x in (world, weights, package_dir)) != 1:
        raise ValueError("give exactly one teacher source: world=, base= with weights=, or package_dir=")
    if world is not None:
        return OracleTeacher(World(WorldConfig(**world)))
    if package_dir is not None:
        package = load_package(package_dir)
        model, size = package.base, input_size or package.manifest.base.input_size
    else:
        if base is None:
            raise ValueError("weights= needs base= (the registry architecture the checkpoint was trained as)")
        model, size = build_base(base, num_classes=num_classes), input_size
        model.load_state_dict(load_safetensors(weights))
    return ModelTeacher(model, thresholds=thresholds, input_size=size, device=device)


@ray.remote
class TeacherLabeler:
    def __init__(self, *, share: float = 0.0, **teacher: Any) -> None:
        enforce_share(share)
        self._share = share
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        self._teacher = build_teacher(device=self._device, **teacher)
        self._world_fps = teacher["world"].get("fps", WorldConfig().fps) if teacher.get("world") else None
        self._frames, self._seconds = 0, 0.0

    def ready(self) -> dict[str, Any]:
        return {"kind": type(self._teacher).__name__, "device": self._device, "share": self._share}

    def label(self, frames: np.ndarray, camera: int = 0, timestamps: list[float] | None = None) -> np.ndarray:
        """float32 (N, num_classes) presence labels. The oracle needs the world camera and the
        frames' timestamps (frame index = round(ts * fps)); a model teacher reads only pixels."""
        started = time.perf_counter()
        indices = np.zeros(len(frames), dtype=np.int64)
        if self._world_fps is not None:
            if timestamps is None or len(timestamps) != len(frames):
                raise ValueError("the oracle teacher needs one timestamp per frame")
            indices = np.rint(np.asarray(timestamps, dtype=np.float64) * self._world_fps).astype(np.int64)
        labels = self._teacher.label(np.asarray(frames), FrameMeta(camera, indices))
        self._frames += len(frames)
        self._seconds += time.perf_counter() - started
        return labels

    def stats(self) -> dict[str, Any]:
        """Frames labelled and measured labelling seconds (the teacher's share of the GPU budget)."""
        return {"frames": self._frames, "seconds": self._seconds, "device": self._device, "share": self._share}
