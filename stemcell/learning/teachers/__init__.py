"""Teachers you plug in: one registry from a validated config (`kind:`) to a `Teacher`.

Every kind answers `label(frames, meta) -> list[FrameObjects]` (per frame and class: count, boxes,
scores). Kinds: `torchvision_detector`, `opencv_hog_people`, `python` (a user's `module:factory`),
`model` (a package's model or a pretrained base) and `oracle` (the synthetic world's ground truth).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stemcell.learning.teachers.base import ClassObjects
from stemcell.learning.teachers.base import FrameMeta
from stemcell.learning.teachers.base import FrameObjects
from stemcell.learning.teachers.base import Teacher
from stemcell.learning.teachers.base import counts
from stemcell.learning.teachers.base import presence
from stemcell.learning.teachers.config import DETECTOR_ARCHS
from stemcell.learning.teachers.config import DetectorTeacherConfig
from stemcell.learning.teachers.config import HogPeopleTeacherConfig
from stemcell.learning.teachers.config import ModelTeacherConfig
from stemcell.learning.teachers.config import OracleTeacherConfig
from stemcell.learning.teachers.config import PythonTeacherConfig
from stemcell.learning.teachers.config import TeacherConfig
from stemcell.learning.teachers.config import TeacherFile
from stemcell.learning.teachers.config import resolve_paths
from stemcell.learning.teachers.model import ModelTeacher
from stemcell.learning.teachers.model import OracleTeacher


def _detector(config: DetectorTeacherConfig, device: str) -> Teacher:
    from stemcell.learning.teachers.detector import DetectorTeacher

    return DetectorTeacher(config, device)


def _hog(config: HogPeopleTeacherConfig, device: str) -> Teacher:
    from stemcell.learning.teachers.hog import HogPeopleTeacher

    return HogPeopleTeacher(config)


def _python(config: PythonTeacherConfig, device: str) -> Teacher:
    from stemcell.learning.teachers.plugin import PluginTeacher

    return PluginTeacher(config)


def _model(config: ModelTeacherConfig, device: str) -> Teacher:
    from stemcell.models import build_base, load_safetensors
    from stemcell.package import load_package

    if config.weights is not None:
        model = build_base(str(config.base), num_classes=len(config.classes))
        model.load_state_dict(load_safetensors(config.weights))
        size = config.input_size
    elif config.package_dir is not None:
        package = load_package(config.package_dir)
        model, size = package.base, config.input_size or package.manifest.base.input_size
    else:
        raise ValueError("a model teacher needs package_dir, or base + weights")
    return ModelTeacher(model, classes=config.classes, thresholds=config.thresholds, input_size=size, device=device)


def _oracle(config: OracleTeacherConfig, device: str) -> Teacher:
    from stemcell.world import World

    return OracleTeacher(World(config.world_config))


# Builders import their kind's dependencies on use: a HOG run does not load torchvision's detectors.
TEACHERS: dict[str, Callable[[Any, str], Teacher]] = {
    "torchvision_detector": _detector,
    "opencv_hog_people": _hog,
    "python": _python,
    "model": _model,
    "oracle": _oracle,
}


def build_teacher(config: TeacherConfig, device: str = "cpu") -> Teacher:
    """The teacher `config.kind` names, on `device` where it runs a network."""
    return TEACHERS[config.kind](config, device)


__all__ = [
    "DETECTOR_ARCHS",
    "TEACHERS",
    "ClassObjects",
    "DetectorTeacherConfig",
    "FrameMeta",
    "FrameObjects",
    "HogPeopleTeacherConfig",
    "ModelTeacher",
    "ModelTeacherConfig",
    "OracleTeacher",
    "OracleTeacherConfig",
    "PythonTeacherConfig",
    "Teacher",
    "TeacherConfig",
    "TeacherFile",
    "build_teacher",
    "counts",
    "presence",
    "resolve_paths",
]
