"""M-Trainer trains detect apps per branchpoint from the world's exact boxes (or a table's); the
manifest records their mAP; data without boxes or an empty class list is refused clearly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import torch
import yaml
from pydantic import ValidationError

from stemcell.config import TrainConfig
from stemcell.data import DataError
from stemcell.package import load_package
from stemcell.training.detect_train import CenterNetLoss, detect_targets
from stemcell.training.mtrainer import train_package
from stemcell.world import World, WorldConfig, export_video_labels

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WORLD = {"seed": 0, "num_cameras": 2, "height": 48, "width": 48, "fps": 10, "duration_s": 60}


def _config(apps: str, data: str = "{kind: synthetic}") -> TrainConfig:
    return TrainConfig.model_validate(yaml.safe_load(f"""
        world: {WORLD}
        data: {data}
        base: {{name: tiny_cnn, input_size: 48, pretrain: {{epochs: 1, frames_per_camera: 100}}}}
        apps: {apps}
        trainer: {{branchpoints: [3, 6], epochs: 3, train_frames_per_camera: 150}}
        latency: {{batch_sizes: [1], repeats: 1}}
    """))


def test_detect_candidates_per_branchpoint_with_map_in_the_manifest(tmp_path: Path) -> None:
    manifest = train_package(_config("[{name: people, classes: [person, bicycle], task: detect, min_count: 2}, "
                                     "{name: car, class: car}]"), tmp_path)
    people = next(a for a in manifest.apps if a.name == "people")
    assert people.task == "detect" and people.min_count == 2 and people.classes == ["person", "bicycle"]
    detect = manifest.candidates_for("people")
    assert [c.branchpoint for c in detect] == [3, 6]
    for c in detect:
        assert c.map50 is not None and c.map50_95 is not None and 0.0 <= c.map50_95 <= c.map50 <= 1.0
        assert c.count_mae is not None and 0.0 <= c.f1 <= 1.0  # count-event F1: what the planner ranks
    assert all(c.map50 is None for c in manifest.candidates_for("car"))  # presence apps: no mAP
    package = load_package(tmp_path)
    assert package.app_model("people", 3).head.num_classes == 2


def test_detect_app_on_labels_without_boxes_is_refused(tmp_path: Path) -> None:
    world = World(WorldConfig(**WORLD))
    videos, _ = export_video_labels(world, tmp_path / "v")
    table = tmp_path / "no_boxes.csv"
    pacsv.write_csv(pa.table({"video": ["camera00.mp4"] * 2, "frame": [3, 9], "class": ["person", "person"]}), table)
    data = f"{{kind: video_labels, videos: ['{videos[0]}'], labels: '{table}'}}"
    with pytest.raises(DataError, match=r"apps\[0\].task \(people\): a detect app learns from boxes, but .*no_boxes.csv"):
        train_package(_config("[{name: people, class: person, task: detect}]", data), tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()


def test_empty_class_list_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match=r"apps.0.classes"):
        _config("[{name: people, classes: [], task: detect}]")


def test_targets_put_each_object_at_its_centre_cell_and_the_loss_prefers_them() -> None:
    # one watched object (data class 4 -> head channel 1) centred at (0.3, 0.6), 0.25 x 0.5 of the frame;
    # an object of a class the app does not watch (2) is ignored
    boxes = [np.array([[4, 0.175, 0.35, 0.425, 0.85], [2, 0.0, 0.0, 0.5, 0.5]], np.float32)]
    target = detect_targets(boxes, (0, 4), (8, 8))
    assert target.shape == (1, 2 + 5, 8, 8)
    assert target[0, 0].max() == 0 and target[0, 1, 4, 2] == 1.0  # centre (2.4, 4.8) cells -> cell (row 4, col 2)
    assert target[0, 6].sum() == 1 and target[0, 6, 4, 2] == 1  # the centre-cell mask
    assert target[0, 2:4, 4, 2].tolist() == pytest.approx([0.4, 0.8], abs=1e-5)  # offset in the cell
    assert target[0, 4:6, 4, 2].tolist() == pytest.approx([np.log(2.0), np.log(4.0)], abs=1e-5)  # 2 x 4 cells
    loss = CenterNetLoss(2)
    perfect = torch.full((1, 6, 8, 8), -9.0)
    perfect[0, 1, 4, 2] = 9.0
    perfect[0, 2:4, 4, 2] = torch.logit(torch.tensor([0.4, 0.8]))
    perfect[0, 4:6, 4, 2] = torch.tensor([np.log(2.0), np.log(4.0)])
    assert float(loss(perfect, target)) < 0.01 < float(loss(torch.zeros(1, 6, 8, 8), target))
