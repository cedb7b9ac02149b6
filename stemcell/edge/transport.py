"""How an edge talks to the learning server, behind one small protocol.

Two verbs, matching the two HTTP routes: `upload` (sampled frames as JPEG + their timestamps ->
the server's advice: sampling rate, update period, versions) and `fetch` (the update that takes the
edge's model from `since` to the current version, or None when it is current). `HttpTransport`
(`stemcell.edge.http`) speaks them over the network; `InProcessTransport` calls an `AmsTrainer` in
the same process, so benchmarks and unit tests run the real edge code without a server.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from stemcell.imaging import ImageLimits, decode_image
from stemcell.learning.ams import AmsTrainer, payload_kind
from stemcell.learning.teachers import FrameMeta, Teacher, presence


@dataclass(frozen=True)
class Advice:
    """The server's answer to an upload."""

    sampling_fps: float  # ASR: frames per second the edge should sample
    t_update_s: float  # ATR: how long the edge buffers samples before uploading them
    versions: dict[str, int] = field(default_factory=dict)  # current model version per app
    accepted: int = 0  # samples the server kept (duplicates of a retried upload are dropped)


@dataclass(frozen=True)
class ModelPayload:
    """Encoded model update (the codec's bytes) and what it is."""

    data: bytes
    version: int  # version after applying
    base_version: int | None  # None = full update
    kind: str  # "full", "sparse" (exactly one version) or "merged" (several missed versions)
    branchpoint: int | None = None  # the app's cut the tensors belong to (None: the server does not say)


class LearningTransport(Protocol):
    def upload(self, camera_id: str, timestamps: Sequence[float], jpegs: Sequence[bytes]) -> Advice: ...

    def fetch(self, camera_id: str, app: str, since: int | None) -> ModelPayload | None: ...


class InProcessTransport:
    """The server side in the same process: decode, label with `teacher`, fold into `trainer`.

    `camera_index` maps camera ids to the teacher's camera (the oracle's world camera) and `fps`
    turns timestamps into frame indices for it. `train_on_upload` runs one round-robin round after
    every upload (a server with spare capacity); benchmarks that model a busy server pass False
    and call `trainer.run_next()` on their own schedule.
    """

    def __init__(self, trainer: AmsTrainer, teacher: Teacher, *, camera_index: dict[str, int], fps: float,
                 train_on_upload: bool = True, limits: ImageLimits = ImageLimits()) -> None:
        self.trainer, self.teacher = trainer, teacher
        self.camera_index, self.fps = camera_index, fps
        self.train_on_upload = train_on_upload
        self.limits = limits

    def upload(self, camera_id: str, timestamps: Sequence[float], jpegs: Sequence[bytes]) -> Advice:
        if len(timestamps) != len(jpegs):
            raise ValueError(f"{len(timestamps)} timestamps for {len(jpegs)} frames")
        if jpegs:
            frames = np.stack([decode_image(j, "image/jpeg", self.limits) for j in jpegs])
            indices = np.rint(np.asarray(timestamps, dtype=np.float64) * self.fps).astype(np.int64)
            labels = presence(self.teacher.label(frames, FrameMeta(self.camera_index[camera_id], indices)), self.teacher.classes)
            answer = self.trainer.add_samples(camera_id, np.asarray(timestamps, dtype=np.float64), frames, labels)
        else:
            answer = {"accepted": 0, **self.trainer.advice(camera_id)}
        if self.train_on_upload:
            self.trainer.run_pending()
        advice = self.trainer.advice(camera_id)
        return Advice(advice["sampling_fps"], advice["t_update_s"], advice["versions"], int(answer["accepted"]))

    def fetch(self, camera_id: str, app: str, since: int | None) -> ModelPayload | None:
        job = self.trainer.job(camera_id, app)
        found = job.payload_since(since)
        if found is None:
            return None
        data, update = found
        return ModelPayload(data, update.version, update.base_version,
                            payload_kind(update.version, update.base_version, since), job.branchpoint)
