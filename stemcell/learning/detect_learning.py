"""AMS continual learning for detect apps: retraining the CenterNet head (and the segments above the
branchpoint) from the teacher's boxes, with the same sparse, gradient-guided updates as classifiers.

A `DetectJob` is an `AppJob` whose batches are CenterNet targets built from buffered teacher boxes
(`stemcell.learning.detect_labels`) and whose loss is `CenterNetLoss`; everything else (the
`ContinualLearner`'s coordinate-descent Adam above the branchpoint, the fp16 sparse updates, the
versions the executor hot-swaps, checkpoints) is the classifier path unchanged.

The safety check (and the recent gains the Planner's slicing reads) scores a detect model by
mAP@0.5 on the held-out teacher-labelled samples, through pycocotools
(`stemcell.eval.detection_map`), ties broken by the lower CenterNet loss. Why mAP and not count
agreement: a head that counts right but boxes the wrong place scores well on counts and serves wrong
boxes (zones, crops and the drawn boxes all read the place); mAP@0.5 rewards a box only where the
teacher's is, and ranks by score, so a head that is surer of the right boxes wins. The cost is noise
on the few held-out samples, which the loss tie-break absorbs when both models score the same.

Samples without teacher boxes (a presence-only teacher) are usable only where the teacher saw none
of the app's classes (no objects is a complete answer); the rest are left out of detect training.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from stemcell.eval.detection_map import coco_map
from stemcell.learning.ams import AmsConfig, AppJob
from stemcell.learning.buffer import BufferItem, SampleBuffer
from stemcell.learning.published import Published
from stemcell.learning.retrain import Batch
from stemcell.models import AppModel, to_input
from stemcell.models.detection import decode
from stemcell.training.detect_train import EVAL_SCORE, CenterNetLoss, detect_targets, detection_rows, pixel_boxes

log = logging.getLogger(__name__)

DETECT = "detect"


def detect_spec(branchpoint: int, columns: Sequence[int]) -> dict[str, Any]:
    """A detect job's spec: its cut and the label columns of its classes (head channel order)."""
    return {"branchpoint": int(branchpoint), "task": DETECT, "columns": [int(c) for c in columns]}


def make_job(camera: str, app: str, model: AppModel, target: int, config: AmsConfig,
             spec: dict[str, Any] | None = None) -> AppJob:
    """`AmsTrainer`'s job factory: a `DetectJob` for a detect spec, the presence `AppJob` otherwise."""
    kind = DetectJob if (spec or {}).get("task") == DETECT else AppJob
    return kind(camera, app, model, target, config, spec)


class DetectJob(AppJob):
    """One detect app on one camera; `target` is its first class's label column (live agreement,
    drift and the zoo read the app as "is one of its objects there?")."""

    def __init__(self, camera: str, app: str, model: AppModel, target: int, config: AmsConfig,
                 spec: dict[str, Any] | None = None) -> None:
        super().__init__(camera, app, model, target, config, spec)
        self.columns = [int(c) for c in self.spec["columns"]]
        self.learner.loss_fn = CenterNetLoss(len(self.columns))

    def usable(self, items: Sequence[BufferItem], before_s: float | None = None) -> list[BufferItem]:
        """Samples with boxes, or without any of the app's classes (older than `before_s` when given)."""
        return [it for it in items if (before_s is None or it.t_s < before_s)
                and (it.boxes is not None or not it.labels[self.columns].any())]

    def _inputs(self, items: Sequence[BufferItem]) -> torch.Tensor:
        return to_input(np.stack([it.frame for it in items]), self.config.input_size, mean=self.config.mean,
                        std=self.config.std)

    @staticmethod
    def _boxes(items: Sequence[BufferItem]) -> list[np.ndarray]:
        return [np.zeros((0, 5), np.float32) if it.boxes is None else it.boxes for it in items]

    def _targets(self, items: Sequence[BufferItem], map_size: tuple[int, int]) -> torch.Tensor:
        return detect_targets(self._boxes(items), self.columns, map_size)

    @torch.no_grad()
    def _output(self, x: torch.Tensor) -> torch.Tensor:
        self.learner.model.eval()
        return self.learner.model(x.to(self.learner.device)).float().cpu()

    def _batches(self, buffer: SampleBuffer, before_s: float | None) -> list[Batch]:
        """K uniform mini-batches of usable samples (older than the held-out ones; all of them when
        every usable sample is held out) with their CenterNet targets on the head's map."""
        pool = self.usable(buffer.items(), before_s) or self.usable(buffer.items())
        size, out = self.config.batch_size, []
        map_size: tuple[int, int] | None = None
        for _ in range(self.config.iterations):
            picked = [pool[i] for i in self.rng.choice(len(pool), size=size, replace=size > len(pool))]
            x = self._inputs(picked)
            map_size = map_size or tuple(self._output(x[:1]).shape[-2:])  # type: ignore[assignment]
            out.append((x, self._targets(picked, map_size)))  # type: ignore[arg-type]
        return out

    def _score(self, items: list[BufferItem]) -> tuple[float, float] | None:
        """(mAP@0.5, CenterNet loss) of the deployed model on the usable samples (None: none); mAP
        counts as 0 on samples where the teacher saw nothing (it is undefined there)."""
        found = self.usable(items)
        if not found:
            return None
        x = self._inputs(found)
        output = self._output(x)
        loss = float(self.learner.loss_fn(output, self._targets(found, tuple(output.shape[-2:]))))
        size = (int(x.shape[-2]), int(x.shape[-1]))
        k = len(self.columns)
        predicted = detection_rows(decode(output, k, [size] * len(found), score_threshold=EVAL_SCORE))
        truth = pixel_boxes(self._boxes(found), self.columns, size)
        scores = coco_map(truth, predicted, k, size)
        return (0.0 if scores is None else scores.map50), loss

    def evaluate(self, items: list[BufferItem]) -> tuple[float, float] | None:
        """(mAP@0.5, CenterNet loss) of the model serving now on teacher-labelled samples (None: none
        usable): what tests and benchmarks measure a camera's detect app by."""
        return self._score(items)

    def retrain(self, buffer: SampleBuffer) -> Published:
        """A phase as for classifiers; with no usable sample (the teacher boxes nothing) nothing is
        trained and the phase is reported as kept back."""
        if self.usable(buffer.items()):
            return super().retrain(buffer)
        log.warning("camera %s detect app %s: no teacher boxes buffered; nothing to retrain on", self.camera, self.app)
        self.last_trained_s = buffer.latest_s
        return Published(self.camera, self.app, self.version, float(buffer.latest_s or 0.0), 0, 0.0, 0.0, 0.0,
                         None, None, 0.0, 0.0, kept_back=True)
