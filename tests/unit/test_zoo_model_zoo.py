"""ModelZoo end to end on real tiny models: select, admit, grow the gating net, reuse, restart, prune."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from stemcell.learning.zoo import ModelZoo, ZooConfig, ZooStore, expert_from_model
from stemcell.models import AppModel, build_base, make_app_model

BRANCHPOINT = 5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base():
    return build_base("tiny_cnn", seed=0)


def _constant_model(base, answer: bool) -> AppModel:
    """An app model that always says `answer` (expert for scenes where the class is always / never there)."""
    model = make_app_model(base, BRANCHPOINT, num_outputs=1)
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.bias.fill_(5.0 if answer else -5.0)
    return model


def _scene(bright: bool, n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bright scenes always contain the class, dark ones never do."""
    rng = np.random.default_rng(seed)
    low, high = (180, 255) if bright else (0, 70)
    return rng.integers(low, high, size=(n, 32, 32, 3), dtype=np.uint8), np.full(n, bright)


def _zoo(tmp_path: Path, base, **overrides: object) -> ModelZoo:
    config = ZooConfig(gamma=1, gating_width=8, gating_steps=40, gating_finetune_steps=30, **overrides)  # type: ignore[arg-type]
    return ModelZoo(ZooStore(tmp_path), base, config)


def _admit(zoo: ModelZoo, base, camera: str, answer: bool, expert_id: str, current: tuple[str, AppModel]) -> None:
    frames, labels = _scene(bright=answer)
    retrained = _constant_model(base, answer)
    selection = zoo.select(camera, "car", frames, labels, current=current, last_retrained=(expert_id, retrained))
    assert selection.chosen == expert_id and not selection.from_zoo
    expert = expert_from_model(retrained, expert_id=expert_id, app="car", version=1, created_from=camera)
    assert zoo.offer(selection, expert, frames, labels).admit


def test_zoo_reuses_a_stored_expert_when_a_scene_returns(tmp_path: Path, base) -> None:
    zoo = _zoo(tmp_path, base)
    _admit(zoo, base, "cam0", True, "bright", current=("cam0-v0", _constant_model(base, False)))
    assert zoo.expert_ids("car") == ["bright"]
    _admit(zoo, base, "cam0", False, "dark", current=("bright", _constant_model(base, True)))
    assert zoo.expert_ids("car") == ["bright", "dark"]  # gating net grew to two outputs

    # cam1 runs the dark expert when a bright scene arrives: the gating net alone (k=1) must
    # shortlist the bright expert, and the safety check must switch to it.
    frames, labels = _scene(bright=True, seed=5)
    zoo.config = replace(zoo.config, k=1)
    selection = zoo.select("cam1", "car", frames, labels, current=("cam1-v0", _constant_model(base, False)))
    assert selection.chosen == "bright" and selection.from_zoo and selection.accuracy == 1.0
    assert dict(selection.accuracies) == {"bright": 1.0, "cam1-v0": 0.0}
    assert torch.equal(selection.model.head.fc.bias, torch.tensor([5.0]))
    assert zoo.in_use["cam1"] == "bright"

    # Restart: a new ModelZoo on the same folder has the same experts and the same gating scores.
    again = ModelZoo(ZooStore(tmp_path), base, ZooConfig(k=1))
    assert again.expert_ids("car") == ["bright", "dark"]
    assert again.select("cam1", "car", frames, labels).chosen == "bright"


def test_models_that_do_not_beat_the_zoo_by_alpha_stay_out(tmp_path: Path, base) -> None:
    zoo = _zoo(tmp_path, base)
    _admit(zoo, base, "cam0", True, "bright", current=("cam0-v0", _constant_model(base, False)))
    frames, labels = _scene(bright=True, seed=2)
    twin = _constant_model(base, True)  # as good as the stored expert, not better
    selection = zoo.select("cam0", "car", frames, labels, current=("bright", twin), last_retrained=("twin", twin))
    decision = zoo.offer(selection, expert_from_model(twin, expert_id="twin", app="car", version=2, created_from="cam0"), frames, labels)
    assert not decision.admit and decision.margin == 0.0
    assert zoo.expert_ids("car") == ["bright"] and len(zoo.queue) == 0


def test_queue_waits_for_gamma_before_admitting(tmp_path: Path, base) -> None:
    zoo = ModelZoo(ZooStore(tmp_path), base, ZooConfig(gamma=2, gating_width=8, gating_steps=10, gating_finetune_steps=5))
    frames, labels = _scene(bright=True)
    for i, camera in enumerate(("cam0", "cam1")):
        model = _constant_model(base, True)
        sel = zoo.select(camera, "car", frames, labels, current=(f"{camera}-v0", _constant_model(base, False)), last_retrained=(f"e{i}", model))
        zoo.offer(sel, expert_from_model(model, expert_id=f"e{i}", app="car", version=1, created_from=camera), frames, labels)
        assert len(zoo.store) == i * 2  # nothing stored until the second promising model arrives
    assert zoo.expert_ids("car") == ["e0", "e1"]


def test_prune_drops_unpicked_experts_but_keeps_those_in_use(tmp_path: Path, base) -> None:
    zoo = _zoo(tmp_path, base, q=4, eta=2)
    _admit(zoo, base, "cam0", True, "bright", current=("cam0-v0", _constant_model(base, False)))
    _admit(zoo, base, "cam1", False, "dark", current=("cam1-v0", _constant_model(base, True)))
    frames, labels = _scene(bright=True, seed=3)
    for _ in range(4):  # four selections, all won by the bright expert
        zoo.select("cam0", "car", frames, labels)
    assert zoo.in_use == {"cam0": "bright", "cam1": "dark"}
    assert zoo.prune() == []  # 'dark' is unpopular but cam1 still runs it
    zoo.select("cam1", "car", frames, labels)
    assert zoo.prune() == ["dark"]
    assert zoo.expert_ids("car") == ["bright"] and "dark" not in zoo.store
    assert zoo.select("cam1", "car", frames, labels).chosen == "bright"  # gating net shrank consistently
