"""Training and evaluating detect apps: CenterNet targets and loss, fine-tuning above a branchpoint,
held-out mAP (pycocotools) and count-event F1 (what the planner ranks candidates by)."""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from stemcell.eval.detection_map import coco_map
from stemcell.models import SegmentedNet, make_task_model, to_input
from stemcell.models.app_model import AppModel
from stemcell.models.detection import DETECT_SCORE_THRESHOLD, Detections, decode
from stemcell.training.candidate import CandidateResult, CandidateSpec
from stemcell.training.data import LabelledFrames
from stemcell.training.loop import batched, fit, training_device
from stemcell.training.metrics import binary_metrics

EVAL_SCORE = 0.01  # keep low-confidence boxes for mAP (the whole precision-recall curve)


def detect_targets(boxes: Sequence[np.ndarray], class_indices: Sequence[int], map_size: tuple[int, int]) -> torch.Tensor:
    """(N, K + 5, H, W) training targets: K Gaussian class heatmaps (1 at each object's centre cell),
    the centre's offset in its cell (x, y), log box size in cells (w, h), and the centre-cell mask.

    `boxes[i]`: (M, 5) data class column, normalised x0, y0, x1, y1; classes the app does not watch
    are ignored. The Gaussian's spread follows the box (a sixth of its size, CenterNet's rule of thumb).
    """
    h, w = map_size
    k = len(class_indices)
    channel = {c: j for j, c in enumerate(class_indices)}
    out = np.zeros((len(boxes), k + 5, h, w), np.float32)
    ys, xs = np.mgrid[0:h, 0:w]
    for i, frame_boxes in enumerate(boxes):
        for cls, x0, y0, x1, y1 in np.asarray(frame_boxes, np.float64).reshape(-1, 5):
            if int(cls) not in channel:
                continue
            cx, cy, bw, bh = (x0 + x1) / 2 * w, (y0 + y1) / 2 * h, (x1 - x0) * w, (y1 - y0) * h
            col, row = min(int(cx), w - 1), min(int(cy), h - 1)
            sx, sy = max(bw / 6, 0.3), max(bh / 6, 0.3)
            blob = np.exp(-((xs - col) ** 2 / (2 * sx**2) + (ys - row) ** 2 / (2 * sy**2)))
            out[i, channel[int(cls)]] = np.maximum(out[i, channel[int(cls)]], blob)
            out[i, k : k + 5, row, col] = (cx - col, cy - row, math.log(max(bw, 1e-3)), math.log(max(bh, 1e-3)), 1.0)
    return torch.from_numpy(out)


class CenterNetLoss(nn.Module):
    """Penalty-reduced focal loss on the heatmaps + L1 on offsets and log sizes at object centres."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.k = num_classes

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k = self.k
        pred = torch.sigmoid(output[:, :k]).clamp(1e-4, 1 - 1e-4)
        heat = target[:, :k]
        centre = (heat >= 1.0).float()
        pos = torch.log(pred) * (1 - pred) ** 2 * centre
        neg = torch.log(1 - pred) * pred**2 * (1 - heat) ** 4 * (1 - centre)
        focal = -(pos.sum() + neg.sum()) / centre.sum().clamp(min=1.0)
        mask = target[:, k + 4 : k + 5]
        cells = (2 * mask.sum()).clamp(min=1.0)
        offset = (torch.abs(torch.sigmoid(output[:, k : k + 2]) - target[:, k : k + 2]) * mask).sum() / cells
        size = (torch.abs(output[:, k + 2 : k + 4] - target[:, k + 2 : k + 4]) * mask).sum() / cells
        return focal + offset + size


def predicted_boxes(model: AppModel, frames: np.ndarray, spec: CandidateSpec, score_threshold: float) -> list[np.ndarray]:
    """(P, 6) class channel, x0, y0, x1, y1, score per frame, in model-input pixels."""
    device = next(model.parameters()).device
    output = batched(model, to_input(frames, spec.input_size, mean=spec.mean, std=spec.std).to(device)).cpu()
    size = (spec.input_size, spec.input_size)
    return detection_rows(decode(output, len(spec.class_indices), [size] * len(output), score_threshold=score_threshold))


def detection_rows(found: Sequence[Detections]) -> list[np.ndarray]:
    """Decoded detections as `coco_map`'s predictions: (P, 6) class channel, x0, y0, x1, y1, score per frame."""
    return [torch.cat([d.classes[:, None].float(), d.boxes, d.scores[:, None]], dim=1).cpu().numpy() for d in found]


