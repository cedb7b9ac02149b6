"""Detect apps: a light anchor-free (CenterNet-style) head and its decoding into boxes.

Why CenterNet rather than FCOS: the head reads one feature map (the app's last map, computed from
the shared stem's activation at the branchpoint), not a feature pyramid. FCOS's strength is
assigning objects to pyramid levels and it needs a centre-ness branch and per-location NMS to be
clean; CenterNet is one small conv body and one 1x1 conv: a class heatmap (one channel per class),
a sub-cell centre offset and a box size per cell, decoded by peak picking (3x3 max-pool). That keeps
a detect app's own part almost as cheap as a classifier head, which is what lets many apps share a
stem. NMS (torchvision.ops.batched_nms) still runs after peak picking to drop the duplicate peaks
two neighbouring cells give one large object on a coarse map.

The head's output is one tensor (N, K + 4, H, W): K heatmap logits, then offset x/y logits, then
log box width/height in map cells. Boxes are decoded in normalised [0, 1] frame coordinates (the
model input is the whole frame resized to a square, so normalised coordinates are the same in the
input and in the frame) and scaled to each frame's own pixel size.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

DETECT_SCORE_THRESHOLD = 0.3  # a peak below this is not an object (served boxes and counts)
NMS_IOU = 0.5  # same-class boxes overlapping more than this are one object
MAX_DETECTIONS = 100  # peaks kept per frame before NMS
_PRIOR = 0.05  # initial heatmap probability: a near-empty map from the start keeps early training stable
_MAX_LOG_SIZE = 6.0  # exp(6) ~ 400 cells: far past any map; keeps exp finite


class DetectHead(nn.Module):
    """3x3 conv + ReLU + 1x1 conv to K class heatmaps, 2 offsets and 2 log sizes per cell.

    `upsample` doubles the map first: the base's last map is coarse (stride 16 or 32), and a finer
    grid separates neighbouring objects for the price of the head's one conv on a 4x larger map.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 64, upsample: int = 2) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError("a detect head needs at least one class")
        self.num_classes = num_classes
        self.upsample = upsample
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(width, num_classes + 4, 1)
        with torch.no_grad():
            self.out.bias.zero_()
            self.out.bias[:num_classes].fill_(float(torch.logit(torch.tensor(_PRIOR))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")
        return self.out(self.body(x))


@dataclass(frozen=True)
class Detections:
    """One frame's objects: boxes in that frame's pixels, best first."""

    boxes: torch.Tensor  # float (M, 4) x0, y0, x1, y1
    scores: torch.Tensor  # float (M,)
    classes: torch.Tensor  # int64 (M,) index into the app's classes

    def subset(self, keep: torch.Tensor) -> Detections:
        """The detections where `keep` (bool (M,)) is true."""
        keep = keep.to(self.boxes.device)
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep])

    def as_dicts(self, class_names: Sequence[str]) -> list[dict[str, object]]:
        """The served form: `[{x0, y0, x1, y1, score, class}]` (class by name)."""
        return [
            {"x0": round(b[0], 1), "y0": round(b[1], 1), "x1": round(b[2], 1), "y1": round(b[3], 1),
             "score": round(s, 4), "class": class_names[c]}
            for b, s, c in zip(self.boxes.tolist(), self.scores.tolist(), self.classes.tolist())
        ]

    def counts(self, class_names: Sequence[str]) -> dict[str, int]:
        """Objects per class (every class of the app, zeros included)."""
        found = torch.bincount(self.classes, minlength=len(class_names)).tolist()
        return dict(zip(class_names, found))


