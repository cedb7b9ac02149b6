"""What every teacher returns: per frame and class, how many objects, their boxes and scores.

One type for all kinds (a detector, OpenCV's HOG, a user's plug-in, a presence model, the world's
ground truth), so `stemcell label`, the learning loop and the tests read teachers identically.
Presence-only teachers (a classifier, the oracle's presence) report `count` without boxes.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True, eq=False)
class ClassObjects:
    """The objects of one class in one frame."""

    count: int  # objects of the class (>= len(boxes): a presence-only teacher gives 1 and no boxes)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # (K, 4) x0,y0,x1,y1 px
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (K,) confidence per box

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
        if self.count < len(boxes):
            raise ValueError(f"count {self.count} is below the {len(boxes)} boxes given")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)


@dataclass(frozen=True, eq=False)
class FrameObjects:
    """A teacher's answer for one frame: class name -> its objects; absent classes have none."""

    objects: Mapping[str, ClassObjects] = field(default_factory=dict)

    def count(self, cls: str) -> int:
        found = self.objects.get(cls)
        return found.count if found is not None else 0


@dataclass(frozen=True, eq=False)
class FrameMeta:
    """Where frames came from: needed by the oracle, ignored by teachers that read pixels."""

    camera: int  # camera id in the world
    indices: np.ndarray  # int (N,) frame index of each frame in the camera's timeline


class Teacher(Protocol):
    """Labels a batch of uint8 RGB frames (N, H, W, 3): one `FrameObjects` per frame."""

    classes: tuple[str, ...]  # the class names it can report

    def label(self, frames: np.ndarray, meta: FrameMeta | None = None) -> list[FrameObjects]: ...


def presence(labels: Sequence[FrameObjects], classes: Sequence[str], min_count: int = 1) -> np.ndarray:
    """float32 (N, len(classes)) in {0, 1}: count >= min_count, the learning loop's target."""
    return np.array([[frame.count(c) >= min_count for c in classes] for frame in labels],
                    dtype=np.float32).reshape(len(labels), len(classes))


def counts(labels: Sequence[FrameObjects], classes: Sequence[str]) -> np.ndarray:
    """int64 (N, len(classes)) object counts."""
    return np.array([[frame.count(c) for c in classes] for frame in labels],
                    dtype=np.int64).reshape(len(labels), len(classes))


def check_labels(labels: object, num_frames: int, source: str) -> list[FrameObjects]:
    """`labels` as a teacher must return them for `num_frames` frames, or a ValueError naming `source`
    and what is wrong (a plug-in's output is checked here before anything uses it)."""
    if not isinstance(labels, (list, tuple)):
        raise ValueError(f"{source}: label() must return a list of FrameObjects, got {type(labels).__name__}")
    if len(labels) != num_frames:
        raise ValueError(f"{source}: label() returned {len(labels)} results for {num_frames} frames")
    for i, frame in enumerate(labels):
        if not isinstance(frame, FrameObjects):
            raise ValueError(f"{source}: label() result {i} is a {type(frame).__name__}, not a FrameObjects "
                             f"(from stemcell.learning.teachers)")
        for cls, found in frame.objects.items():
            if not isinstance(cls, str) or not isinstance(found, ClassObjects):
                raise ValueError(f"{source}: label() result {i} maps {cls!r} to a {type(found).__name__}; "
                                 f"expected class name -> ClassObjects")
    return list(labels)
