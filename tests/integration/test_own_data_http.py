"""Own data end to end over HTTP: exported video + labels CSV -> `train_package` (video_labels) ->
Serve -> a count app's results carry `count`, and `event_active` is count >= min_count."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import ray
import yaml

from actors.retrain_worker import RetrainWorker
from stemcell.client import Admin, Camera
from stemcell.config import TrainConfig
from stemcell.control.contracts import AppRun
from stemcell.package.store import file_sha256
from stemcell.training.mtrainer import train_package
from stemcell.world import World, WorldConfig, export_video_labels
from tests.helpers.serving import ADMIN_TOKEN, served_package

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

WORLD = WorldConfig(seed=5, num_cameras=2, height=32, width=32, fps=10, duration_s=60)


def _config(videos: Path, labels: Path) -> TrainConfig:
    return TrainConfig.model_validate(yaml.safe_load(f"""
        data: {{kind: video_labels, videos: {videos}, labels: {labels}}}
        base: {{name: tiny_cnn, input_size: 32, pretrain: {{epochs: 1, frames_per_camera: 100}}}}
        apps:
          - {{name: vehicles, classes: [car, bus], task: count, min_count: 2}}
          - {{name: person, class: person}}
        trainer: {{branchpoints: [3, 6], epochs: 2, train_frames_per_camera: 150, val_chunk_s: 10}}
        latency: {{batch_sizes: [1, 8], repeats: 2}}
    """))


def test_count_app_trained_on_own_video_is_served_with_counts(tmp_path: Path) -> None:
    world = World(WORLD)
    videos, labels = export_video_labels(world, tmp_path / "videos")
    manifest = train_package(_config(tmp_path / "videos", labels), tmp_path / "pkg")

    assert manifest.data.kind == "video_labels" and manifest.world is None
    assert {Path(f.path).name: f.sha256 for f in manifest.data.files} == {
        p.name: file_sha256(p) for p in (labels, *videos)}
    assert manifest.data.classes == ["bicycle", "bus", "car", "dog", "person"]
    counts = sum(world.camera(c).counts().sum(0) for c in range(2))
    assert manifest.data.label_counts == {"person": counts[0], "car": counts[1], "bus": counts[2],
                                          "bicycle": counts[3], "dog": counts[4]}
    vehicles = next(a for a in manifest.apps if a.name == "vehicles")
    assert (vehicles.task, vehicles.min_count, vehicles.classes) == ("count", 2, ["car", "bus"])
    assert all(c.count_mae is not None for c in manifest.candidates_for("vehicles"))
    assert all(c.count_mae is None for c in manifest.candidates_for("person"))

    with served_package(tmp_path, tmp_path / "pkg", "stemcell-own-data") as url, Admin(url, ADMIN_TOKEN, timeout=60) as admin:
        token = admin.add_camera("street", ["vehicles", "person"], fps=10)["token"]
        frames = world.camera(0).frames(np.arange(0, 600, 30))
        with Camera(url, token, "street") as cam:
            answers = cam.infer_batch(list(frames))
    assert len(answers) == len(frames)
    for answer in answers:
        by_app = {r["app"]: r for r in answer["results"]}
        count = by_app["vehicles"]["count"]
        assert isinstance(count, int) and count >= 0
        assert by_app["vehicles"]["event_active"] == by_app["vehicles"]["label"] == (count >= 2)
        assert 0.0 <= by_app["vehicles"]["score"] <= 1.0
        assert by_app["person"]["count"] is None

    # continuous learning retrains one-class presence apps; the count app keeps serving as trained
    worker = RetrainWorker.options(num_cpus=0.25, num_gpus=0.1).remote(
        str(tmp_path / "pkg"), persist_dir=str(tmp_path / "ams"), share=0.1, auto=False)
    try:
        versions = ray.get(worker.set_camera.remote("street", [AppRun("vehicles", 6, 10.0),
                                                               AppRun("person", 6, 10.0)]))
        assert set(versions) == {"person"}
    finally:
        ray.kill(worker)
