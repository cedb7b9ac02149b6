"""Engines off the serving path, with a fake builder: torch until ready, one engine per distinct
segment, cache hits, invalidation, failures; and the StemRuntime serving through them."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stemcell.accel import DevicePath, EngineCache, EngineKey, EngineManager, ExecutionPlan
from stemcell.package import MPackage, load_package
from stemcell.models import build_base
from stemcell.sharing import InferRequest, StemRuntime, StemTree, perturbed_app_model
from tests.helpers.builders import tiny_package

SHAPE = (8, 4, 4)


class FakeBuilder:
    """Builds an "engine" that is the segment itself (kept by digest), counting builds; can be held."""

    def __init__(self, hold: bool = False, fail: bool = False) -> None:
        self.modules: dict[str, nn.Module] = {}
        self.builds: list[EngineKey] = []
        self.release = threading.Event()
        self.fail = fail
        if not hold:
            self.release.set()

    def __call__(self, module: nn.Module, key: EngineKey) -> bytes:
        assert self.release.wait(10), "test never released the build"
        if self.fail:
            raise RuntimeError("builder exploded")
        self.builds.append(key)
        self.modules[key.segment_hash] = module
        return key.segment_hash.encode()


class FakeLoader:
    def __init__(self, builder: FakeBuilder) -> None:
        self.builder = builder
        self.loads: list[EngineKey] = []
        self.calls: dict[str, int] = {}

    def __call__(self, blob: bytes, key: EngineKey):  # noqa: ANN204 - returns a Runner
        self.loads.append(key)
        digest = blob.decode()
        module = self.builder.modules[digest]

        def run(x: torch.Tensor) -> torch.Tensor:
            self.calls[digest] = self.calls.get(digest, 0) + 1
            return module(x)

        return run


def _manager(tmp_path: Path, builder: FakeBuilder, precision: str = "fp16", trt: str = "10.13.0") -> tuple[EngineManager, FakeLoader]:
    loader = FakeLoader(builder)
    manager = EngineManager(EngineCache(tmp_path), builder, loader, precision=precision, max_batch=16,
                            gpu_model="NVIDIA L4", tensorrt_version=trt)
    return manager, loader


def test_request_never_waits_for_the_build(tmp_path: Path) -> None:
    builder = FakeBuilder(hold=True)
    manager, _ = _manager(tmp_path, builder)
    assert manager.request("d1", nn.Identity(), SHAPE)  # returns while the build is held
    assert manager.runner("d1", SHAPE) is None and manager.stats().building == 1  # torch path meanwhile
    builder.release.set()
    assert manager.wait(10)
    assert manager.runner("d1", SHAPE) is not None
    assert manager.stats().ready == 1 and manager.stats().built == 1


def test_identical_segments_share_one_build_and_the_cache_serves_the_next_process(tmp_path: Path) -> None:
    builder = FakeBuilder()
    manager, _ = _manager(tmp_path, builder)
    assert manager.request("d1", nn.Identity(), SHAPE)
    manager.request("d1", nn.Identity(), SHAPE)  # the same content at another tree node
    manager.request("d1", nn.Identity(), (8, 2, 2))  # the same weights at another input shape: another engine
    manager.wait(10)
    assert [k.input_shape for k in builder.builds] == [SHAPE, (8, 2, 2)]
    again, loader = _manager(tmp_path, builder)  # a restarted executor on the same node
    again.request("d1", nn.Identity(), SHAPE)
    again.wait(10)
    assert len(builder.builds) == 2 and len(loader.loads) == 1 and again.stats().loaded == 1


def test_another_precision_or_tensorrt_version_builds_anew(tmp_path: Path) -> None:
    builder = FakeBuilder()
    for precision, trt in (("fp16", "10.13.0"), ("bf16", "10.13.0"), ("fp16", "10.14.0"), ("fp16", "10.13.0")):
        manager, _ = _manager(tmp_path, builder, precision, trt)
        manager.request("d1", nn.Identity(), SHAPE)
        manager.wait(10)
    assert [(k.precision, k.tensorrt_version) for k in builder.builds] == [
        ("fp16", "10.13.0"), ("bf16", "10.13.0"), ("fp16", "10.14.0")]  # the last one was a cache hit


def test_a_failed_build_leaves_the_segment_on_torch_and_is_not_retried(tmp_path: Path) -> None:
    builder = FakeBuilder(fail=True)
    manager, _ = _manager(tmp_path, builder)
    manager.request("d1", nn.Identity(), SHAPE)
    manager.wait(10)
    assert manager.runner("d1", SHAPE) is None and manager.stats().failed == 1
    assert not manager.request("d1", nn.Identity(), SHAPE)


def test_byte_identical_segments_at_different_tree_nodes_share_one_engine(tmp_path: Path) -> None:
    """Two apps retrained only in segment 2 resp. 3: their segments 4 and 5 are the base's, run at
    separate nodes (different inputs) but are one content, one input shape: one engine each."""
    base = build_base("tiny_cnn")
    builder = FakeBuilder()
    manager, _ = _manager(tmp_path, builder)
    path = DevicePath(torch.device("cpu"), ExecutionPlan("fp32", "tensorrt", ("fp32", "tensorrt")), manager)
    path.bind(base, 32)
    tree = StemTree(base.num_segments, engines=path.runner)
    tree.add(("c", "a"), perturbed_app_model(base, 2, seed=1, own={2}))
    tree.add(("c", "b"), perturbed_app_model(base, 2, seed=2, own={3}))
    segments = [(n.digest, n.module, n.depth) for n in tree.nodes() if n.depth < base.num_segments]
    path.segments_changed(segments)
    manager.wait(10)
    assert len(segments) == 10 and len(builder.builds) == 8  # nodes of segments 4 and 5 appear twice


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> MPackage:
    root = tmp_path_factory.mktemp("pkg")
    tiny_package(root, branchpoints=(2, 4), apps=("car", "person"))
    return load_package(root)


def test_runtime_serves_through_engines_once_ready_with_the_same_results(package: MPackage, tmp_path: Path) -> None:
    builder = FakeBuilder(hold=True)
    manager, loader = _manager(tmp_path, builder)
    path = DevicePath(torch.device("cpu"), ExecutionPlan("fp32", "tensorrt", ("fp32", "tensorrt")), manager)
    runtime, reference = StemRuntime(package, path=path), StemRuntime(package)
    apps = [{"app": "car", "branchpoint": 2, "fps": 10}, {"app": "person", "branchpoint": 4, "fps": 10}]
    frames = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    for rt in (runtime, reference):
        rt.set_camera("c0", apps)
        rt.set_camera("c1", apps[:1])
    before = runtime.infer([InferRequest("c0", frames)])[0]  # builds still held: the torch path serves
    assert not loader.calls
    builder.release.set()
    manager.wait(10)
    segments = [n for n in runtime.tree.nodes() if n.depth < runtime.tree.num_segments]
    assert len({n.digest for n in segments}) == len(builder.builds)
    after = runtime.infer([InferRequest("c0", frames)])[0]
    expected = reference.infer([InferRequest("c0", frames)])[0]
    assert isinstance(before, list) and isinstance(after, list) and isinstance(expected, list)
    assert sum(loader.calls.values()) == len(segments)  # every segment node ran as an engine, once
    for got, want in zip(after, expected):
        for g, w in zip(got.results, want.results):
            assert g.score == pytest.approx(w.score, abs=1e-6)
    runtime.remove_camera("c0")
    runtime.remove_camera("c1")
    assert manager.stats().ready == 0  # engines of segments that left the tree are dropped (the disk keeps them)
