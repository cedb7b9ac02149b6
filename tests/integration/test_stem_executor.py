"""StemExecutor on local Ray: a fractional GPU share, cameras batched together, live reconfiguration."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stemcell.models import to_input
from stemcell.control.errors import UnknownCamera
from stemcell.package import MPackage, load_package
from stemcell.sharing import FrameResult
from tests.helpers.builders import tiny_package

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pkg")
    tiny_package(root, branchpoints=(4, 6), apps=("car", "person"))
    return root


@pytest.fixture(scope="module")
def executor(ray_session: None, package_dir: Path):  # noqa: ANN201 - an actor handle
    from actors.stem_executor import StemExecutor

    handle = StemExecutor.options(num_gpus=0.25, num_cpus=1, max_restarts=-1, max_task_retries=2).remote(
        str(package_dir), share=0.25, max_batch=16, max_wait_ms=50
    )
    info = ray.get(handle.ready.remote(), timeout=60)
    assert info.share == 0.25 and info.device == ("cuda" if torch.cuda.is_available() else "cpu")
    yield handle
    ray.kill(handle)


def _frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 48, 48, 3), dtype=np.uint8)


def _local_scores(pkg: MPackage, app: str, b: int, frames: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(pkg.app_model(app, b)(to_input(frames, pkg.manifest.base.input_size)))[:, 0].numpy()


def _scores(results: list[FrameResult], app: str) -> np.ndarray:
    return np.array([next(r.score for r in f.results if r.app == app) for f in results])


def test_two_cameras_concurrently_equal_local_models(executor, package_dir: Path) -> None:  # noqa: ANN001
    pkg = load_package(package_dir)
    ray.get(executor.add_camera.remote("c0", [{"app": "car", "branchpoint": 4, "fps": 10},
                                              {"app": "person", "branchpoint": 6, "fps": 10}]))
    again = ray.get(executor.add_camera.remote("c0", [{"app": "car", "branchpoint": 4, "fps": 10},
                                                      {"app": "person", "branchpoint": 6, "fps": 10}]))
    assert again is False  # idempotent
    ray.get(executor.add_camera.remote("c1", [{"app": "car", "branchpoint": 6, "fps": 10}]))
    frames = {c: [_frames(2, 10 * i + k) for k in range(3)] for i, c in enumerate(("c0", "c1"))}
    refs = {c: [executor.infer.remote(c, f, [float(k), float(k) + 0.1]) for k, f in enumerate(fs)]
            for c, fs in frames.items()}
    out = {c: [ray.get(r, timeout=60) for r in rs] for c, rs in refs.items()}
    for c, apps in (("c0", (("car", 4), ("person", 6))), ("c1", (("car", 6),))):
        for k, results in enumerate(out[c]):
            assert [r.frame_ts for r in results] == [float(k), float(k) + 0.1]
            assert results[0].model_versions == {a: 0 for a, _ in apps}
            for app, b in apps:
                np.testing.assert_allclose(_scores(results, app), _local_scores(pkg, app, b, frames[c][k]), atol=1e-5)
    stats = ray.get(executor.stats.remote())
    assert stats.frames == 12 and stats.requests == 6
    assert stats.batches < stats.requests  # cameras were batched together
    assert stats.segment_latency and stats.p99_ms >= stats.p50_ms > 0


def test_reconfigure_while_another_camera_streams(executor) -> None:  # noqa: ANN001
    ray.get(executor.add_camera.remote("c0", [{"app": "car", "branchpoint": 4, "fps": 10}]))
    ray.get(executor.add_camera.remote("c1", [{"app": "car", "branchpoint": 6, "fps": 10}]))
    stream = [executor.infer.remote("c0", _frames(1, 100 + i)) for i in range(12)]
    added = executor.add_camera.remote("c2", [{"app": "person", "branchpoint": 4, "fps": 5}])
    removed = executor.remove_camera.remote("c1")
    assert ray.get(added) is True and ray.get(removed)
    assert all(len(r) == 1 and r[0].results[0].app == "car" for r in ray.get(stream, timeout=60))
    assert set(ray.get(executor.cameras.remote())) == {"c0", "c2"}
    with pytest.raises(UnknownCamera, match="unknown camera 'c1'"):
        ray.get(executor.infer.remote("c1", _frames(1, 0)))
    with pytest.raises(ValueError, match="no candidate"):
        ray.get(executor.add_camera.remote("c3", [{"app": "car", "branchpoint": 1, "fps": 10}]))


def test_weight_swap_and_memory_report(executor, package_dir: Path) -> None:  # noqa: ANN001
    pkg = load_package(package_dir)
    model = pkg.app_model("car", 4)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.mul_(1.1)
    ray.get(executor.set_app_weights.remote("car", "c0", model.trainable_state_dict(), 3))
    frames = _frames(2, 7)
    results = ray.get(executor.infer.remote("c0", frames))
    assert results[0].model_versions == {"car": 3}
    with torch.no_grad():
        want = torch.sigmoid(model(to_input(frames, pkg.manifest.base.input_size)))[:, 0].numpy()
    np.testing.assert_allclose(_scores(results, "car"), want, atol=1e-5)
    report = ray.get(executor.memory_report.remote())
    assert 0 < report.bytes_merged < report.details["bytes_no_merge"] and report.details["activation"]["merged_total"] > 0
    assert report.activation_peak == report.details["activation"]["merged_peak"] > 0


def test_gpu_options_fall_back_without_cuda_and_jpegs_decode_in_the_executor(ray_session: None, package_dir: Path) -> None:
    from actors.stem_executor import StemExecutor
    from stemcell.imaging import decode_image, encode_jpeg

    handle = StemExecutor.options(num_gpus=0.25, num_cpus=1).remote(
        str(package_dir), share=0.25, precision="fp16", backend="tensorrt", gpu_decode=True)
    try:
        info = ray.get(handle.ready.remote(), timeout=60)
        if not torch.cuda.is_available():
            assert info.execution == "fp32/torch"  # one warning line, never an error
            assert ray.get(handle.stats.remote()).engines is None
        apps = [{"app": "car", "branchpoint": 4, "fps": 10}]
        for camera in ("jpeg", "array"):
            ray.get(handle.add_camera.remote(camera, apps))
        jpegs = [encode_jpeg(f) for f in _frames(3, 7)]
        stamps = [0.0, 0.1, 0.2]
        via_jpeg = ray.get(handle.infer_jpeg.remote("jpeg", jpegs, stamps))
        decoded = np.stack([decode_image(j, "image/jpeg") for j in jpegs])
        via_array = ray.get(handle.infer.remote("array", decoded, stamps))
        np.testing.assert_allclose(_scores(via_jpeg, "car"), _scores(via_array, "car"), atol=1e-6)
    finally:
        ray.kill(handle)
