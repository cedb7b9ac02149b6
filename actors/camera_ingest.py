"""CameraIngest: a CPU actor that pulls up to `ingest.cameras_per_actor` cameras' streams.

One reader thread per camera decodes with OpenCV's FFmpeg backend (`cv2.CAP_FFMPEG`) into a
newest-frame slot (`stemcell.ingest.NewestFrameSlot`); one pump thread takes each camera's newest
frame at its analysis rate and sends the frames of all due cameras to their executors in one
`infer_many` call per executor: no HTTP, no JPEG round trip. Only frames taken are resized, straight
from the decoded BGR frame to model size with the resize training uses
(`stemcell.data.dataset.resize_square`, area-averaged, in OpenCV without the GIL), then made model
input in one `to_input` call per batch: the full-size frame is never converted to float (that
conversion cost more than the H.264 decoding of a 720p frame). A failed open or read is never an
exception out of the actor: it feeds the camera's state machine (`stemcell.ingest.CameraHealth`),
which picks the reconnect delay and the state the fleet list shows. Results go to the one event hub
in batches (`actors.event_hub.EventForwarder`), as the ingress's do for pushed frames, so every
camera's events are tracked and delivered in one place. Each camera's newest analysed frame and its
results are kept as references (`stemcell.latest_frames.LatestFrames`, no encoding on the frame path)
for `GET /cameras/{id}/snapshot` and `/latest`, which ask this actor for pulled cameras.

Restarts (`max_restarts=-1`) re-run the constructor, which re-attaches every camera the StateStore
assigns to this actor's name (the camera's stored config keeps its `source` and `ingest_actor`).
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from actors.event_hub import EventForwarder
from actors.ingest_metrics import REPORT_EVERY_S, IngestMetrics
from actors.live_feed import LiveFeed
from stemcell.control.contracts import CameraSpec
from stemcell.control.errors import Moved, UnknownCamera
from stemcell.control.placement import camera_slot
from stemcell.control.roles import executor_role
from stemcell.data.dataset import resize_square
from stemcell.ingest import (
    Backoff,
    CameraHealth,
    HealthSnapshot,
    NewestFrameSlot,
    Source,
    check_source,
)
from stemcell.latest_frames import LatestFrames, Snapshot
from stemcell.models.inputs import to_input
from stemcell.package.store import load_package
from stemcell.scheduling.shares import placement_index
from stemcell.serve_config import ServeConfig

log = logging.getLogger(__name__)
_CAPTURE_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_OPEN_LOCK = threading.Lock()  # FFmpeg reads its options from the environment while opening
_IDLE_S = 0.01  # pump period when no camera is due (10 ms: well under a frame at 30 fps)


def ingest_actor_name(config: ServeConfig, index: int) -> str:
    """The name of CameraIngest actor `index` (stored with each camera it pulls)."""
    return f"{config.ingest.name_prefix}-{index}"


class _Reader:
    """One camera: its reader thread, newest frame, health and analysis schedule."""

    def __init__(self, camera_id: str, source: Source, fps: float, backoff: Backoff, timeout_s: float,
                 enabled: bool) -> None:
        self.camera_id, self.source, self.fps = camera_id, source, fps
        self.slot: NewestFrameSlot[np.ndarray] = NewestFrameSlot()
        self.health = CameraHealth(backoff, enabled=enabled)
        self.next_due = 0.0
        self._timeout_ms = int(timeout_s * 1000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"ingest-{camera_id}")
        if enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.health.stop()

    def _open(self) -> cv2.VideoCapture:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self._timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, self._timeout_ms]
        with _OPEN_LOCK:
            os.environ[_CAPTURE_ENV] = self.source.capture_options()
            return cv2.VideoCapture(self.source.location, cv2.CAP_FFMPEG, params)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reason = self._stream()
            except Exception as exc:  # noqa: BLE001 - a broken source must never end the thread
                reason = f"{type(exc).__name__}: {exc}"
            if self._stop.is_set():
                return
            delay = self.health.failed(reason, random.random())
            log.info("camera %s: %s; next try in %.1f s", self.camera_id, reason, delay)
            self._stop.wait(delay)

    def _stream(self) -> str:
        """Read until the stream fails or the camera stops; returns why it ended."""
        cap = self._open()
        try:
            if not cap.isOpened():
                return f"cannot open {self.source.url}"
            looped = self.source.kind == "file"
            period = 1.0 / (cap.get(cv2.CAP_PROP_FPS) or 25.0) if looped else 0.0
            next_at = time.monotonic()
            while not self._stop.is_set():
                ok, frame = cap.read()
                if not ok and looped:  # a file loops: rewind and read again
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, frame = cap.read()
                if not ok or frame is None:
                    return f"stream ended or read failed: {self.source.url}"
                self.health.frame(time.monotonic(), time.time())
                self.slot.put(frame, time.time())
                if looped:  # a file is read as fast as the disk allows: pace it at its own frame rate
                    next_at += period
                    self._stop.wait(max(0.0, next_at - time.monotonic()))
            return "stopped"
        finally:
            cap.release()

    def snapshot(self) -> HealthSnapshot:
        return self.health.snapshot(time.monotonic(), self.slot.dropped)


class CameraIngestShell:
    """The actor class; `CameraIngest` is its Ray actor (see `start_ingest`)."""

    def __init__(self, config: dict[str, Any]) -> None:
        from actors.state_store import get_or_create_state_store

        self.config = ServeConfig.model_validate(config)
        ing = self.config.ingest
        self._backoff = Backoff(ing.backoff_base_s, max(ing.backoff_cap_s, ing.backoff_base_s), 0.5,
                                ing.max_failures, ing.offline_retry_s)
        manifest = load_package(self.config.package_dir).manifest
        self._size, self._norm = manifest.base.input_size, manifest.base.normalization
        self._name = ray.get_runtime_context().get_actor_name() or "ingest"
        self._store = get_or_create_state_store(str(self.config.state_path), namespace=self.config.executors.namespace)
        self._lock = threading.Lock()
        self._readers: dict[str, _Reader] = {}
        self._slots: dict[str, int] = {}  # camera -> executor slot the store placed it on (from its config)
        self._executors: dict[int, ActorHandle] = {}
        self._send_pool = ThreadPoolExecutor(min(4, self.config.executors.count), thread_name_prefix="ingest-send")
        self._sending: set[int] = set()  # executor slots with a call in flight
        self._events = EventForwarder(self.config)  # results to the event hub, in batches (`actors.event_hub`)
        self._events.follow_in_thread()
        # newest analysed frame per camera: the decoded frame (the picture an operator wants, not the
        # square-squeezed model input), a reference the events already share, so no copy; bounded in bytes
        self._latest = LatestFrames(self.config.ingest.latest_max_bytes)
        self._live = LiveFeed(self.config, self._size) if self.config.learning.enabled else None  # live continual learning
        restored = 0
        for record in ray.get(self._store.list_cameras.remote()):
            if record.config.get("ingest_actor") == self._name and record.config.get("source"):
                self.attach(record.camera_id, record.config)
                restored += 1
        log.info("%s: re-attached %d camera(s) from the StateStore", self._name, restored)
        threading.Thread(target=self._pump, daemon=True, name="ingest-pump").start()
        threading.Thread(target=self._report, daemon=True, name="ingest-metrics").start()

    # ------------------------------------------------------------------ control
    def attach(self, camera_id: str, config: Mapping[str, Any]) -> bool:
        """Start (or restart, when the source changed) pulling a camera stored with `config`."""
        raw = config["source"]
        try:
            source = check_source(raw["url"], self.config.ingest.allowed_dirs, fps=raw.get("fps"),
                                  transport=raw.get("transport", "tcp"))
        except ValueError as exc:  # checked at registration; allowed_dirs may have changed since
            log.warning("camera %s: source refused now: %s", camera_id, exc)
            return False
        fps = float(source.fps or config["fps"])
        enabled = bool(config.get("enabled", True))
        with self._lock:
            self._slots[camera_id] = camera_slot(camera_id, config, self.config.executors.count)  # the store's placement
            old = self._readers.get(camera_id)
            if old is not None and old.source == source and old.health.state != "stopped" and enabled:
                old.fps = fps
                return False
            if old is not None:
                old.stop()
            self._readers[camera_id] = _Reader(camera_id, source, fps, self._backoff,
                                               self.config.ingest.open_timeout_s, enabled)
        return True

    def detach(self, camera_id: str) -> bool:
        with self._lock:
            reader = self._readers.pop(camera_id, None)
            self._slots.pop(camera_id, None)
        self._latest.forget(camera_id)
        if reader is not None:
            reader.stop()
            self._events.close_camera(camera_id)
        return reader is not None

    def fleet(self) -> Mapping[str, HealthSnapshot]:
        """Per camera pulled here: state, rates, drops, reconnects, last error (`GET /admin/cameras`)."""
        with self._lock:
            readers = list(self._readers.values())
        return {r.camera_id: r.snapshot() for r in readers}

    def latest(self, camera_id: str) -> dict[str, Any]:
        """The camera's newest analysed frame's results (`GET /cameras/{id}/latest`; `frame_ts` None: none yet)."""
        return self._latest.latest(camera_id)

    def snapshot(self, camera_id: str, side: int, not_if: tuple[str, ...] = ()) -> Snapshot | str | None:
        """The newest analysed frame as JPEG at most `side` px (`GET /cameras/{id}/snapshot`), encoded here
        on request (cached per frame and side); just its ETag when that is one of `not_if` (the caller's
        If-None-Match: a 304 without the picture crossing); None when nothing analysed yet."""
        etag = self._latest.etag(camera_id, side)
        if etag is None or etag in not_if:
            return etag
        return self._latest.snapshot(camera_id, side)

    def pid(self) -> int:
        return os.getpid()

    def _report(self) -> None:
        """Forever: the cameras' health to Prometheus (`actors.ingest_metrics`) every few seconds."""
        metrics = IngestMetrics()
        while True:
            time.sleep(REPORT_EVERY_S)
            try:
                metrics.report(self.fleet())
            except Exception:  # a metrics hiccup must not end the reports (logged with its traceback)
                log.exception("ingest metrics not reported")

    # ------------------------------------------------------------------ frames
    def _pump(self) -> None:
        """Forever: `_pump_once`, or a short sleep when no camera was due."""
        while True:
            try:
                sent = self._pump_once()
            except Exception:  # the pump must outlive any one bad round (logged with its traceback)
                log.exception("ingest pump round failed")
                sent = False
            if not sent:
                time.sleep(_IDLE_S)

    def _pump_once(self) -> bool:
        """Take each due camera's newest frame; one `infer_many` per executor for all of them.

        An executor whose previous call still runs gets nothing new: its cameras' frames stay in
        their slots, replaced by newer ones (counted as dropped), so a slow executor never builds a
        backlog here. Returns whether anything was sent."""
        now = time.monotonic()
        with self._lock:
            readers = list(self._readers.values())
            busy = set(self._sending)
        due: dict[int, list[tuple[_Reader, np.ndarray, float]]] = {}
        for r in readers:
            index = self._slots.get(r.camera_id, placement_index(r.camera_id, self.config.executors.count))
            if now < r.next_due or index in busy:
                continue
            taken = r.slot.take()
            if taken is None:
                continue
            r.next_due = max(r.next_due + 1.0 / r.fps, now)
            due.setdefault(index, []).append((r, *taken))
        with self._lock:
            self._sending.update(due)
        for index, frames in due.items():
            self._send_pool.submit(self._send, index, frames)
        return bool(due)

    def _send(self, index: int, frames: list[tuple[_Reader, np.ndarray, float]]) -> None:
        try:
            self._deliver(index, frames)
        finally:
            with self._lock:
                self._sending.discard(index)

    def _deliver(self, index: int, frames: list[tuple[_Reader, np.ndarray, float]]) -> None:
        try:
            small = np.stack([resize_square(f, self._size) for _, f, _ in frames])  # BGR at model size
            inputs = to_input(np.ascontiguousarray(small[..., ::-1]), self._size, mean=self._norm.mean,
                              std=self._norm.std)
            # one tensor of its own per camera (a slice would pickle the whole batch's storage)
            # with each frame's decoded (height, width): detect apps' boxes come back in the camera's pixels
            items = [(r.camera_id, inputs[i:i + 1].clone(), [ts], f.shape[:2]) for i, (r, f, ts) in enumerate(frames)]
            results = ray.get(self._executor(index).infer_many.remote(items))
        except (RayActorError, Moved) as exc:
            log.warning("executor slot %d unavailable (%s); following the routes", index, type(exc).__name__)
            self._executors.pop(index, None)
            return
        except Exception:  # the pump must outlive any one batch (logged with its traceback)
            log.exception("batch for executor slot %d failed", index)
            return
        done = time.monotonic()
        for (reader, frame, ts), result in zip(frames, results):
            if isinstance(result, UnknownCamera):
                self._register(index, reader.camera_id)
            elif isinstance(result, Moved):
                self._executors.pop(index, None)
            elif isinstance(result, BaseException):
                log.warning("camera %s: frame refused: %r", reader.camera_id, result)
            else:
                reader.health.analysed(done, len(result))
                self._latest.keep(reader.camera_id, frame[..., ::-1], result[-1].as_dict())  # a view: no copy
                self._events.on_results(reader.camera_id, [frame[..., ::-1]], [r.as_dict() for r in result])
                if self._live is not None:  # live samples for the teacher (actors.live_feed)
                    self._live.offer_pulled(reader.camera_id, frame[..., ::-1], ts, self._store,  # as decoded: the
                                            self._executor(index))  # sampler shrinks the frames it keeps

    def _executor(self, index: int) -> ActorHandle:
        """The actor serving executor slot `index` now (the Planner's routes, else the slot's own name)."""
        handle = self._executors.get(index)
        if handle is None:
            role = executor_role(self.config.executors.name_prefix, index)
            name = ray.get(self._store.routes.remote()).actors.get(role, role)  # unlisted: generation 0
            handle = self._executors[index] = ray.get_actor(name, namespace=self.config.executors.namespace)
        return handle

    def _register(self, index: int, camera_id: str) -> None:
        """The executor restarted (or moved) without this camera: give it the stored config back."""
        record = ray.get(self._store.get_camera.remote(camera_id))
        if record is not None:
            spec = CameraSpec.from_config(camera_id, record.config)
            ray.get(self._executor(index).add_camera.remote(camera_id, spec.apps, spec.stream_fps))
            log.info("camera %s re-registered on executor slot %d", camera_id, index)


CameraIngest = ray.remote(CameraIngestShell)


def start_ingest(config: ServeConfig, name: str) -> ActorHandle:
    """Find or create the CameraIngest actor `name` (detached: it outlives the ingress replica that made it)."""
    return CameraIngest.options(
        name=name, namespace=config.executors.namespace, get_if_exists=True,
        lifetime="detached", num_cpus=config.ingest.num_cpus, max_restarts=-1, max_task_retries=-1,
        max_concurrency=8, scheduling_strategy="SPREAD",
    ).remote(config.model_dump(mode="json"))


__all__ = ["CameraIngest", "CameraIngestShell", "ingest_actor_name", "start_ingest"]
