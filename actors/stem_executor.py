"""StemExecutor: a Ray actor serving many cameras' apps through one shared stem tree.

A thin async shell over `stemcell.sharing.StemRuntime`: it owns the GPU share, the threads, the
cross-camera batcher and the metrics. Inference runs on one worker thread so the event loop keeps
accepting requests (they queue into the next batch) while a batch runs; reconfiguration (loading
branches, swapping weights) runs on a second thread so it does not stall inference either.

Create with `.options(num_gpus=share, num_cpus=..., max_restarts=-1, max_task_retries=...)`: Ray's
fractional GPU is bookkeeping only, so on CUDA the share is also enforced as a per-process memory
fraction. Every handler is idempotent (retries deliver at least once). A restart re-runs the
constructor with no cameras: the caller (planner / state store) re-adds them.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import ray
import torch
from ray.util import metrics

from actors.gpu_share import enforce_share
from stemcell.accel import DevicePath
from stemcell.accel.decode import FrameDecoder
from stemcell.accel.precision import Backend, Precision
from stemcell.control.contracts import AppRun, ExecutorReady, ExecutorStats, MemoryReport, ServedApp
from stemcell.control.errors import UnknownCamera
from stemcell.imaging import resize_frames
from stemcell.ingest.batch import PulledBatch
from stemcell.models.inputs import to_input
from stemcell.package import load_package
from stemcell.sharing import CrossCameraBatcher, FrameResult, InferRequest, StemRuntime

log = logging.getLogger(__name__)
V = TypeVar("V")
_LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]


class StemExecutorShell:
    """The actor class itself (subclassed by `actors.routed_executor`); `StemExecutor` is its Ray actor."""

    def __init__(
        self,
        package_dir: str,
        *,
        share: float = 0.0,
        max_batch: int = 64,
        max_wait_ms: float = 4.0,
        max_queue_frames: int | None = None,
        precision: Precision = "fp32",
        backend: Backend = "torch",
        engine_dir: str | None = None,
        gpu_decode: bool = False,
        weight_cap_bytes: int | None = None,
    ) -> None:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        self._threads = max(1, int(cpus))
        torch.set_num_threads(self._threads)
        self._share = share
        enforce_share(share)  # Ray's fractional GPU is bookkeeping only (actors/gpu_share.py)
        # A CUDA OOM past the share fails that batch only (503 + Retry-After); see stemcell/accel/device_path.py.
        path = DevicePath.create(precision=precision, backend=backend, max_batch=max_batch, engine_dir=engine_dir)
        self._runtime = StemRuntime(load_package(package_dir), path=path, weight_cap_bytes=weight_cap_bytes)
        self._decoder = FrameDecoder(path.device, gpu=gpu_decode)  # infer_jpeg: nvJPEG, or the CPU
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="stem-infer")
        self._control_pool = ThreadPoolExecutor(1, thread_name_prefix="stem-control")
        self._decode_pool = ThreadPoolExecutor(1, thread_name_prefix="stem-decode")
        self._batcher: CrossCameraBatcher[InferRequest, list[FrameResult]] = CrossCameraBatcher(
            self._run_batch,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            max_queue_frames=max_queue_frames or 16 * max_batch,
        )
        self._frames = metrics.Counter("stemcell_frames_total", "Frames analysed", tag_keys=("camera",))
        self._latency = metrics.Histogram(
            "stemcell_infer_latency_ms", "Request latency inside the executor (queue + batch)",
            boundaries=_LATENCY_BOUNDARIES_MS, tag_keys=("camera",),
        )
        self._event = metrics.Gauge("stemcell_event_active", "1 while an app's event is on", tag_keys=("camera", "app"))
        self._events_on: dict[tuple[str, str], bool] = {}  # the gauge's last value per (camera, app)
        self._queue_depth = metrics.Gauge("stemcell_queue_depth_frames", "Frames waiting for a batch")
        self._gpu_share = metrics.Gauge("stemcell_gpu_share", "Fraction of a GPU this executor holds")
        self._gpu_share.set(share)

    async def _on(self, pool: ThreadPoolExecutor, fn: Callable[..., V], *args: Any) -> V:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def _run_batch(self, requests: list[InferRequest]) -> list[list[FrameResult] | Exception]:
        return await self._on(self._infer_pool, self._runtime.infer, requests)

    async def ready(self) -> ExecutorReady:
        seconds = await self._on(self._infer_pool, self._runtime.warm_up)
        return ExecutorReady(self._runtime.device.type, self._share, self._threads, self._runtime.input_size, seconds,
                             execution=self._runtime.path.plan.describe())

    async def add_camera(self, camera_id: str, apps: Sequence[AppRun], stream_fps: float | None = None) -> bool:
        """Make `apps` the camera's app set (idempotent); True when something changed."""
        return await self._on(self._control_pool, self._runtime.set_camera, camera_id, apps, stream_fps)

    async def remove_camera(self, camera_id: str) -> bool:
        return await self._on(self._control_pool, self._runtime.remove_camera, camera_id)

    async def infer_jpeg(self, camera_id: str, images: list[bytes], timestamps: list[float] | None = None) -> list[FrameResult]:
        """`infer` on still-encoded JPEGs: decoded (and resized) in one batch on this executor's GPU with
        `gpu_decode`, else on its CPU. Invalid images raise `ImageError` before anything is queued."""
        size = self._runtime.input_size
        frames = await self._on(self._decode_pool, self._decode, images, size)
        return await self.infer(camera_id, frames, timestamps)

    def _decode(self, images: list[bytes], size: int) -> torch.Tensor:
        norm = self._runtime.package.manifest.base.normalization  # as the package was trained
        with self._runtime.path.on_stream():  # ordered before the batch that uses it, on the same stream
            return self._decoder.to_input(images, size, mean=norm.mean, std=norm.std)

    async def infer(self, camera_id: str, frames: np.ndarray | torch.Tensor, timestamps: list[float] | None = None,
                    frame_size: tuple[int, int] | None = None) -> list[FrameResult]:
        """`frame_size`: (height, width) the camera sent the frames at when they were resized on the
        way (the ingress, the pull ingest); detect apps' boxes are served in those pixels."""
        if not self._runtime.has_camera(camera_id):
            raise UnknownCamera(camera_id)
        size = self._runtime.input_size
        sent = frame_size or (tuple(frames.shape[-3:-1]) if isinstance(frames, np.ndarray) else None)
        if isinstance(frames, np.ndarray) and frames.shape[-3:-1] != (size, size):
            # the direct API takes any size; the inference thread only ever sees model-size frames
            frames = await self._on(self._decode_pool, resize_frames, frames, size)
        request = InferRequest(camera_id, frames, timestamps, sent)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            results = await self._batcher.submit(request, request.num_frames)
        finally:
            self._queue_depth.set(self._batcher.queued_frames)
        self._record(camera_id, results, 1e3 * (loop.time() - started))
        return results

    async def _infer_pulled(self, batch: PulledBatch) -> list[FrameResult | BaseException]:
        """An ingest actor's interval of frames: model input of the whole batch in one conversion (the
        ingest sends uint8), every camera's request queued at once into the cross-camera batcher, and
        per frame its result or the error that concerns only its camera (e.g. `UnknownCamera`)."""
        size, norm = self._runtime.input_size, self._runtime.package.manifest.base.normalization
        inputs = to_input(batch.frames, size, mean=norm.mean, std=norm.std)
        requests = [InferRequest(camera, inputs[i : i + 1], [float(batch.timestamps[i])], batch.frame_size(i))
                    for i, camera in enumerate(batch.camera_ids)]
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            answers = await self._batcher.submit_many(requests, [1] * len(requests), complete=True)
        finally:
            self._queue_depth.set(self._batcher.queued_frames)
        latency_ms = 1e3 * (loop.time() - started)
        out: list[FrameResult | BaseException] = []
        for camera, answer in zip(batch.camera_ids, answers):
            if isinstance(answer, BaseException):
                out.append(answer)
            else:
                self._record(camera, answer, latency_ms)
                out.append(answer[0])
        return out

    def _record(self, camera_id: str, results: Sequence[FrameResult], latency_ms: float) -> None:
        """Metrics of one camera's answered request; the event gauge only when it changed."""
        tags = {"camera": camera_id}
        self._latency.observe(latency_ms, tags)
        self._frames.inc(len(results), tags)
        for r in results[-1].results if results else ():
            key = (camera_id, r.app)
            if self._events_on.get(key) is not r.event_active:
                self._events_on[key] = r.event_active
                self._event.set(float(r.event_active), {"camera": camera_id, "app": r.app})

    async def cameras(self) -> Mapping[str, tuple[ServedApp, ...]]:
        """What each camera runs now (camera id -> its apps)."""
        # Runtime reads take the lock a running batch holds: never wait for it on the event loop.
        return await self._on(self._control_pool, self._runtime.cameras)

    async def stats(self) -> ExecutorStats:
        batcher = self._batcher.stats()
        segments = await self._on(self._control_pool, self._runtime.segment_latency)
        return ExecutorStats(
            frames=batcher.frames,
            requests=batcher.requests,
            batches=batcher.batches,
            mean_batch_size=batcher.mean_batch_frames,
            queue_depth=batcher.queued_frames,
            p50_ms=batcher.p50_ms,
            p99_ms=batcher.p99_ms,
            app_runs=self._runtime.counters["app_runs"],
            app_reuses=self._runtime.counters["app_reuses"],
            segment_latency=tuple(segments),
            engines=self._runtime.path.engine_stats(),
        )

    async def memory_report(self) -> MemoryReport:
        """Measured at the running batch size (the mean so far; `max_batch` before any traffic)."""
        stats = self._batcher.stats()
        batch = max(1, round(stats.mean_batch_frames)) if stats.batches else self._batcher.max_batch
        report = await self._on(self._infer_pool, self._runtime.memory_report, batch)
        details = report.as_dict()
        gpu_total = None
        if self._runtime.device.type == "cuda":  # the Planner's memory floor for this executor's share
            details["cuda_memory_allocated"] = int(torch.cuda.memory_allocated(self._runtime.device))
            gpu_total = int(torch.cuda.get_device_properties(self._runtime.device).total_memory)
        return MemoryReport(bytes_merged=report.bytes_merged, activation_peak=report.activation.merged_peak,
                            batch_size=report.batch_size, cuda_max_memory_allocated=report.cuda_max_memory_allocated,
                            gpu_total_bytes=gpu_total, details=details)

    async def set_app_weights(self, app: str, camera_id: str | None, state: Mapping[str, torch.Tensor],
                              version: int, merged: bool = False) -> None:
        swapped = await self._on(self._control_pool, self._runtime.set_app_weights, app, camera_id, state, version,
                                 merged)
        log.info("app %s on %s: %d branches now at version %d", app, camera_id or "all cameras", swapped, version)


StemExecutor = ray.remote(StemExecutorShell)
