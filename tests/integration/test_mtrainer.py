"""M-Trainer end to end on Ray: trials as tasks with fractional GPU shares -> a valid M-Package."""
from __future__ import annotations

from pathlib import Path

import pytest

from actors.trial_runner import RayTrialRunner
from stemcell.config import TrainConfig, load_config
from stemcell.package import load_package
from stemcell.training.mtrainer import BASE_CACHE, train_package

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.usefixtures("ray_session")
def test_train_on_ray_writes_a_verified_package(tmp_path: Path) -> None:
    config = load_config(REPO / "configs" / "ci.yaml", TrainConfig)
    manifest = train_package(config, tmp_path, RayTrialRunner(cpus_per_trial=1, gpus_per_trial=0.25))

    package = load_package(tmp_path)  # re-verifies every hash
    assert package.manifest == manifest
    assert (tmp_path / BASE_CACHE).is_file()
    apps = {a.name for a in manifest.apps}
    assert apps == {"car", "person"}
    for app in apps:
        assert [c.branchpoint for c in manifest.candidates_for(app)] == [0, 3, 5, 6]
    # the deepest candidate trains only the head: far fewer parameters than full fine-tuning
    car = manifest.candidates_for("car")
    assert car[-1].trainable_params < car[0].trainable_params / 100
    lat = manifest.latency
    assert set(lat.segment_s) == {"1", "8", "32"} and all(t > 0 for t in lat.segment_s["8"])
    assert manifest.world["seed"] == 0 and manifest.fps == 10
