"""The GPU path on a real GPU (marked `gpu`: skipped without CUDA; scripts/device_check.sh runs them)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stemcell.accel import DevicePath, EngineCache, EngineManager
from stemcell.accel.decode import FrameDecoder
from stemcell.imaging import encode_jpeg
from stemcell.models import build_base
from stemcell.package import MPackage, load_package
from stemcell.sharing import DeviceOutOfMemory, InferRequest, StemRuntime
from stemcell.training import profile_latency
from tests.helpers.builders import tiny_package

pytestmark = pytest.mark.gpu
SCORE_TOLERANCE = 0.01  # as tests/unit/test_precision.py and docs/gpu.md
APPS = [{"app": "car", "branchpoint": 2, "fps": 10}, {"app": "person", "branchpoint": 4, "fps": 10}]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> MPackage:
    root = tmp_path_factory.mktemp("pkg")
    tiny_package(root, branchpoints=(2, 4), apps=("car", "person"))
    return load_package(root)


def _frames(n: int = 8) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, size=(n, 40, 40, 3), dtype=np.uint8)


def _scores(runtime: StemRuntime, frames: np.ndarray) -> np.ndarray:
    runtime.set_camera("c0", APPS)
    outcome = runtime.infer([InferRequest("c0", frames)])[0]
    assert isinstance(outcome, list)
    return np.array([[r.score for r in frame.results] for frame in outcome])


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_serving_precision_on_the_gpu_stays_within_tolerance_of_cpu_fp32(package: MPackage, precision: str) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    path = DevicePath.create(device="cuda", precision=precision)  # type: ignore[arg-type]
    assert path.plan.describe() == f"{precision}/torch"
    gpu = _scores(StemRuntime(package, path=path), _frames())
    cpu = _scores(StemRuntime(package, device="cpu"), _frames())
    assert np.abs(gpu - cpu).max() < SCORE_TOLERANCE


def test_each_executor_has_its_own_stream_and_pinned_staging(package: MPackage) -> None:
    runtime = StemRuntime(package, path=DevicePath.create(device="cuda"))
    assert runtime.path.stream is not None and runtime.path.stream != torch.cuda.default_stream()
    _scores(runtime, _frames())
    assert runtime.path._pinned.is_pinned() and runtime.path._pinned.numel() > 0


def test_an_oom_past_the_share_fails_one_batch_and_the_executor_recovers(package: MPackage) -> None:
    runtime = StemRuntime(package, path=DevicePath.create(device="cuda"))
    runtime.set_camera("c0", APPS)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(0.1)
    blocks: list[torch.Tensor] = []
    try:
        with pytest.raises(torch.OutOfMemoryError):
            while True:
                blocks.append(torch.empty(64 << 20, dtype=torch.uint8, device="cuda"))
        assert len(blocks) * (64 << 20) <= 0.1 * total  # the cap holds
        with pytest.raises(DeviceOutOfMemory):
            runtime.infer([InferRequest("c0", np.zeros((4096, 32, 32, 3), np.uint8))])
        blocks.clear()
        torch.cuda.empty_cache()
        assert isinstance(runtime.infer([InferRequest("c0", _frames())])[0], list)
    finally:
        blocks.clear()
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


def test_tensorrt_engines_match_torch_and_reload_from_the_cache(package: MPackage, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt")
    from stemcell.accel.tensorrt_engine import build_engine, load_engine, tensorrt_version

    path = DevicePath.create(device="cuda", precision="fp16", backend="tensorrt", max_batch=16, engine_dir=tmp_path)
    assert path.engines is not None
    runtime = StemRuntime(package, path=path)
    before = _scores(runtime, _frames())  # torch fp16 while the engines build
    assert path.engines.wait(300)
    stats = path.engines.stats()
    segments = {n.digest for n in runtime.tree.nodes() if n.depth < runtime.tree.num_segments}
    assert stats.failed == 0 and stats.ready == len(segments)
    after = _scores(runtime, _frames())
    assert np.abs(after - before).max() < SCORE_TOLERANCE
    again = EngineManager(EngineCache(tmp_path), build_engine, load_engine, precision="fp16", max_batch=16,
                          gpu_model=torch.cuda.get_device_name(), tensorrt_version=str(tensorrt_version()))
    node = next(n for n in runtime.tree.nodes() if n.depth == 0)
    again.request(node.digest, node.module, (3, 32, 32))
    assert again.wait(120) and again.stats().loaded == 1 and again.stats().built == 0


def test_gpu_jpeg_decode_matches_the_cpu_decoder() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    jpegs = [encode_jpeg(rgb)] * 4
    gpu = FrameDecoder("cuda", gpu=True)
    assert gpu.gpu
    on_gpu = gpu.to_input(jpegs, 32)
    on_cpu = FrameDecoder("cpu", gpu=False).to_input(jpegs, 32)
    assert on_gpu.device.type == "cuda"
    diff = (on_gpu.cpu() - on_cpu).abs()
    assert diff.mean() < 0.02 and diff.max() < 0.3  # nvJPEG and libjpeg-turbo round IDCTs differently


def test_latency_is_profiled_on_the_gpu_and_named() -> None:
    profile = profile_latency(build_base("tiny_cnn"), 32, batch_sizes=(1, 8), repeats=3, device=torch.device("cuda"))
    assert profile.device.startswith("cuda") and torch.cuda.get_device_name() in profile.device
