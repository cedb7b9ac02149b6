"""Teachers of every kind through the one registry: what they return, and their clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from stemcell.learning.teachers import (
    ClassObjects,
    DetectorTeacherConfig,
    FrameMeta,
    FrameObjects,
    ModelTeacher,
    ModelTeacherConfig,
    OracleTeacher,
    OracleTeacherConfig,
    PythonTeacherConfig,
    build_teacher,
    counts,
    presence,
)
from stemcell.world import CLASSES, World, WorldConfig


def _world() -> World:
    return World(WorldConfig(seed=3, num_cameras=2, duration_s=20.0, height=32, width=32))


def test_oracle_returns_ground_truth_counts_boxes_and_presence() -> None:
    world = _world()
    teacher = OracleTeacher(world)
    for camera in (0, 1):
        timeline = world.camera(camera)
        indices = np.array([0, 17, 55, 199])
        labels = teacher.label(timeline.frames(indices), FrameMeta(camera, indices))
        assert np.array_equal(presence(labels, CLASSES), timeline.presence()[indices].astype(np.float32))
        for frame, index in zip(labels, indices):
            truth = timeline.labels(int(index))
            for cls in CLASSES:
                boxes = [(b.x0, b.y0, b.x1, b.y1) for b in truth.boxes if b.name == cls]
                assert frame.count(cls) == len(boxes)
                if boxes:
                    assert sorted(map(tuple, frame.objects[cls].boxes.tolist())) == sorted(boxes)
    with pytest.raises(ValueError):
        teacher.label(np.zeros((2, 32, 32, 3), np.uint8), FrameMeta(0, np.array([1])))
    with pytest.raises(ValueError, match="out of range"):
        teacher.label(np.zeros((1, 32, 32, 3), np.uint8), FrameMeta(0, np.array([10_000])))


def test_oracle_through_the_registry_matches_the_world() -> None:
    config = OracleTeacherConfig(kind="oracle", world={"seed": 3, "num_cameras": 2, "duration_s": 20.0,
                                                       "height": 32, "width": 32}, cameras={"door": 1})
    teacher, world = build_teacher(config), _world()
    idx = np.arange(0, 200, 7)
    labels = teacher.label(world.camera(1).frames(idx), FrameMeta(1, idx))
    assert np.array_equal(presence(labels, CLASSES) > 0, world.camera(1).presence()[idx])


class _MeanColour(nn.Module):
    """Fixed logits: channel means of the normalised input (so the expected labels are known)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def test_model_teacher_thresholds_sigmoid_scores_per_class() -> None:
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    frames[0, ..., 0] = 255  # red: channel-0 logit high
    frames[1, ..., 2] = 255  # blue
    teacher = ModelTeacher(_MeanColour(), classes=("r", "g", "b"), thresholds=[0.5, 0.5, 0.9], batch_size=2)
    scores = teacher.scores(frames)
    labels = presence(teacher.label(frames), teacher.classes)
    assert scores.shape == labels.shape == (3, 3)
    assert np.array_equal(labels, (scores >= np.array([0.5, 0.5, 0.9])).astype(np.float32))
    assert labels[0, 0] == 1.0 and labels[2].sum() == 0.0
    assert scores[1, 2] > 0.9 and labels[1, 2] == 1.0
    with pytest.raises(ValueError, match="3 outputs for 2 classes"):
        ModelTeacher(_MeanColour(), classes=("r", "g")).label(frames)


def test_model_teacher_from_a_pretrained_base_file(tmp_path: Path) -> None:
    """`kind: model` with base + weights: the safetensors file is what labels (its sigmoid scores)."""
    from stemcell.models import build_base, save_safetensors, to_input

    base = build_base("tiny_cnn", num_classes=len(CLASSES), seed=7).eval()
    save_safetensors(base.state_dict(), tmp_path / "teacher.safetensors")
    teacher = build_teacher(ModelTeacherConfig(kind="model", base="tiny_cnn", weights=tmp_path / "teacher.safetensors",
                                               input_size=32, thresholds=0.5))
    frames = _world().camera(0).frames([0, 40, 80, 120])
    with torch.no_grad():
        expected = torch.sigmoid(base(to_input(frames, 32))).numpy() >= 0.5
    assert np.array_equal(presence(teacher.label(frames), CLASSES), expected.astype(np.float32))


def test_frame_objects_counts_and_checks() -> None:
    frames = [FrameObjects({"person": ClassObjects(2, [[0, 0, 4, 8], [1, 1, 5, 9]], [0.9, 0.4])}),
              FrameObjects({"car": ClassObjects(1)}), FrameObjects()]
    assert counts(frames, ["person", "car"]).tolist() == [[2, 0], [0, 1], [0, 0]]
    assert presence(frames, ["person", "car"], min_count=2).tolist() == [[1, 0], [0, 0], [0, 0]]
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        ClassObjects(2, np.zeros((2, 4)), [0.5])
    with pytest.raises(ValueError, match="below the 2 boxes"):
        ClassObjects(1, np.zeros((2, 4)), [0.5, 0.5])


# --- kind: python ---------------------------------------------------------------------------------

def _plugin(factory: str, **args: object):
    return build_teacher(PythonTeacherConfig(kind="python", factory=f"tests.helpers.teachers:{factory}",
                                             args=args, classes=["blob"]))


