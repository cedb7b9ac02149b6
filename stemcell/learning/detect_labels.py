"""Teacher boxes on their way to detect apps' retraining: what the TeacherLabeler answers when asked
for boxes, and how its boxes are normalised.

Why normalised boxes (fractions of the frame): live samples reach the teacher at model size, uploads
at whatever size the edge sent, and the synthetic world's oracle reports boxes in the world's own
pixels whatever frames it is shown; fractions of the frame are the same in all of them and are what
the CenterNet targets (`stemcell.training.detect_train.detect_targets`) are built from.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stemcell.learning.teachers import FrameObjects, presence


@dataclass(frozen=True, eq=False)
class TeacherLabels:
    """The teacher's answer for a batch: presence per label column, and per frame its boxes
    (float32 (M, 5): label column, normalised x0, y0, x1, y1) or None where the teacher gave no boxes."""

    presence: np.ndarray  # float32 (N, C) in {0, 1}
    boxes: tuple[np.ndarray | None, ...]

    def __post_init__(self) -> None:
        if len(self.boxes) != len(self.presence):
            raise ValueError(f"{len(self.boxes)} box lists for {len(self.presence)} labelled frames")


def frame_boxes(objects: FrameObjects, classes: Sequence[str], size: tuple[int, int]) -> np.ndarray | None:
    """One frame's boxes of `classes` (label column = index in `classes`), normalised by `size`
    (height, width) and clipped to the frame; boxes left empty by the clip are dropped. None when the
    teacher counted objects of a class without boxing each (a presence-only teacher): "no boxes" would
    then read as "no objects" and teach the head to miss them."""
    height, width = size
    rows = []
    for column, cls in enumerate(classes):
        found = objects.objects.get(cls)
        if found is None:
            continue
        if found.count != len(found.boxes):
            return None
        scaled = np.clip(found.boxes / np.array([width, height, width, height], np.float32), 0.0, 1.0)
        rows += [[column, *box] for box in scaled if box[2] > box[0] and box[3] > box[1]]
    return np.array(rows, np.float32).reshape(-1, 5)


def teacher_labels(objects: Sequence[FrameObjects], classes: Sequence[str], size: tuple[int, int]) -> TeacherLabels:
    """Presence and normalised boxes of a batch whose boxes are in pixels of a (height, width) frame."""
    return TeacherLabels(presence(objects, classes), tuple(frame_boxes(o, classes, size) for o in objects))


def split_labels(labels: np.ndarray | TeacherLabels) -> tuple[np.ndarray, tuple[np.ndarray | None, ...] | None]:
    """(presence (N, C), boxes per frame or None): a worker takes plain presence arrays (an edge's own
    labels, a presence teacher) and `TeacherLabels` alike."""
    if isinstance(labels, TeacherLabels):
        return labels.presence, labels.boxes
    return np.asarray(labels), None
