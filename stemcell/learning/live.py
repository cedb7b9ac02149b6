"""Samples from live traffic: which served frames go to the teacher, and in which batches.

Why: AMS learns from teacher-labelled frames sampled at the ASR rate; a camera that already sends
its frames to the server (push) or whose stream the server pulls should not upload anything extra.
The ingress and the pull ingest hand every frame they decoded to a `LiveSampler`, which keeps one
frame per 1/rate seconds of capture time (the rate is the ASR answer of the camera's last batch)
and releases them in batches, so the teacher and the RetrainWorker see a few calls per minute and
the request path does nothing but a dict lookup and a comparison per frame.

Whether a camera learns is its registration's `learning` (true, false, or the apps that learn),
else serve.yaml's `learning.live` default (`learning_apps`). The sampler does not know the
registration (it would cost a store read per frame): the caller checks it once per batch and
`mute`s a camera whose learning is off, for `recheck_s`.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stemcell.learning.rates import sample_due
from stemcell.learning.teachers import OracleTeacherConfig, TeacherConfig


@dataclass(frozen=True)
class LiveBatch:
    """Sampled frames of one camera, in capture order, ready for the teacher."""

    camera: str
    timestamps: tuple[float, ...]
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB


@dataclass
class _CameraSampling:
    rate_fps: float
    last_kept_s: float | None = None
    muted_until: float = 0.0
    started_at: float | None = None  # clock time of the oldest pending frame
    stamps: list[float] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)


class LiveSampler:
    """Per camera: keep a frame when its capture time is at least 1/rate past the last kept one;
    release a batch after `batch_size` frames or `max_wait_s` (clock time) since its first frame."""

    def __init__(self, *, batch_size: int = 8, max_wait_s: float = 10.0, initial_fps: float = 1.0,
                 recheck_s: float = 60.0, prepare: Callable[[np.ndarray], np.ndarray] = np.asarray,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`prepare`: applied to each kept frame only (e.g. shrink to the model's input size, so a
        pending batch holds small frames whatever the camera's resolution)."""
        if batch_size < 1 or initial_fps <= 0:
            raise ValueError("batch_size must be >= 1 and initial_fps > 0")
        self.batch_size, self.max_wait_s, self.initial_fps = batch_size, max_wait_s, initial_fps
        self.recheck_s, self.prepare, self.clock = recheck_s, prepare, clock
        self._cameras: dict[str, _CameraSampling] = {}
        self.offered = self.kept = 0

    def _camera(self, camera: str) -> _CameraSampling:
        state = self._cameras.get(camera)
        if state is None:
            state = self._cameras[camera] = _CameraSampling(self.initial_fps)
        return state

    def offer(self, camera: str, frames: Sequence[np.ndarray], timestamps: Sequence[float]) -> LiveBatch | None:
        """Frames just decoded for `camera` (their capture times); a batch when one is complete."""
        state = self._camera(camera)
        now = self.clock()
        self.offered += len(frames)
        if now < state.muted_until:
            return None
        for frame, ts in zip(frames, timestamps):
            if not sample_due(state.last_kept_s, ts, state.rate_fps):
                continue
            state.last_kept_s = float(ts)
            state.stamps.append(float(ts))
            state.frames.append(np.asarray(self.prepare(frame), dtype=np.uint8))
            state.started_at = now if state.started_at is None else state.started_at
            self.kept += 1
        full = len(state.stamps) >= self.batch_size
        stale = state.started_at is not None and now - state.started_at >= self.max_wait_s
        return self._release(camera, state) if state.stamps and (full or stale) else None

    @staticmethod
    def _release(camera: str, state: _CameraSampling) -> LiveBatch:
        last = state.frames[-1].shape  # a camera that changed resolution: one size per batch
        keep = [i for i, f in enumerate(state.frames) if f.shape == last]
        batch = LiveBatch(camera, tuple(state.stamps[i] for i in keep), np.stack([state.frames[i] for i in keep]))
        state.stamps, state.frames, state.started_at = [], [], None
        return batch

    def set_rate(self, camera: str, rate_fps: float) -> None:
        """The ASR rate the RetrainWorker answered for this camera's last batch."""
        if rate_fps > 0:
            self._camera(camera).rate_fps = float(rate_fps)

    def rate(self, camera: str) -> float:
        return self._camera(camera).rate_fps

    def mute(self, camera: str) -> None:
        """Learning is off for this camera: sample nothing for `recheck_s`, then look again."""
        state = self._camera(camera)
        state.muted_until = self.clock() + self.recheck_s
        state.stamps, state.frames, state.started_at = [], [], None

    def forget(self, camera: str) -> None:
        self._cameras.pop(camera, None)


def learning_apps(camera_config: Mapping[str, Any], apps: Sequence[str], default: bool) -> tuple[str, ...]:
    """The camera's apps that learn from its live frames: its registration's `learning` (true, false,
    or a list of app names), else `default` (serve.yaml's `learning.live`) for all of them."""
    chosen = camera_config.get("learning")
    if chosen is None:
        chosen = default
    if isinstance(chosen, bool):
        return tuple(apps) if chosen else ()
    wanted = set(chosen)
    return tuple(a for a in apps if a in wanted)


def world_camera(teacher: TeacherConfig | None, camera_id: str, timestamps: list[float]) -> int:
    """The synthetic-world camera an oracle teacher looks labels up in (other teachers ignore it);
    the samples' video times are checked against its timeline here, so a bad `ts` is a clear 422."""
    if not isinstance(teacher, OracleTeacherConfig):
        return 0
    if camera_id not in teacher.cameras:
        raise ValueError(f"camera {camera_id!r} has no world camera for the oracle teacher: "
                         f"add it to learning.teacher.cameras")
    world = teacher.world_config
    if min(timestamps) < 0 or round(max(timestamps) * world.fps) >= world.num_frames:
        raise ValueError(f"the oracle teacher labels video times in [0, {world.duration_s:g}) s of the world "
                         f"camera; got ts {min(timestamps):g}..{max(timestamps):g}")
    return teacher.cameras[camera_id]
