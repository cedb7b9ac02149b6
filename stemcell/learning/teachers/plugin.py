"""`kind: python`: a teacher the user writes, named `module:factory`, checked before it is trusted.

The factory's object only needs `label(frames: list[np.ndarray]) -> list[FrameObjects]`; every
answer is checked (one result per frame, `FrameObjects` values, only the declared classes), so a
wrong plug-in fails with its name and the problem instead of corrupting a labels file.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from stemcell.learning.teachers.base import FrameMeta, FrameObjects, check_labels
from stemcell.learning.teachers.config import PythonTeacherConfig


def load_factory(spec: str) -> Callable[..., Any]:
    """The callable `module:attr` names, or a ValueError saying which part failed."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"teacher factory {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"teacher factory {spec!r}: module {module_name!r} has no callable {attr!r}")
    return factory


class PluginTeacher:
    """Wraps the user's object; its output is checked on every call."""

    def __init__(self, config: PythonTeacherConfig) -> None:
        self.config = config
        self.classes = tuple(config.classes)
        self._impl = load_factory(config.factory)(**config.args)
        if not callable(getattr(self._impl, "label", None)):
            raise ValueError(f"teacher factory {config.factory!r} returned a {type(self._impl).__name__}, "
                             f"which has no label(frames) method")

    def label(self, frames: np.ndarray, meta: FrameMeta | None = None) -> list[FrameObjects]:
        labels = check_labels(self._impl.label(list(frames)), len(frames), f"teacher {self.config.factory!r}")
        extra = sorted({c for frame in labels for c in frame.objects} - set(self.classes))
        if extra:
            raise ValueError(f"teacher {self.config.factory!r} reported classes {extra} not in its classes "
                             f"{list(self.classes)}")
        return labels
