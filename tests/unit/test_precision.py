"""Precision/backend: fallback rules, the one warning line, config validation, reduced-precision accuracy."""
from __future__ import annotations

import logging

import pytest
import torch
from pydantic import ValidationError

from stemcell.accel import DeviceFacts, DevicePath, plan_execution, resolve_execution
from stemcell.models import build_base
from stemcell.serve_config import ExecutorSection
from stemcell.sharing import StemTree, perturbed_app_model

CPU = DeviceFacts("cpu", bf16_supported=False, tensorrt_version=None)
AMPERE_TRT = DeviceFacts("cuda", bf16_supported=True, tensorrt_version="10.13.0", gpu_model="NVIDIA A10G")
TURING_NO_TRT = DeviceFacts("cuda", bf16_supported=False, tensorrt_version=None, gpu_model="Tesla T4")
SCORE_TOLERANCE = 0.01  # max |sigmoid(logit) - fp32's| for fp16 and bf16 (docs/gpu.md)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("backend", ["torch", "tensorrt"])
def test_a_cpu_serves_fp32_torch_whatever_is_asked(precision: str, backend: str) -> None:
    plan = resolve_execution(precision, backend, CPU)  # type: ignore[arg-type]
    assert (plan.precision, plan.backend, plan.dtype) == ("fp32", "torch", torch.float32)
    assert plan.requested == (precision, backend)
    assert (plan.reason is None) == ((precision, backend) == ("fp32", "torch"))


def test_a_gpu_honours_what_it_has_and_falls_back_on_what_it_lacks() -> None:
    assert resolve_execution("fp16", "tensorrt", AMPERE_TRT).describe() == "fp16/tensorrt"
    assert resolve_execution("bf16", "torch", AMPERE_TRT).reason is None
    no_bf16 = resolve_execution("bf16", "tensorrt", TURING_NO_TRT)
    assert no_bf16.describe() == "fp32/torch"
    assert "bf16" in str(no_bf16.reason) and "tensorrt" in str(no_bf16.reason)
    assert resolve_execution("fp16", "tensorrt", TURING_NO_TRT).describe() == "fp16/torch"
    with pytest.raises(ValueError):
        resolve_execution("fp8", "torch", AMPERE_TRT)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback")
def test_cpu_fallback_is_one_warning_line_never_an_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stemcell.accel"):
        path = DevicePath.create(precision="bf16", backend="tensorrt")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    assert "bf16/tensorrt" in warnings[0].getMessage() and "fp32/torch" in warnings[0].getMessage()
    assert path.dtype is None and path.engines is None and path.engine_stats() is None
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stemcell.accel"):
        assert plan_execution("fp32", "torch", torch.device("cpu")).reason is None
    assert not caplog.records


def test_serve_yaml_validates_precision_and_backend() -> None:
    section = ExecutorSection(precision="fp16", backend="tensorrt", engine_dir="/var/cache/engines", gpu_decode=True)
    assert section.device_options() == {"precision": "fp16", "backend": "tensorrt", "engine_dir": "/var/cache/engines",
                                        "gpu_decode": True}
    assert ExecutorSection().device_options() == {"precision": "fp32", "backend": "torch", "engine_dir": None,
                                                  "gpu_decode": False}
    for bad in ({"precision": "fp8"}, {"backend": "onnxruntime"}, {"precision": "half"}, {"gpu_decode": "maybe"}):
        with pytest.raises(ValidationError):
            ExecutorSection(**bad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_tree_stays_within_tolerance_of_fp32(dtype: torch.dtype) -> None:
    """The torch path at fp16/bf16 (runs on a CPU too, where serving itself falls back to fp32)."""
    base = build_base("tiny_cnn")
    models = {("c", "a"): perturbed_app_model(base, 3, seed=1), ("c", "b"): perturbed_app_model(base, 5, seed=2)}
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scores = {}
    for dt in (None, dtype):
        tree = StemTree(base.num_segments, "cpu", dt)
        for key, model in models.items():
            tree.add(key, model)
        scores[dt] = {k: torch.sigmoid(v) for k, v in tree.forward(x, {k: range(8) for k in models}).items()}
    for key in models:
        assert scores[dtype][key].dtype == torch.float32  # heads hand back fp32 whatever ran
        assert float((scores[dtype][key] - scores[None][key]).abs().max()) < SCORE_TOLERANCE
