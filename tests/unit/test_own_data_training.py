"""`train_package` on own data: the world exported as mp4 + CSV or as COCO trains candidates as good as
the world itself; weights used as is; a 3-class pretrained base; bad data writes nothing."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml

from stemcell.config import TrainConfig
from stemcell.data import DataError
from stemcell.data.dataset import even_sample
from stemcell.models import build_base, load_safetensors
from stemcell.package import load_package
from stemcell.training.mtrainer import BASE_CACHE, obtain_base, train_package
from stemcell.world import World, WorldConfig, export_coco, export_video_labels

WORLD = {"seed": 0, "num_cameras": 2, "height": 48, "width": 48, "fps": 10, "duration_s": 200}
FRAMES = 400


def _config(data: str = "{kind: synthetic}", apps: str = "[{name: bicycle, class: bicycle}, {name: bus, class: bus}, "
            "{name: car, class: car}, {name: dog, class: dog}]", base: str = "") -> TrainConfig:
    """Head-only candidates (branchpoint 6 of tiny_cnn): seconds to train, and stable enough that the
    comparison measures the data path, not training noise."""
    return TrainConfig.model_validate(yaml.safe_load(f"""
        world: {WORLD}
        data: {data}
        base: {base or "{name: tiny_cnn, input_size: 48, pretrain: {epochs: 2, frames_per_camera: 300}}"}
        apps: {apps}
        trainer: {{branchpoints: [6], epochs: 6, train_frames_per_camera: {FRAMES}}}
        latency: {{batch_sizes: [1], repeats: 1}}
    """))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("own")
    world = World(WorldConfig(**WORLD))
    export_video_labels(world, out / "videos")
    export_coco(world, out / "coco", even_sample(world.config.num_frames, FRAMES))
    return out


@pytest.fixture(scope="module")
def world_package(exported: Path) -> Path:
    train_package(_config(), exported / "world")
    return exported / "world"


def _train_like_world(world_package: Path, out: Path, data: str) -> list[float]:
    out.mkdir()
    shutil.copy(world_package / BASE_CACHE, out / BASE_CACHE)  # the same base, as a user's cache would be
    manifest = train_package(_config(data), out)
    return [c.f1 for c in manifest.candidates]


def test_exported_video_and_coco_train_as_well_as_the_world(exported: Path, world_package: Path) -> None:
    world = [c.f1 for c in load_package(world_package).manifest.candidates]
    assert np.mean(world) > 0.35  # the apps learned something, so the comparison means something
    video = _train_like_world(world_package, exported / "video",
                              f"{{kind: video_labels, videos: {exported / 'videos'}, labels: {exported / 'videos/labels.csv'}}}")
    coco = _train_like_world(world_package, exported / "coco_pkg",
                             f"{{kind: coco, annotations: {exported / 'coco/annotations.json'}}}")
    assert abs(np.mean(video) - np.mean(world)) <= 0.05  # mp4 compression is the only difference
    assert coco == pytest.approx(world, abs=1e-9)  # PNG frames are lossless: the very same candidates


def test_unknown_class_or_no_positives_is_refused_before_writing(exported: Path, tmp_path: Path) -> None:
    data = f"{{kind: video_labels, videos: {exported / 'videos'}, labels: {exported / 'videos/labels.csv'}}}"
    with pytest.raises(DataError, match=r"apps\[1\].class \(trucks\): unknown class \['truck'\]; the data .*labels.csv"):
        train_package(_config(data, "[{name: bus, class: bus}, {name: trucks, class: truck}]"), tmp_path / "a")
    with pytest.raises(DataError, match=r"apps\[0\].min_count \(crowd\): no labelled frame has 9 or more dog"):
        train_package(_config(data, "[{name: crowd, class: dog, task: count, min_count: 9}]"), tmp_path / "b")
    table = tmp_path / "labels.csv"
    table.write_text("video,frame,class\ncamera00.mp4,3,car\ncamera00.mp4,4,\n")
    only_cars = f"{{kind: video_labels, videos: [{exported / 'videos/camera00.mp4'}], labels: {table}, classes: [car, bus]}}"
    with pytest.raises(DataError, match=r"apps\[0\].class \(bus\): class 'bus' has no positive example in .*labels.csv"):
        train_package(_config(only_cars, "[{name: bus, class: bus}]"), tmp_path / "c")
    assert not any((tmp_path / d).exists() for d in "abc")  # nothing half-written


def test_imagenet_weights_are_used_as_is(exported: Path, tmp_path: Path) -> None:
    """base.pretrain: none keeps a torchvision checkpoint's backbone unchanged in the package."""
    weights = tmp_path / "mnv3.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), weights)
    base = f"{{name: mobilenet_v3_small, input_size: 48, weights: {weights}, pretrain: none, " \
           "normalization: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}"
    config = _config(apps="[{name: bus, class: bus}]", base=base)
    config = config.model_copy(update={"trainer": config.trainer.model_copy(update={
        "branchpoints": [8], "epochs": 1, "train_frames_per_camera": 40})})
    manifest = train_package(config, tmp_path / "pkg")
    package = load_package(tmp_path / "pkg")
    expected = build_base("mobilenet_v3_small", num_classes=5, torchvision_weights=weights)
    for ours, theirs in zip(package.base.segments, expected.segments):
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    assert manifest.base.normalization.mean == (0.5, 0.5, 0.5) and manifest.base.input_size == 48


def test_three_class_image_folder_base_does_not_break_train(tmp_path: Path) -> None:
    import cv2

    for k, cls in enumerate(["red", "green", "blue"]):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        for j in range(4):
            image = np.zeros((24, 24, 3), np.uint8)
            image[..., k] = 60 * j + 60
            cv2.imwrite(str(tmp_path / "folder" / cls / f"{j}.png"), image)
    config = _config(apps="[{name: bus, class: bus}]",
                     base=f"{{name: tiny_cnn, input_size: 48, pretrain: {{epochs: 1, image_folder: {tmp_path / 'folder'}}}}}")
    config = config.model_copy(update={"trainer": config.trainer.model_copy(update={"epochs": 1, "train_frames_per_camera": 40})})
    obtain_base(config, tmp_path / "pkg")  # what `stemcell pretrain --image-folder` does
    assert load_safetensors(tmp_path / "pkg" / BASE_CACHE)["head.fc.weight"].shape[0] == 3
    manifest = train_package(config, tmp_path / "pkg")
    assert manifest.base.num_classes == 3 and manifest.data.classes == ["person", "car", "bus", "bicycle", "dog"]
    assert load_package(tmp_path / "pkg").manifest == manifest
