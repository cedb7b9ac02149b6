"""LiveFeed: served frames -> TeacherLabeler -> the camera's RetrainWorker buffer, off the request path.

Used where frames are already decoded: the ingress (`app.learning_service`, pushed frames) and the
pull ingest (`actors.camera_ingest`). `observe` is all the request path pays (a dict lookup and a
comparison per frame, `stemcell.learning.live.LiveSampler`); a released batch goes out as two
actor calls with no wait between them: the teacher's labels travel to the worker as an ObjectRef,
so no frame crosses the caller twice. The worker answers the camera's ASR rate (the sampler's next
rate) and its newest versions, which the caller pushes to the serving executor.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import ray
from ray.actor import ActorHandle

from stemcell.control.contracts import CameraSpec, EdgeAdvice
from stemcell.control.roles import retrain_role
from stemcell.imaging import resize_frames
from stemcell.learning.live import LiveBatch, LiveSampler, learning_apps, world_camera
from stemcell.serve_config import ServeConfig
from stemcell.state.records import CameraRecord

log = logging.getLogger(__name__)


def sample_copy(input_size: int | None, teacher_side: int | None) -> Callable[[np.ndarray], np.ndarray]:
    """What a kept frame is stored as until its batch leaves. `teacher_side` None: the model's input
    size, with the frame path's one resize (`stemcell.imaging.resize_frames`): the teacher and the
    buffer see what the student sees. Else a copy whose longer side is at most `teacher_side`, aspect
    kept (never enlarged), for a teacher that needs pixels (HOG's window is 128 px tall); the worker
    still gets model-size frames (`LiveFeed.request`). Either way a pending batch stays bounded
    whatever the camera's resolution."""
    def prepare(frame: np.ndarray) -> np.ndarray:
        if teacher_side is None:
            return frame if input_size is None else resize_frames(frame, input_size)
        scale = teacher_side / max(frame.shape[:2])
        if scale >= 1.0:
            return np.ascontiguousarray(frame)
        size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
        return np.ascontiguousarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))

    return prepare


class LiveFeed:
    """One per ingress replica or ingest actor; cheap to call on every frame."""

    def __init__(self, config: ServeConfig, input_size: int | None) -> None:
        c = config.learning
        self.config = config
        self.sampler = LiveSampler(batch_size=c.live_batch, max_wait_s=c.live_max_wait_s,
                                   prepare=sample_copy(input_size, c.live_teacher_side))
        self.input_size = input_size
        self._pushed: dict[tuple[str, str], int] = {}  # versions pushed to the executors from here
        self._thread: ThreadPoolExecutor | None = None  # the pull ingest's sends (`offer_pulled`)
        self._actors: tuple[ActorHandle, ActorHandle] | None = None

    def observe(self, camera: str, frames: list[np.ndarray], timestamps: list[float]) -> LiveBatch | None:
        return self.sampler.offer(camera, frames, timestamps)

    def request(self, batch: LiveBatch, record: CameraRecord | None, teacher: ActorHandle) -> tuple[Any, ...] | None:
        """Send `batch` to the teacher; the arguments of the worker's `live_samples` (the labels as an
        ObjectRef). None when the camera does not learn (it is then muted for a while) or is gone."""
        if record is None:
            self.sampler.forget(batch.camera)
            return None
        spec = CameraSpec.from_config(batch.camera, record.config)
        learn = set(learning_apps(record.config, [a.app for a in spec.apps], self.config.learning.live))
        if not learn:
            self.sampler.mute(batch.camera)
            return None
        stamps = list(batch.timestamps)
        try:
            world = world_camera(self.config.learning.teacher, batch.camera, stamps)
        except ValueError as exc:  # an oracle teacher without this camera, or times off its timeline
            log.warning("camera %s: live samples not labelled: %s", batch.camera, exc)
            self.sampler.mute(batch.camera)
            return None
        labels = teacher.label.remote(batch.frames, world, stamps, boxes=True)  # boxes: detect apps learn too
        frames = batch.frames if self.input_size is None else resize_frames(batch.frames, self.input_size)
        return batch.camera, tuple(a for a in spec.apps if a.app in learn), stamps, frames, labels

    def answered(self, camera: str, advice: EdgeAdvice) -> list[str]:
        """Take the worker's answer: the next sampling rate; the apps with a version not yet pushed."""
        self.sampler.set_rate(camera, advice.sampling_fps)
        return [app for app, v in advice.versions.items() if v > self._pushed.get((camera, app), 0)]

    def pushed(self, camera: str, app: str, version: int) -> None:
        self._pushed[(camera, app)] = version

    def offer_pulled(self, camera: str, frame_rgb: np.ndarray, ts: float, store: ActorHandle,
                     executor: ActorHandle) -> None:
        """The pull ingest's hook, per analysed frame: a released batch is labelled, buffered and its
        newer versions hot-swapped into `executor` on this feed's own thread (never the pump's)."""
        batch = self.observe(camera, [frame_rgb], [ts])
        if batch is not None:
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="live-feed")
            self._thread.submit(self._send_sync, batch, store, executor)

    def _send_sync(self, batch: LiveBatch, store: ActorHandle, executor: ActorHandle) -> None:
        try:
            teacher, worker = self._learning_actors(store)
            args = self.request(batch, ray.get(store.get_camera.remote(batch.camera)), teacher)
            if args is None:
                return
            answer = ray.get(worker.live_samples.remote(*args))
            for app in self.answered(batch.camera, answer):
                version, state = ray.get(worker.weights.remote(batch.camera, app))
                ray.get(executor.set_app_weights.remote(app, batch.camera, state, version))
                self.pushed(batch.camera, app, version)
        except Exception as exc:  # noqa: BLE001 - a lost batch costs samples; the next comes at the ASR rate
            log.warning("camera %s: %d live samples lost: %r", batch.camera, len(batch.timestamps), exc)
            self._actors = None  # the worker may have moved: look the routes up again

    def _learning_actors(self, store: ActorHandle) -> tuple[ActorHandle, ActorHandle]:
        """The TeacherLabeler and the RetrainWorker (where the Planner's routes say it runs now)."""
        if self._actors is None:
            c, ns = self.config.learning, self.config.executors.namespace
            worker = ray.get(store.routes.remote()).actors.get(retrain_role(c.worker_name), c.worker_name)
            self._actors = (ray.get_actor(c.teacher_name, namespace=ns), ray.get_actor(worker, namespace=ns))
        return self._actors
