"""Durable zoo store: safetensors + sha256 manifest round-trip, tamper rejection, stem checks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stemcell.learning.zoo import (
    SCHEMA_VERSION,
    ExpertMeta,
    ZooIntegrityError,
    ZooStore,
    expert_from_model,
    load_expert,
)
from stemcell.models import AppModel, build_base, make_app_model


def _app_model(seed: int = 0, branchpoint: int = 4) -> AppModel:
    base = build_base("tiny_cnn", seed=0)
    model = make_app_model(base, branchpoint, num_outputs=1)
    with torch.no_grad():
        torch.manual_seed(seed)
        for p in model.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _expert(expert_id: str = "car-cam0-v1", seed: int = 0):
    return expert_from_model(_app_model(seed), expert_id=expert_id, app="car", version=1, created_from="cam0", created_at=12.5)


def test_round_trip_keeps_weights_and_metadata(tmp_path: Path) -> None:
    store = ZooStore(tmp_path)
    expert = _expert()
    store.put(expert)
    again = ZooStore(tmp_path).get("car-cam0-v1")  # a fresh process reads the same thing
    assert again.meta == expert.meta
    assert again.meta.branchpoint == 4 and again.meta.created_from == "cam0"
    assert set(again.state) == set(expert.state)
    assert all(torch.equal(again.state[k], expert.state[k]) for k in expert.state)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert len(manifest["experts"]["car-cam0-v1"]["sha256"]) == 64
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files


def test_loaded_expert_reproduces_the_model_outputs(tmp_path: Path) -> None:
    model = _app_model(seed=3)
    store = ZooStore(tmp_path)
    store.put(expert_from_model(model, expert_id="e", app="car", version=0, created_from="cam1"))
    fresh = make_app_model(build_base("tiny_cnn", seed=0), 4, num_outputs=1)
    load_expert(fresh, store.get("e"))
    x = torch.randn(4, 3, 64, 64)
    assert torch.allclose(fresh(x), model.eval()(x))


def test_expert_is_a_snapshot_not_a_view() -> None:
    model = _app_model()
    expert = expert_from_model(model, expert_id="e", app="car", version=0, created_from="cam0")
    with torch.no_grad():
        model.head.fc.bias.add_(1.0)
    assert not torch.equal(expert.state["head.fc.bias"], model.head.fc.bias)


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    store = ZooStore(tmp_path)
    store.put(_expert())
    path = tmp_path / "experts" / "car-cam0-v1.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last weight byte
    path.write_bytes(bytes(data))
    with pytest.raises(ZooIntegrityError, match="refusing to load a modified file"):
        ZooStore(tmp_path).get("car-cam0-v1")
    path.unlink()
    with pytest.raises(ZooIntegrityError, match="missing"):
        store.get("car-cam0-v1")


def test_unknown_schema_and_corrupt_manifest_are_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99, "experts": {}, "gating": {}}))
    with pytest.raises(ZooIntegrityError, match="schema_version 99"):
        ZooStore(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ZooIntegrityError, match="not valid JSON"):
        ZooStore(tmp_path)


def test_remove_listing_and_gating_round_trip(tmp_path: Path) -> None:
    store = ZooStore(tmp_path)
    store.put(_expert("a", 0))
    store.put(_expert("b", 1))
    assert [m.expert_id for m in store.metas("car")] == ["a", "b"] and store.metas("dog") == []
    store.remove("a")
    assert "a" not in store and len(store) == 1 and list(store) == ["b"]
    assert not (tmp_path / "experts" / "a.safetensors").exists()
    with pytest.raises(KeyError):
        store.get("a")
    state = {"out.weight": torch.randn(2, 8), "out.bias": torch.zeros(2)}
    store.put_gating("car", state, ["b", "c"])
    loaded, ids = ZooStore(tmp_path).get_gating("car")  # type: ignore[misc]
    assert ids == ["b", "c"] and torch.equal(loaded["out.weight"], state["out.weight"])
    assert store.get_gating("dog") is None


def test_expert_only_loads_onto_its_own_stem() -> None:
    expert = _expert()
    other_base = make_app_model(build_base("tiny_cnn", seed=1), 4, num_outputs=1)
    with pytest.raises(ValueError, match="different stem"):
        load_expert(other_base, expert)
    other_cut = make_app_model(build_base("tiny_cnn", seed=0), 3, num_outputs=1)
    with pytest.raises(ValueError, match="branchpoint"):
        load_expert(other_cut, expert)


def test_ids_that_could_escape_the_folder_are_rejected() -> None:
    with pytest.raises(ValueError, match="expert id"):
        ExpertMeta("../evil", "car", 4, "h", 0, "cam0")
