"""Segment -> TensorRT engine: ONNX export, then the TensorRT builder, with a dynamic batch profile.

Why ONNX + the TensorRT builder rather than torch-tensorrt: the package index has `tensorrt`
(tensorrt-cu12 / -cu13 wheels for 10.x and 11.x) and `onnx`/`onnxscript`, but no torch-tensorrt
build matching the pinned torch; the ONNX route needs only those wheels and also gives an engine
file that can be cached and reloaded without torch-tensorrt at serving time.

The network is strongly typed (the only mode TensorRT 11 has; a flag in 10.x): the segment is
exported in the serving precision itself (fp16/bf16 weights and input), so the engine's input and
output have the torch path's dtype and swap in for the segment without casts.

`tensorrt` is imported lazily (the optional `gpu` extra): this module loads without it.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from stemcell.accel.engine_cache import EngineKey
from stemcell.accel.precision import DTYPES

log = logging.getLogger(__name__)

INPUT, OUTPUT = "input", "output"
WORKSPACE_BYTES = 1 << 30


def tensorrt_version() -> str | None:
    """TensorRT's version when the `gpu` extra is installed and loads, else None."""
    try:
        import tensorrt
    except Exception:  # noqa: BLE001 - missing wheel or missing CUDA libraries: both mean "no TensorRT"
        return None
    return str(tensorrt.__version__)


def export_onnx(module: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype, max_batch: int) -> bytes:
    """The segment as ONNX in `dtype`, batch axis dynamic in 1..max_batch (other axes fixed)."""
    device = next(module.parameters(), torch.empty(0)).device
    model = copy.deepcopy(module).to(dtype=dtype).eval()
    example = torch.zeros(min(2, max_batch), *input_shape, device=device, dtype=dtype)
    batch = torch.export.Dim("batch", min=1, max=max(2, max_batch))
    program = torch.onnx.export(model, (example,), input_names=[INPUT], output_names=[OUTPUT],
                                dynamic_shapes=({0: batch},), dynamo=True, optimize=True, verbose=False)
    # TensorRT's ONNX parser lags the onnx package: IR version 10 is what its 10.x parsers accept.
    program.model_proto.ir_version = min(program.model_proto.ir_version, 10)
    return program.model_proto.SerializeToString()


def build_engine(module: nn.Module, key: EngineKey) -> bytes:
    """`Builder` for `EngineManager`: ONNX export + TensorRT build with profile 1..max_batch."""
    import tensorrt as trt

    onnx_bytes = export_onnx(module, key.input_shape, DTYPES[key.precision], key.max_batch)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strongly is None else 1 << int(strongly))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the exported segment: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    shape = tuple(key.input_shape)
    profile.set_shape(INPUT, (1, *shape), (max(1, key.max_batch // 2), *shape), (key.max_batch, *shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT build failed (see its log above)")
    return bytes(serialized)


class TensorRTRunner:
    """A deserialised engine called like the segment: (B, *input_shape) on the GPU -> its output.

    Runs on the caller's current CUDA stream (the executor's own), so it orders with the torch
    work around it without extra synchronisation.
    """

    def __init__(self, blob: bytes, key: EngineKey) -> None:
        import tensorrt as trt

        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine: Any = self._runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise RuntimeError(f"engine {key.digest()[:12]} does not deserialise in TensorRT {trt.__version__}")
        self.context: Any = self.engine.create_execution_context()
        self.key = key
        self.dtype = DTYPES[key.precision]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.key.max_batch:  # above the profile: in chunks
            return torch.cat([self(part) for part in x.split(self.key.max_batch)])
        x = x.to(self.dtype).contiguous()
        self.context.set_input_shape(INPUT, tuple(x.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(OUTPUT)), device=x.device, dtype=self.dtype)
        self.context.set_tensor_address(INPUT, x.data_ptr())
        self.context.set_tensor_address(OUTPUT, out.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(x.device).cuda_stream):
            raise RuntimeError(f"engine {self.key.digest()[:12]} failed to run")
        return out


def load_engine(blob: bytes, key: EngineKey) -> TensorRTRunner:
    """`Loader` for `EngineManager`."""
    return TensorRTRunner(blob, key)