def test_python_teacher_runs_the_users_factory() -> None:
    frames = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (0, 60, 255)])
    labels = _plugin("bright_counter").label(frames)
    assert counts(labels, ["blob"]).ravel().tolist() == [0, 2, 10]


@pytest.mark.parametrize(("factory", "args", "message"), [
    ("missing_factory", {}, "has no callable 'missing_factory'"),
    ("no_label_method", {}, "no label\\(frames\\) method"),
    ("returns_dicts", {}, "result 0 is a dict, not a FrameObjects"),
    ("returns_too_few", {}, "returned 0 results for 1 frames"),
    ("bright_counter", {"cls": "person"}, "classes \\['person'\\] not in its classes \\['blob'\\]"),
])
def test_python_teacher_errors_name_the_factory(factory: str, args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        _plugin(factory, **args).label(np.zeros((1, 4, 4, 3), np.uint8))
    assert f"tests.helpers.teachers:{factory}" in str(err.value)


def test_python_teacher_module_that_cannot_be_imported() -> None:
    config = PythonTeacherConfig(kind="python", factory="no_such_module.sub:make", classes=["x"])
    with pytest.raises(ValueError, match="cannot import module 'no_such_module.sub'"):
        build_teacher(config)
    with pytest.raises(ValidationError, match="factory"):
        PythonTeacherConfig(kind="python", factory="no colon here", classes=["x"])


# --- kind: torchvision_detector -------------------------------------------------------------------

ARCHS = ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2",
         "ssdlite320_mobilenet_v3_large")
CLASS_MAP = {"person": "person", "car": "vehicle", "truck": "vehicle", "bus": "vehicle"}


def _random_detector(arch: str, path: Path) -> nn.Module:
    from stemcell.learning.teachers.detector import build_detector

    torch.manual_seed(0)
    model = build_detector(arch, 91, min_size=64).eval()
    if path.suffix == ".safetensors":
        from stemcell.models.weights import save_safetensors

        save_safetensors(model.state_dict(), path)
    else:
        torch.save({"model": model.state_dict()}, path)  # a training checkpoint's wrapper
    return model


@pytest.mark.parametrize("arch", ARCHS)
def test_detector_teacher_loads_the_weights_file_and_maps_categories(arch: str, tmp_path: Path) -> None:
    """Random weights saved to a file and loaded through the real path: the teacher's boxes are the
    saved model's own (so the file was read, not fresh random layers), mapped onto app classes."""
    from stemcell.learning.teachers.detector import coco_categories

    path = tmp_path / ("det.safetensors" if arch.startswith("retina") else "det.pth")
    reference = _random_detector(arch, path)
    config = DetectorTeacherConfig(kind="torchvision_detector", arch=arch, weights=path, class_map=CLASS_MAP,
                                   score_threshold=0.0, min_size=64, batch_size=2)
    teacher = build_teacher(config)
    assert teacher.classes == ("person", "vehicle")
    frames = np.random.default_rng(1).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    labels = teacher.label(frames)
    names = coco_categories(arch)
    with torch.no_grad():
        expected = reference([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames])
    for frame, ref in zip(labels, expected):
        mapped = [CLASS_MAP.get(names[i]) for i in ref["labels"].tolist()]
        for cls in ("person", "vehicle"):
            keep = [i for i, m in enumerate(mapped) if m == cls]
            assert frame.count(cls) == len(keep)
            if keep:
                assert np.allclose(frame.objects[cls].boxes, ref["boxes"][keep].numpy(), atol=1e-4)
                assert np.allclose(frame.objects[cls].scores, ref["scores"][keep].numpy(), atol=1e-5)
                assert (frame.objects[cls].boxes[:, 2] <= 64 + 1e-3).all()
        assert set(frame.objects) <= {"person", "vehicle"}


def test_detector_weights_of_another_architecture_name_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "ssd.pth"
    _random_detector("ssdlite320_mobilenet_v3_large", path)
    config = DetectorTeacherConfig(kind="torchvision_detector", arch="fasterrcnn_mobilenet_v3_large_fpn",
                                   weights=path, class_map={"person": "person"})
    with pytest.raises(ValueError, match=r"ssd\.pth: weights do not fit fasterrcnn_mobilenet_v3_large_fpn: "
                                         r"missing keys \(\d+\): \['backbone\.") as err:
        build_teacher(config)
    assert "unexpected keys (" in str(err.value)
    fewer = config.model_copy(update={"arch": "ssdlite320_mobilenet_v3_large", "categories": ["bg", "person"]})
    with pytest.raises(ValueError, match=r"wrong shapes \(\d+\): \['head\.classification_head"):
        build_teacher(fewer)


def test_detector_bad_files_and_names(tmp_path: Path) -> None:
    base = {"kind": "torchvision_detector", "arch": "ssdlite320_mobilenet_v3_large", "class_map": {"person": "p"}}
    with pytest.raises(FileNotFoundError, match="detector weights not found"):
        build_teacher(DetectorTeacherConfig(**base, weights=tmp_path / "none.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pth: not a torch state dict"):
        build_teacher(DetectorTeacherConfig(**base, weights=tmp_path / "junk.pth"))
    path = tmp_path / "ok.pth"
    _random_detector("ssdlite320_mobilenet_v3_large", path)
    with pytest.raises(ValueError, match=r"categories \['pedestrian'\] that ssdlite320"):
        build_teacher(DetectorTeacherConfig(**{**base, "class_map": {"pedestrian": "p"}}, weights=path))
