"""The device path on a CPU: OOM in a batch is a clean 503-class error and the runtime recovers;
the host->device path is a no-op; the ONNX export TensorRT builds from is correct and batch-dynamic."""
from __future__ import annotations

import asyncio
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from stemcell.accel import DevicePath
from stemcell.accel.decode import FrameDecoder
from stemcell.imaging import ImageError, decode_for_model, encode_jpeg
from stemcell.models import build_base, to_input
from stemcell.package import MPackage, load_package
from stemcell.sharing import CrossCameraBatcher, DeviceOutOfMemory, InferRequest, Overloaded, StemRuntime
from tests.helpers.builders import tiny_package


class OomOnce(nn.Module):
    """Wraps a segment; the first call raises what the caching allocator raises past the share."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.armed = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            self.armed = False
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> MPackage:
    root = tmp_path_factory.mktemp("pkg")
    tiny_package(root, branchpoints=(2,), apps=("car",))
    return load_package(root)


def _frames(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def test_an_oom_fails_the_batch_with_a_503_error_and_the_next_batch_is_served(package: MPackage) -> None:
    runtime = StemRuntime(package)
    runtime.set_camera("c0", [{"app": "car", "branchpoint": 2, "fps": 10}])
    runtime.set_camera("c1", [{"app": "car", "branchpoint": 2, "fps": 10}])
    first = next(iter(runtime.tree.root.children.values()))
    first.module = OomOnce(first.module)

    async def serve() -> list[object]:
        batcher: CrossCameraBatcher = CrossCameraBatcher(
            lambda reqs: asyncio.to_thread(runtime.infer, reqs), max_batch=8, max_wait_ms=20)
        failed = await asyncio.gather(*(batcher.submit(InferRequest(c, _frames(2)), 2) for c in ("c0", "c1")),
                                      return_exceptions=True)
        served = await batcher.submit(InferRequest("c0", _frames(3)), 3)
        await batcher.close()
        return [*failed, served]

    oom_c0, oom_c1, served = asyncio.run(serve())
    for error in (oom_c0, oom_c1):  # both cameras of the batch: refused, not crashed
        assert isinstance(error, DeviceOutOfMemory) and isinstance(error, Overloaded)  # the ingress's 503 family
        assert error.retry_after_s > 0 and "out of memory" in str(error)
    assert isinstance(served, list) and len(served) == 3 and all(r.results[0].fresh for r in served)
    copy = pickle.loads(pickle.dumps(oom_c0))  # crosses the Ray boundary to the ingress intact
    assert isinstance(copy, DeviceOutOfMemory) and copy.retry_after_s == oom_c0.retry_after_s


def test_on_a_cpu_the_host_path_is_untouched() -> None:
    path = DevicePath.create(device="cpu")
    x = torch.randn(4, 3, 8, 8)
    assert path.stream is None and torch.equal(path.to_device([x[:1], x[1:]]), x)
    with path.on_stream():
        pass
    assert path.warm_up(build_base("tiny_cnn"), 32) > 0


def test_exported_segment_is_batch_dynamic_and_matches_torch() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    from stemcell.accel.tensorrt_engine import INPUT, export_onnx

    segment = build_base("tiny_cnn").segments[1].eval()
    shape = (16, 16, 16)
    proto = onnx.load_from_string(export_onnx(segment, shape, torch.float32, max_batch=8))
    onnx.checker.check_model(proto)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == list(shape)
    evaluator = ReferenceEvaluator(proto)
    for batch in (1, 5):
        x = torch.randn(batch, *shape)
        (y,) = evaluator.run(None, {INPUT: x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(y, segment(x).numpy(), atol=1e-4)


def test_gpu_decode_falls_back_on_the_cpu_with_the_cpu_paths_checks_and_result(caplog: pytest.LogCaptureFixture) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
    jpeg = encode_jpeg(rgb)
    with caplog.at_level("WARNING", logger="stemcell.accel"):
        decoder = FrameDecoder("cpu", gpu=True)
    assert not decoder.gpu and len(caplog.records) == 1
    x = decoder.to_input([jpeg, jpeg], 32)
    want = to_input(np.stack([decode_for_model(jpeg, "image/jpeg", 32)] * 2), 32)  # what the ingress sends
    assert x.shape == (2, 3, 32, 32) and torch.equal(x, want)
    with pytest.raises(ImageError, match="truncated"):
        decoder.decode([jpeg, jpeg[: len(jpeg) // 2]])  # refused before anything is decoded
