"""What an app's head output means: presence (a logit), a count (a log-rate) or boxes (a detect map),
served and scored alike.

A `count` app's head predicts log(λ), the expected number of objects of its class(es) (trained with
a Poisson likelihood). Served: `count` = round(λ); the event is on while count >= min_count; `score`
is P(N >= min_count) under Poisson(λ), a probability like a presence app's sigmoid. A `detect` app's
head output is decoded into boxes (`stemcell.models.detection`); its count is the number of boxes,
optionally only those whose bottom-centre lies in one of the app's zones on that camera.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stemcell.models.detection import decode
from stemcell.models.zones import Polygon, in_zones

_MAX_LOG_RATE = 20.0  # exp(20) ~ 5e8 objects: far past any frame; keeps exp finite


@dataclass(frozen=True)
class AppReading:
    score: float  # presence: sigmoid(logit); count: P(count >= min_count)
    label: bool  # the app's answer for this frame (the event condition)
    count: int | None  # objects counted (count and detect apps)
    boxes: tuple[dict[str, object], ...] | None = None  # detect apps: [{x0, y0, x1, y1, score, class}], frame pixels
    counts: dict[str, int] | None = None  # detect apps: objects per class (in the zones, when it has zones)


def counts_from_output(output: np.ndarray) -> np.ndarray:
    """int (N,) rounded expected counts from log-rate outputs."""
    return np.rint(np.exp(np.minimum(np.asarray(output, np.float64), _MAX_LOG_RATE))).astype(np.int64)


def events_from_output(task: str, min_count: int, output: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """bool (N,) the event condition per frame from the head outputs (vectorised, for evaluation)."""
    output = np.asarray(output, np.float64)
    if task == "count":
        return counts_from_output(output) >= min_count
    return 1.0 / (1.0 + np.exp(-output)) >= threshold


def read_app(task: str, min_count: int, output: float, threshold: float = 0.5) -> AppReading:
    """One frame's served answer from the app head's single output."""
    if task == "count":
        rate = math.exp(min(float(output), _MAX_LOG_RATE))
        count = int(round(rate))
        below = sum(math.exp(-rate) * rate**k / math.factorial(k) for k in range(min_count))
        return AppReading(score=min(1.0, max(0.0, 1.0 - below)), label=count >= min_count, count=count)
    score = 1.0 / (1.0 + math.exp(-float(output))) if output > -700 else 0.0
    return AppReading(score=score, label=score >= threshold, count=None)


def read_detections(
    output: torch.Tensor, classes: Sequence[str], min_count: int, frame_size: tuple[int, int],
    zones: Sequence[Polygon] = (),
) -> AppReading:
    """One frame's detect-app answer from its head map (K+4, H, W); `frame_size` is (height, width).

    Every box is served; with `zones`, `count`, `counts` and the event use only the boxes whose
    bottom-centre lies in a zone (where a person stands, not where their head is in the picture).
    """
    found = decode(output[None], len(classes), [frame_size])[0]
    boxes = tuple(found.as_dicts(classes))
    counted = found if not zones else found.subset(in_zones(found.boxes, zones))
    counts = counted.counts(classes)
    count = sum(counts.values())
    score = float(counted.scores.max()) if len(counted.scores) else 0.0
    return AppReading(score=score, label=count >= min_count, count=count, boxes=boxes, counts=counts)


def read_output(
    task: str, min_count: int, classes: Sequence[str], output: torch.Tensor, frame_size: tuple[int, int],
    zones: Sequence[Polygon] = (), threshold: float = 0.5,
) -> AppReading:
    """One frame's answer of any app from its head output: a detect map, or one number."""
    if task == "detect":
        return read_detections(output, classes, min_count, frame_size, zones)
    return read_app(task, min_count, float(output[0]), threshold)


def sent_size(request: Any, input_size: int) -> tuple[int, int]:
    """(height, width) of an inference request's frames as the camera sent them (detect apps' boxes
    are served in these pixels): its `frame_size` when the frames were resized or turned into model
    input (N, 3, S, S) on the way, else the frames' own size."""
    if request.frame_size is not None or isinstance(request.frames, torch.Tensor):
        return request.frame_size or (input_size, input_size)
    return (int(request.frames.shape[-3]), int(request.frames.shape[-2]))
