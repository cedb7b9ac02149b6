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
