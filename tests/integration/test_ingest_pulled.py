"""A RoutedExecutor's `infer_pulled` on local Ray: one uint8 batch for several cameras, answered per
frame as the local model answers it (in the camera's own pixels), an unknown camera failing only
itself, `Moved` for every frame once the executor drains."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stemcell.control.errors import Moved, UnknownCamera
from stemcell.ingest import PulledBatch
from stemcell.models import to_input
from stemcell.package import load_package
from stemcell.serve_config import ExecutorSection
from tests.helpers.builders import tiny_package

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pkg")
    tiny_package(root, branchpoints=(4,), apps=("car",))
    return root


def test_one_pulled_batch_answers_each_camera_like_the_local_model(ray_session: None, package_dir: Path) -> None:
    from actors.routed_executor import start_executor

    config = ExecutorSection(num_cpus=1, namespace="pulled-test", max_wait_ms=60_000)  # a pulled batch never waits
    handle = start_executor(config, str(package_dir), name="pulled-exec", share=0.25)
    try:
        ray.get(handle.ready.remote(), timeout=120)
        for camera in ("a", "b"):
            ray.get(handle.add_camera.remote(camera, [{"app": "car", "branchpoint": 4, "fps": 10}], 10.0))
        pkg = load_package(package_dir)
        size = pkg.manifest.base.input_size
        frames = np.random.default_rng(0).integers(0, 256, size=(3, size, size, 3), dtype=np.uint8)
        batch = PulledBatch.of(["a", "nobody", "b"], frames, [1.0, 2.0, 3.0], [(720, 1280), (720, 1280), (480, 640)])
        answers = ray.get(handle.infer_pulled.remote(batch), timeout=60)  # well under max_wait_ms
        assert isinstance(answers[1], UnknownCamera)
        with torch.no_grad():
            local = torch.sigmoid(pkg.app_model("car", 4)(to_input(frames, size)))[:, 0].numpy()
        for i in (0, 2):
            (result,) = answers[i].results
            assert answers[i].frame_ts == batch.timestamps[i] and result.app == "car"
            assert result.score == pytest.approx(float(local[i]), abs=1e-5)
        assert ray.get(handle.drain.remote(5.0)).drained
        assert all(isinstance(a, Moved) for a in ray.get(handle.infer_pulled.remote(batch)))
    finally:
        ray.kill(handle)
