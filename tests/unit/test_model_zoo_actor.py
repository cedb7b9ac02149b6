"""The ModelZoo actor's service class (no Ray): experts in and out as `Expert`s, durable across restarts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from actors.model_zoo import ModelZooService, ZooStats
from stemcell.learning.zoo import ZooConfig, expert_from_model
from stemcell.package import load_package
from tests.helpers.builders import random_frames, tiny_package


def test_select_offer_admit_and_restore_from_disk(tmp_path: Path) -> None:
    tiny_package(tmp_path / "pkg", branchpoints=(3,), apps=("car",))
    package = load_package(tmp_path / "pkg")
    config = ZooConfig(gamma=1, gating_steps=5, gating_finetune_steps=2, gating_width=4)
    zoo = ModelZooService(str(tmp_path / "zoo"), str(tmp_path / "pkg"), config)
    data = random_frames(n=24, seed=5)
    frames = data.frames
    labels = np.ones((len(frames), 1), bool)  # the teacher sees a car everywhere (a scene the package model misses)

    current = expert_from_model(package.app_model("car", 3), expert_id="cam0-v1", app="car", version=1, created_from="cam0")
    first = zoo.select("cam0", "car", frames, labels, current=current)
    assert first.chosen == "cam0-v1" and not first.from_zoo  # empty zoo: only the current model
    assert first.expert.meta.expert_id == "cam0-v1"

    # a "retrained" model that answers the teacher's labels exactly
    retrained = package.app_model("car", 3)
    with torch.no_grad():
        retrained.head.fc.weight.zero_()
        retrained.head.fc.bias.fill_(10.0)
    new = expert_from_model(retrained, expert_id="cam0-v2", app="car", version=2, created_from="cam0")
    second = zoo.select("cam0", "car", frames, labels, current=current, last_retrained=new)
    offered = zoo.offer("cam0", "car", new, frames, labels)
    assert second.accuracies["cam0-v2"] == 1.0 and second.chosen == "cam0-v2"
    assert second.accuracies["cam0-v1"] < 1.0 - config.alpha
    assert offered.admit and offered.experts == 1 and offered.queued == 0  # gamma=1: the queue flushed at once
    assert offered.margin == second.accuracies["cam0-v2"] - second.accuracies["cam0-v1"]
    assert zoo.stats() == ZooStats(experts=1, queued=0, in_use={"cam0": "cam0-v2"}, apps=("car",))

    # a restarted actor re-opens the directory: admitted experts and gating come back
    again = ModelZooService(str(tmp_path / "zoo"), str(tmp_path / "pkg"), config)
    assert [e.expert_id for e in again.experts("car")] == [e.expert_id for e in zoo.experts("car")] == ["cam0-v2"]
    third = again.select("cam1", "car", frames, labels)  # another camera, no model of its own: the zoo answers
    assert third.chosen == "cam0-v2" and third.from_zoo
    assert torch.equal(third.expert.state["head.fc.bias"], new.state["head.fc.bias"])
