"""Which precision and backend an executor really runs, decided once from the config and the device.

A policy as a pure function (`resolve_execution`) over what the process can see (CUDA, bf16
support, an importable TensorRT), so the fallback rules are tested without a GPU. A request the
device cannot honour is never an error: serving on fp32/torch beats not serving, and the one
warning line says what was asked and what runs instead.

CPU decision: every CPU request falls back to fp32/torch, bf16 included. torch does run bf16
convolutions on a CPU, but without AMX they are slower than fp32 and the planner's latency table
was measured in fp32, so honouring it would only lose accuracy and speed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "bf16"]
Backend = Literal["torch", "tensorrt"]
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class DeviceFacts:
    """What the serving process can use; gathered by `device_facts`, written by hand in tests."""

    device_type: str  # "cuda" or "cpu"
    bf16_supported: bool  # torch.cuda.is_bf16_supported() (Ampere and newer)
    tensorrt_version: str | None  # tensorrt.__version__, None when it does not import
    gpu_model: str | None = None  # torch.cuda.get_device_name(), None on the CPU


@dataclass(frozen=True)
class ExecutionPlan:
    """The decision: what runs, and why it differs from the request (if it does)."""

    precision: Precision  # weights and activations of the torch path (and the TensorRT build flag)
    backend: Backend  # "tensorrt": segments run as engines once built, torch until then
    requested: tuple[str, str]  # (precision, backend) as configured
    reason: str | None = None  # the warning line's cause; None when the request is honoured

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    def describe(self) -> str:
        return f"{self.precision}/{self.backend}"


def resolve_execution(precision: Precision, backend: Backend, facts: DeviceFacts) -> ExecutionPlan:
    """fp16/bf16/TensorRT need CUDA; bf16 needs a GPU that has it; TensorRT needs the `gpu` extra."""
    if precision not in DTYPES or backend not in ("torch", "tensorrt"):
        raise ValueError(f"unknown precision/backend {precision}/{backend}")
    requested = (precision, backend)
    if facts.device_type != "cuda":
        if requested == ("fp32", "torch"):
            return ExecutionPlan("fp32", "torch", requested)
        return ExecutionPlan("fp32", "torch", requested, "no CUDA device")
    reasons = []
    if precision == "bf16" and not facts.bf16_supported:
        reasons.append(f"{facts.gpu_model or 'this GPU'} has no bf16")
        precision = "fp32"
    if backend == "tensorrt" and facts.tensorrt_version is None:
        reasons.append("tensorrt does not import (pip install 'stemcell[gpu]')")
        backend = "torch"
    return ExecutionPlan(precision, backend, requested, "; ".join(reasons) or None)


def device_facts(device: torch.device) -> DeviceFacts:
    """Look at this process: CUDA, bf16 and TensorRT (imported lazily: it is an optional extra)."""
    if device.type != "cuda":
        return DeviceFacts("cpu", False, None)
    from stemcell.accel.tensorrt_engine import tensorrt_version

    return DeviceFacts("cuda", torch.cuda.is_bf16_supported(), tensorrt_version(), torch.cuda.get_device_name(device))


def plan_execution(precision: Precision, backend: Backend, device: torch.device) -> ExecutionPlan:
    """`resolve_execution` on this process's facts, with the one warning line when it falls back."""
    plan = resolve_execution(precision, backend, device_facts(device))
    if plan.reason is not None:
        log.warning("executors.precision/backend %s/%s not available (%s): serving %s on %s",
                    *plan.requested, plan.reason, plan.describe(), device)
    return plan
