"""Plug-in teachers for `kind: python` tests, named `tests.helpers.teachers:<factory>`."""
from __future__ import annotations

import numpy as np

from stemcell.learning.teachers import ClassObjects, FrameObjects


class BrightCounter:
    """Counts `cls` objects as the frame's mean brightness in tenths (a known answer per frame)."""

    def __init__(self, cls: str = "blob") -> None:
        self.cls = cls

    def label(self, frames: list[np.ndarray]) -> list[FrameObjects]:
        return [FrameObjects({self.cls: ClassObjects(int(f.mean() // 25.5))}) for f in frames]


def bright_counter(cls: str = "blob") -> BrightCounter:
    return BrightCounter(cls)


class _Wrong:
    def __init__(self, answer: object) -> None:
        self.answer = answer

    def label(self, frames: list[np.ndarray]) -> object:
        return self.answer


def returns_dicts() -> _Wrong:
    return _Wrong([{"blob": 1}])


def returns_too_few() -> _Wrong:
    return _Wrong([])


def no_label_method() -> object:
    return object()


class SquareBoxer:
    """Boxes each bright blob (the squares of `tests.helpers.builders.square_frames`) as a `cls` object:
    a teacher with boxes, in the pixels of the frames it is shown."""

    def __init__(self, cls: str = "car", threshold: int = 200) -> None:
        self.cls, self.threshold = cls, threshold

    def label(self, frames: list[np.ndarray]) -> list[FrameObjects]:
        import cv2

        out = []
        for frame in frames:
            mask = (np.asarray(frame).mean(axis=2) > self.threshold).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, area in stats[1:n] if area >= 4], np.float32)
            out.append(FrameObjects({self.cls: ClassObjects(len(boxes), boxes.reshape(-1, 4), np.ones(len(boxes)))}))
        return out


def square_boxer(cls: str = "car") -> SquareBoxer:
    return SquareBoxer(cls)
