"""serve.yaml validation: the shipped file loads, paths become absolute, bad fields are named."""
from __future__ import annotations

from pathlib import Path

import pytest

from stemcell.config import ConfigError
from stemcell.serve_config import admin_token_from_env, load_serve_config

REPO = Path(__file__).resolve().parents[2]


def test_shipped_serve_config_is_valid_and_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_serve_config(REPO / "configs" / "serve.yaml")
    assert config.package_dir.is_absolute() and config.package_dir == tmp_path / "pkg" / "demo"
    assert config.executors.placement == "spread" and config.executors.node_labels == {}
    assert config.ingress.node_labels == {} and config.ingress.access_log is False


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("executors: {placement: everywhere}", "executors.placement"),
        ("executors: {node_labels: {stemcell-role: [gpu]}}", "executors.node_labels"),
        ("ingress: {node_labels: gpu}", "ingress.node_labels"),
        ("http: {port: 0}", "http.port"),
        ("limits: {max_image_bytes: 10}", "limits.max_image_bytes"),
        ("executor: {count: 2}", "executor"),
    ],
)
def test_bad_serve_field_is_named(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(f"package_dir: pkg\nstate_path: state.db\n{text}\n")
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_serve_config(path)


def test_admin_token_must_come_from_the_environment_and_be_long(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("package_dir: pkg\nstate_path: state.db\nadmin_token_env: MY_TOKEN\n")
    config = load_serve_config(path)
    with pytest.raises(ValueError, match=r"\$MY_TOKEN"):
        admin_token_from_env(config, {"MY_TOKEN": "short"})
    assert admin_token_from_env(config, {"MY_TOKEN": "x" * 32}) == "x" * 32