def pixel_boxes(boxes: Sequence[np.ndarray], class_indices: Sequence[int], size: tuple[int, int]) -> list[np.ndarray]:
    """Normalised (M, 5) data class column, x0, y0, x1, y1 per frame -> `coco_map`'s truth: (M, 5) head
    channel, x0, y0, x1, y1 in pixels of `size` (height, width); classes the app does not watch dropped."""
    channel = {c: j for j, c in enumerate(class_indices)}
    scale = np.array([size[1], size[0], size[1], size[0]], np.float64)
    out = []
    for frame_boxes in boxes:
        mine = [b for b in np.asarray(frame_boxes).reshape(-1, 5) if int(b[0]) in channel]
        out.append(np.array([[channel[int(b[0])], *(b[1:] * scale)] for b in mine], np.float64).reshape(-1, 5))
    return out


def boxes_of(data: LabelledFrames, spec: CandidateSpec) -> tuple[np.ndarray, ...]:
    """The frames' boxes; data without boxes is an error naming the app (M-Trainer checks it earlier,
    naming the data source)."""
    if data.boxes is None:
        raise ValueError(f"detect app {spec.app!r} needs boxes; the data has only per-frame counts")
    return data.boxes


def truth_boxes(data: LabelledFrames, spec: CandidateSpec) -> list[np.ndarray]:
    """(M, 5) head channel, x0, y0, x1, y1 per frame in model-input pixels (the app's classes only)."""
    return pixel_boxes(boxes_of(data, spec), spec.class_indices, (spec.input_size, spec.input_size))


def finetune_detector(base: SegmentedNet, spec: CandidateSpec, train: LabelledFrames, val: LabelledFrames) -> CandidateResult:
    """Train segments [b, S) + a CenterNet head from boxes; held-out mAP, count MAE and count-event metrics."""
    started = time.perf_counter()
    device = training_device()
    torch.manual_seed(spec.seed)
    train_boxes = boxes_of(train, spec)
    model = make_task_model(base.to(device), spec.branchpoint, "detect", len(spec.class_indices)).to(device)
    x_train = batched(model.stem_features, to_input(train.frames, spec.input_size, mean=spec.mean, std=spec.std).to(device))
    with torch.no_grad():
        map_size = tuple(model.upper_forward(x_train[:1]).shape[-2:])
    targets = detect_targets(train_boxes, spec.class_indices, map_size).to(device)  # type: ignore[arg-type]
    model.train()
    fit(model.upper_forward, model.trainable_parameters(), x_train, targets, CenterNetLoss(len(spec.class_indices)),
        epochs=spec.epochs, lr=spec.lr, batch_size=spec.batch_size, seed=spec.seed)
    model.eval()
    predicted = predicted_boxes(model, val.frames, spec, EVAL_SCORE)
    size = (spec.input_size, spec.input_size)
    scores = coco_map(truth_boxes(val, spec), predicted, len(spec.class_indices), size)
    counts = np.array([int((p[:, 5] >= DETECT_SCORE_THRESHOLD).sum()) for p in predicted], np.int64)
    truth = spec.truth(val)
    return CandidateResult(
        spec=spec,
        trainable_state={k: v.detach().cpu().clone() for k, v in model.trainable_state_dict().items()},
        trainable_params=sum(p.numel() for p in model.trainable_parameters()),
        metrics=binary_metrics(counts >= spec.min_count, truth >= spec.min_count),
        train_seconds=time.perf_counter() - started,
        count_mae=float(np.mean(np.abs(counts - truth))) if len(truth) else None,
        map50=None if scores is None else scores.map50,
        map50_95=None if scores is None else scores.map50_95,
    )
