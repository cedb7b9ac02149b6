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


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("apps: [{name: car, class: truck}]", "apps.0.class"),
        ("apps: [{name: car, class: car}]\ntrainer: {epochs: 0}", "trainer.epochs"),
        ("apps: [{name: car, class: car}]\ntrainer: {epocs: 3}", "trainer.epocs"),
        ("apps: [{name: '../x', class: car}]", "apps.0.name"),
        ("apps: [{name: a, class: car}, {name: a, class: bus}]", "unique"),
        ("world: {num_cameras: 3}", "apps"),
    ],
)
def test_bad_field_is_named(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(_write(tmp_path, text), TrainConfig)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", TrainConfig)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "apps: [unclosed"), TrainConfig)
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- a list"), TrainConfig)
