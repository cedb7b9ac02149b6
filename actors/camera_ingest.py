"""CameraIngest: a CPU actor that pulls up to `ingest.cameras_per_actor` cameras' streams.

One reader thread per camera decodes with OpenCV's FFmpeg backend (`cv2.CAP_FFMPEG`) into a
newest-frame slot (`stemcell.ingest.NewestFrameSlot`); one pump thread, woken by new frames, sends
each executor one `infer_pulled` call per analysis interval with every due camera's frame in it
(`stemcell.ingest.schedule`: a ready frame waits at most half an interval for the rest of its batch),
no HTTP, no JPEG round trip, no call per camera. Only frames taken are resized, straight from the
decoded BGR frame to model size with the resize training uses (`stemcell.data.dataset.resize_square`,
area-averaged, in OpenCV without the GIL), into one contiguous uint8 array per batch
(`stemcell.ingest.PulledBatch`: out of band through Ray, no pickled tensors); the executor makes model
input of the whole batch in one conversion. The full-size frame is never converted to float (that
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
from collections import Counter
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
from stemcell.ingest.batch import PulledBatch
from stemcell.ingest.schedule import PumpView, gather_window, next_due, pick
from stemcell.latest_frames import LatestFrames, Snapshot
from stemcell.package.store import load_package
from stemcell.scheduling.shares import placement_index
from stemcell.serve_config import ServeConfig

log = logging.getLogger(__name__)
_CAPTURE_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_OPEN_LOCK = threading.Lock()  # FFmpeg reads its options from the environment while opening
# calls in flight per executor: a second one rides out a slow call (a load spike) without dropping
# the next interval's frames; more would only queue in the executor
_IN_FLIGHT = 2
_IDLE_S = 0.01  # pump pause after a failed round (10 ms: well under a frame at 30 fps)


def ingest_actor_name(config: ServeConfig, index: int) -> str:
    """The name of CameraIngest actor `index` (stored with each camera it pulls)."""
    return f"{config.ingest.name_prefix}-{index}"


class _Reader:
    """One camera: its reader thread, newest frame, health and analysis schedule."""

    def __init__(self, camera_id: str, source: Source, fps: float, backoff: Backoff, timeout_s: float,
                 enabled: bool, arrived: threading.Event) -> None:
        self.camera_id, self.source, self.fps = camera_id, source, fps
        self._arrived = arrived  # the pump's: set at every new frame
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
                self._arrived.set()
                if looped:  # a file is read as fast as the disk allows: pace it at its own frame rate
                    next_at += period
                    self._stop.wait(max(0.0, next_at - time.monotonic()))
            return "stopped"
        finally:
            cap.release()

    def snapshot(self) -> HealthSnapshot:
        return self.health.snapshot(time.monotonic(), self.slot.dropped)

    def view(self, group: int, now: float, wall: float) -> PumpView:
        """What the pump needs of this camera now (`stemcell.ingest.schedule`)."""
        ts = self.slot.waiting_since()
        return PumpView(group, self.next_due, None if ts is None else now - (wall - ts),
                        self.health.state == "streaming")


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
        self._send_pool = ThreadPoolExecutor(min(8, _IN_FLIGHT * self.config.executors.count),
                                             thread_name_prefix="ingest-send")
        self._sending: Counter[int] = Counter()  # calls in flight per executor slot
        self._arrived = threading.Event()  # a new frame, or a call finished: the pump looks again
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
                                               self.config.ingest.open_timeout_s, enabled, self._arrived)
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
        """Forever: `_pump_once`, then sleep until it says or a frame arrives."""
        while True:
            self._arrived.clear()  # before looking: a frame that arrives meanwhile wakes the wait below
            try:
                wait = self._pump_once()
            except Exception:  # the pump must outlive any one bad round (logged with its traceback)
                log.exception("ingest pump round failed")
                wait = _IDLE_S
            self._arrived.wait(wait)

    def _pump_once(self) -> float:
        """Send each executor one batch with every camera of it that is due (`stemcell.ingest.schedule`).

        An executor with `_IN_FLIGHT` calls still running gets nothing new: its cameras' frames stay
        in their slots, replaced by newer ones (counted as dropped), so a slow executor never builds a
        backlog here. Returns the seconds until the pump should look again."""
        now, wall = time.monotonic(), time.time()
        with self._lock:
            readers = [r for r in self._readers.values() if r.health.state != "stopped"]
            groups = [self._slots.get(r.camera_id) for r in readers]
            busy = {index for index, n in self._sending.items() if n >= _IN_FLIGHT}
        groups = [placement_index(r.camera_id, self.config.executors.count) if g is None else g
                  for r, g in zip(readers, groups)]
        views = [r.view(g, now, wall) for r, g in zip(readers, groups)]
        chosen, wait = pick(views, now, gather_window([r.fps for r in readers]), busy)
        due: dict[int, list[tuple[_Reader, np.ndarray, float]]] = {}
        for i in chosen:
            r = readers[i]
            taken = r.slot.take()
            if taken is None:  # cannot happen (only the pump takes), but a frame is not worth a crash
                continue
            r.next_due = next_due(r.next_due, now, r.fps)
            due.setdefault(groups[i], []).append((r, *taken))
        with self._lock:
            self._sending.update(due.keys())
        for index, frames in due.items():
            self._send_pool.submit(self._send, index, frames)
        return wait

    def _send(self, index: int, frames: list[tuple[_Reader, np.ndarray, float]]) -> None:
        try:
            self._deliver(index, frames)
        finally:
            with self._lock:
                self._sending[index] -= 1
            self._arrived.set()  # the executor is free: frames that waited for it go now

    def _deliver(self, index: int, frames: list[tuple[_Reader, np.ndarray, float]]) -> None:
        try:
            small = np.empty((len(frames), self._size, self._size, 3), np.uint8)  # one array: RGB at model size
            for i, (_, f, _) in enumerate(frames):
                small[i] = resize_square(f, self._size)[..., ::-1]
            batch = PulledBatch.of([r.camera_id for r, _, _ in frames], small, [ts for _, _, ts in frames],
                                   [f.shape[:2] for _, f, _ in frames])  # detect apps' boxes in the camera's pixels
            results = ray.get(self._executor(index).infer_pulled.remote(batch))
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
                reader.health.analysed(done)
                answer = result.as_dict()
                self._latest.keep(reader.camera_id, frame[..., ::-1], answer)  # a view: no copy
                self._events.on_results(reader.camera_id, [frame[..., ::-1]], [answer])
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