def normalised_boxes(output: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Head output (N, K+4, H, W) -> (heat (N, K, H, W) in [0, 1], boxes (N, 4, H, W) normalised x0 y0 x1 y1).

    Every cell's box is its centre (cell + sigmoid offset) +- half its size (exp(log size) cells).
    """
    if output.ndim != 4 or output.shape[1] != num_classes + 4:
        raise ValueError(f"expected a detect head output (N, {num_classes + 4}, H, W), got {tuple(output.shape)}")
    _, _, h, w = output.shape
    heat = torch.sigmoid(output[:, :num_classes])
    offset = torch.sigmoid(output[:, num_classes : num_classes + 2])
    size = torch.exp(output[:, num_classes + 2 :].clamp(max=_MAX_LOG_SIZE))
    ys, xs = torch.meshgrid(torch.arange(h, device=output.device), torch.arange(w, device=output.device), indexing="ij")
    cx = (xs + offset[:, 0]) / w
    cy = (ys + offset[:, 1]) / h
    half_w, half_h = size[:, 0] / (2 * w), size[:, 1] / (2 * h)
    return heat, torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1)


def to_frame_pixels(boxes: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Normalised (M, 4) boxes -> pixels of each box's frame ((M, 2) height, width), clipped to it."""
    scale = sizes.to(boxes)[:, [1, 0, 1, 0]]
    return torch.minimum((boxes * scale).clamp(min=0), scale)


def decode(
    output: torch.Tensor,
    num_classes: int,
    frame_sizes: Sequence[tuple[int, int]],
    *,
    score_threshold: float = DETECT_SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU,
    max_detections: int = MAX_DETECTIONS,
) -> list[Detections]:
    """Peaks of each class heatmap (3x3 local maxima) above `score_threshold`, NMS per frame and
    class, and boxes scaled to each frame's own (height, width). One NMS call serves the whole batch
    (frame and class form the group), so many apps on many frames cost a few kernel calls."""
    if len(frame_sizes) != len(output):
        raise ValueError(f"{len(frame_sizes)} frame sizes for {len(output)} outputs")
    heat, boxes = normalised_boxes(output.float(), num_classes)
    n, k, h, w = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    scores, flat = peaks.reshape(n, -1).topk(min(max_detections, k * h * w), dim=1)
    frame, rank = torch.nonzero(scores >= score_threshold, as_tuple=True)  # one NMS call for the whole batch
    cls, cell = flat[frame, rank] // (h * w), flat[frame, rank] % (h * w)
    sizes = torch.tensor([list(hw) for hw in frame_sizes], dtype=boxes.dtype, device=boxes.device).reshape(-1, 2)
    picked = to_frame_pixels(boxes.reshape(n, 4, -1)[frame, :, cell], sizes[frame])
    confidence = scores[frame, rank]
    kept = batched_nms(picked, confidence, frame * k + cls, iou_threshold)  # same frame and class only; best first
    kept = kept[torch.argsort(frame[kept], stable=True)]  # grouped by frame, still best first within each
    per_frame = torch.bincount(frame[kept], minlength=n).tolist()
    parts = (picked[kept].split(per_frame), confidence[kept].split(per_frame), cls[kept].split(per_frame))
    return [Detections(b, c, k_) for b, c, k_ in zip(*parts)]


def presence_logits(model: nn.Module, output: torch.Tensor) -> torch.Tensor:
    """A model's output read as per-class presence logits (N, outputs): unchanged for one-output heads;
    for a detect head, each class's best heatmap cell against `DETECT_SCORE_THRESHOLD` (> 0 exactly when
    decoding serves at least one box of the class: peak picking and NMS always keep the best peak).

    Why: live agreement, drift and the zoo's safety checker score every app by "is the event on?"
    against the teacher; a detect app's event is its count >= 1, known here without decoding boxes."""
    head = getattr(model, "head", None)
    if not isinstance(head, DetectHead):
        return output
    best = output[:, : head.num_classes].amax(dim=(2, 3))
    return best - torch.logit(torch.tensor(DETECT_SCORE_THRESHOLD, dtype=best.dtype, device=best.device))


def model_task(model: nn.Module) -> str:
    """The task an app model serves, read from its head: "detect" or "presence" (a one-output head)."""
    return "detect" if isinstance(getattr(model, "head", None), DetectHead) else "presence"
