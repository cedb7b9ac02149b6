"""Config validation: errors name the file and the bad field."""
from __future__ import annotations

from pathlib import Path

import pytest

from stemcell.config import ConfigError, TrainConfig, load_config

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_are_valid() -> None:
    config = load_config(REPO / "configs" / "demo.yaml", TrainConfig)
    assert [a.name for a in config.apps] == ["car", "person", "bus"]


def test_any_class_name_and_count_apps_are_accepted(tmp_path: Path) -> None:
    """No fixed class list: classes are checked against the data at train time, not here."""
    text = ("apps: [{name: trucks, class: truck}, {name: crowd, classes: [person, cyclist], task: count, min_count: 3}]\n"
            "base: {name: resnet18, weights: r18.pth, pretrain: none}")
    config = load_config(_write(tmp_path, text), TrainConfig)
    assert config.apps[0].app_classes == ("truck",) and config.apps[0].task == "presence"
    assert config.apps[1].app_classes == ("person", "cyclist") and config.apps[1].min_count == 3
    assert config.base.pretrain == "none" and config.base.normalization.mean == (0.485, 0.456, 0.406)
    assert config.data.kind == "synthetic"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("apps: [{name: car}]", "apps.0: .*exactly one of `class` or `classes`"),
        ("apps: [{name: car, class: car, classes: [bus]}]", "apps.0: .*exactly one of"),
        ("apps: [{name: car, class: car, task: size}]", "apps.0.task"),
        ("apps: [{name: car, class: car, min_count: 3}]", "min_count is for task: count"),
        ("apps: [{name: car, class: car}]\nbase: {pretrain: none}", "base.weights is required"),
        ("apps: [{name: car, class: car}]\ndata: {kind: video_labels, videos: v}", "data.video_labels.labels"),
        ("apps: [{name: car, class: car}]\ndata: {kind: kinetics}", "data"),
        ("apps: [{name: car, class: car}]\ntrainer: {epochs: 0}", "trainer.epochs"),
        ("apps: [{name: car, class: car}]\ntrainer: {epocs: 3}", "trainer.epocs"),
        ("apps: [{name: '../x', class: car}]", "apps.0.name"),
        ("apps: [{name: a, class: car}, {name: a, class: bus}]", "unique"),
        ("world: {num_cameras: 3}", "apps"),
    ],
)
def test_bad_field_is_named(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field if ".*" in field else field.replace(".", r"\.")):
        load_config(_write(tmp_path, text), TrainConfig)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", TrainConfig)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "apps: [unclosed"), TrainConfig)
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- a list"), TrainConfig)
