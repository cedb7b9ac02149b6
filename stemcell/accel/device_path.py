"""One executor's device path: dtype, its own CUDA stream, pinned host staging, TensorRT engines.

Everything the StemRuntime does differently on a GPU lives here, so the runtime stays one code
path and this object is a no-op on the CPU:

* one CUDA stream per executor: executors sharing a GPU (or an executor and a retrain worker)
  each queue on their own stream instead of all on the default one;
* a pinned (page-locked) host buffer reused across batches and a non-blocking copy from it, so
  the host->device copy is a DMA on the executor's stream instead of a pageable staging copy;
* engines: with backend `tensorrt`, every stem segment that enters the tree is handed to the
  `EngineManager`, and the tree runs a segment's engine once it is ready (torch until then);
* out-of-memory: a CUDA OOM in a batch becomes `DeviceOutOfMemory` for that batch's requests
  (HTTP 503 + Retry-After), after the allocator's cache is emptied; the executor keeps serving.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from stemcell.accel.engine_cache import EngineCache
from stemcell.accel.engines import EngineManager, Runner, Shape
from stemcell.accel.precision import Backend, ExecutionPlan, Precision, device_facts, plan_execution
from stemcell.control.contracts import EngineStats

if TYPE_CHECKING:
    from stemcell.sharing.stem_tree import LeafKey, Observer, Rows, StemTree

log = logging.getLogger(__name__)


class DevicePath:
    def __init__(self, device: torch.device, plan: ExecutionPlan, engines: EngineManager | None = None) -> None:
        self.device = device
        self.plan = plan
        self.engines = engines
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._pinned = torch.empty(0, pin_memory=False)
        self._segment_inputs: list[Shape] = []  # per segment depth: one frame's input shape

    @classmethod
    def create(
        cls, *, device: torch.device | str | None = None, precision: Precision = "fp32", backend: Backend = "torch",
        max_batch: int = 64, engine_dir: str | Path | None = None,
    ) -> DevicePath:
        """The path for this process: fallbacks decided (one warning line), engines set up if used."""
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        plan = plan_execution(precision, backend, dev)
        engines = None
        if plan.backend == "tensorrt":
            from stemcell.accel.tensorrt_engine import build_engine, load_engine

            facts = device_facts(dev)
            cache = EngineCache(engine_dir or Path.home() / ".cache" / "stemcell" / "engines")
            engines = EngineManager(cache, build_engine, load_engine, precision=plan.precision, max_batch=max_batch,
                                    gpu_model=str(facts.gpu_model), tensorrt_version=str(facts.tensorrt_version))
        return cls(dev, plan, engines)

    @property
    def dtype(self) -> torch.dtype | None:
        """The stem tree's dtype (None: as stored, fp32)."""
        return None if self.plan.precision == "fp32" else self.plan.dtype

    # -- engines ----------------------------------------------------------------------------------

    def bind(self, base: nn.Module, input_size: int) -> None:
        """Learn each segment depth's input shape (every app model has the base's architecture)."""
        if self.engines is None:
            return
        shapes: list[Shape] = []
        x = torch.zeros(1, 3, input_size, input_size)
        with torch.inference_mode():
            for segment in base.segments:  # type: ignore[union-attr]
                shapes.append(tuple(x.shape[1:]))
                x = segment(x)
        self._segment_inputs = shapes

    def segments_changed(self, segments: list[tuple[str, nn.Module, int]]) -> None:
        """The tree's (digest, module, depth) segments now: request missing engines, drop unused ones."""
        if self.engines is None:
            return
        live = {(digest, self._segment_inputs[depth]) for digest, _, depth in segments}
        for digest, module, depth in segments:
            self.engines.request(digest, module, self._segment_inputs[depth])
        self.engines.forget(live)

    def engine_stats(self) -> EngineStats | None:
        """Ready/building/failed engines and build time; None without the tensorrt backend."""
        return None if self.engines is None else self.engines.stats()

    def runner(self, digest: str, input_shape: Shape) -> Runner | None:
        return None if self.engines is None else self.engines.runner(digest, input_shape)

    # -- the hot path -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def on_stream(self) -> Iterator[None]:
        """Run the enclosed work on this executor's own CUDA stream (nothing on the CPU)."""
        if self.stream is None:
            yield
            return
        with torch.cuda.stream(self.stream):
            yield

    def to_device(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The batch's parts, in order, as one tensor on the device. Parts already there (decoded on
        the GPU) stay; the host parts go together through the pinned buffer in one DMA."""
        if self.stream is None:
            return torch.cat([p.to(self.device) for p in parts])
        host = [i for i, p in enumerate(parts) if p.device != self.device]
        if host:
            staged = self._stage(torch.cat([parts[i] for i in host]))
            parts = list(parts)
            for i, chunk in zip(host, staged.split([len(parts[i]) for i in host])):
                parts[i] = chunk
        return torch.cat(parts)

    def _stage(self, x: torch.Tensor) -> torch.Tensor:
        """Host -> device via the reused pinned buffer and a non-blocking copy.

        Reusing the buffer is safe because each batch ends by copying its results to the host on
        the same stream, which waits for this copy to finish before the next batch refills it.
        """
        n = x.numel()
        if self._pinned.numel() < n or self._pinned.dtype != x.dtype:
            self._pinned = torch.empty(max(n, 2 * self._pinned.numel()), dtype=x.dtype, pin_memory=True)
        staged = self._pinned[:n].view_as(x)
        staged.copy_(x)
        return staged.to(self.device, non_blocking=True)

    def warm_up(self, base: nn.Module, input_size: int) -> float:
        """Run `base` once on the device (CUDA context, kernel selection); returns seconds."""
        started = time.perf_counter()
        model = copy.deepcopy(base).to(self.device, self.dtype).eval()
        with torch.inference_mode(), self.on_stream():
            model(torch.zeros(2, 3, input_size, input_size, device=self.device, dtype=self.dtype))
        del model
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
        return time.perf_counter() - started

    def forward(self, tree: StemTree, parts: list[torch.Tensor], rows: Rows, observer: Observer | None = None,
                ) -> dict[LeafKey, torch.Tensor]:
        """`tree.forward` of the batch's parts on this executor's stream; logits on the host.

        A CUDA OOM (the batch does not fit the executor's memory share) empties the allocator's
        cache, so the next batch can fit, and raises `DeviceOutOfMemory`: its requests get 503.
        """
        try:
            with self.on_stream():
                out = tree.forward(self.to_device(parts), rows, observer)
                return {key: value.cpu() for key, value in out.items()}
        except torch.OutOfMemoryError as exc:
            from stemcell.sharing.batcher import DeviceOutOfMemory  # late: stemcell.sharing imports this module

            detail = str(exc).splitlines()[0][:200]
            log.warning("CUDA out of memory in a batch (its requests get 503): %s", detail)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise DeviceOutOfMemory(detail) from exc

    def close(self) -> None:
        if self.engines is not None:
            self.engines.close()
