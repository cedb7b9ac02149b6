"""OpenCV's pretrained HOG people detector as a teacher: real, pretrained, no download.

`cv2.HOGDescriptor` with `getDefaultPeopleDetector()` (Dalal-Triggs, INRIA pedestrians) ships inside
OpenCV; in OpenCV 5 only the contrib wheel has it (hence `opencv-contrib-python-headless`). Its
window is 64x128 px, so small people need the frame scaled up first (`scale`); it costs ~80 ms per
768x576 frame on one core, which is why `stemcell label` has `--every N`.
"""
from __future__ import annotations

import cv2
import numpy as np

from stemcell.learning.teachers.base import ClassObjects, FrameMeta, FrameObjects
from stemcell.learning.teachers.config import HogPeopleTeacherConfig


class HogPeopleTeacher:
    """People boxes (pixel coordinates of the original frame) with their SVM margins as scores."""

    def __init__(self, config: HogPeopleTeacherConfig) -> None:
        if not hasattr(cv2, "HOGDescriptor"):
            raise RuntimeError(f"OpenCV {cv2.__version__} here has no HOGDescriptor: install "
                               "opencv-contrib-python-headless in place of opencv-python-headless")
        self.config = config
        self.classes = (config.class_name,)
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def label(self, frames: np.ndarray, meta: FrameMeta | None = None) -> list[FrameObjects]:
        return [self._one(np.ascontiguousarray(frame)) for frame in frames]

    def _one(self, frame: np.ndarray) -> FrameObjects:
        c = self.config
        image = frame if c.scale == 1.0 else cv2.resize(frame, None, fx=c.scale, fy=c.scale, interpolation=cv2.INTER_LINEAR)
        rects, weights = self._hog.detectMultiScale(image, hitThreshold=c.score_threshold,
                                                    winStride=(c.win_stride, c.win_stride), scale=c.pyramid_scale)
        if len(rects) == 0:
            return FrameObjects()
        rects = np.asarray(rects, np.float32).reshape(-1, 4) / c.scale
        height, width = frame.shape[:2]
        boxes = np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]], axis=1)
        boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
        scores = np.asarray(weights, np.float32).reshape(-1)
        return FrameObjects({c.class_name: ClassObjects(len(boxes), boxes, scores)})
