"""The edge device of AMS: runs the student locally, uploads samples, applies sparse updates.

Per camera one `EdgeClient` holding one student per app (package candidate: shared stem + upper
segments + head). For each decoded frame, `observe`:
1. runs every student locally (no server round trip: that is the point of AMS);
2. samples the frame at the server's ASR rate (JPEG-encoded into the upload buffer);
3. every T_update seconds (ATR, from the server's last answer) uploads the buffer, adopts the new
   rate and period, and pulls the update that takes each student to the newest version.

Updates are applied without pausing inference (AMS §3: "an inactive copy of the running model"):
the new weights go into a standby copy (sharing the frozen stem, so only the upper part is
duplicated), which is then swapped in by one reference assignment. Uplink and downlink bytes
are counted as the payloads that cross the transport (JPEG bytes up, encoded updates down).

When the server moves an app's branchpoint (the Planner re-planned the camera), the update says
so (`ModelPayload.branchpoint`) and carries the whole new layout; the edge builds a student for the
new cut with `rebuild(app, branchpoint)` (e.g. from its copy of the package) and applies it there.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from stemcell.edge.transport import Advice, LearningTransport
from stemcell.imaging import encode_jpeg
from stemcell.learning.codec import UpdateMismatchError, apply_update, decode
from stemcell.learning.rates import sample_due
from stemcell.models import AppModel, to_input

log = logging.getLogger(__name__)


@dataclass
class EdgeCounters:
    uplink_bytes: int = 0  # JPEG bytes of uploaded samples
    downlink_bytes: int = 0  # encoded model updates received
    samples: int = 0  # frames sampled and uploaded
    uploads: int = 0
    updates: int = 0  # model updates applied (all apps)
    full_updates: int = 0  # of which full-model (new edge, or too far behind)
    branchpoint_moves: int = 0  # students rebuilt because the server moved an app's cut
    frames: int = 0  # frames run through the students


class _Student:
    """One app's model at the edge: active + standby copies and the trainable state at `version`."""

    def __init__(self, model: AppModel) -> None:
        self.active = model.eval()
        shared = {id(m): m for m in model.stem.modules()}  # the stem is shared, never copied
        self.standby = copy.deepcopy(model, memo=shared).eval()
        self.state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.version: int | None = None

    def apply(self, payload: bytes) -> bool:
        """Patch the standby copy, then swap; returns whether it was a full update."""
        update = decode(payload)
        self.state = apply_update(self.state, update, current_version=self.version)
        with torch.no_grad():
            params = dict(self.standby.named_parameters())
            for name, value in self.state.items():
                params[name].copy_(value)
        self.active, self.standby = self.standby, self.active
        self.version = update.version
        return update.is_full


class EdgeClient:
    def __init__(self, camera_id: str, models: Mapping[str, AppModel], transport: LearningTransport, *,
                 input_size: int | None = None, jpeg_quality: int = 75, sampling_fps: float = 1.0,
                 t_update_s: float = 10.0, rebuild: Callable[[str, int], AppModel] | None = None) -> None:
        if not models:
            raise ValueError("an edge client needs at least one app model")
        self.camera_id = camera_id
        self.transport = transport
        self.input_size = input_size
        self.jpeg_quality = jpeg_quality
        self.students = {app: _Student(m) for app, m in models.items()}
        self.rebuild = rebuild
        self.sampling_fps, self.t_update_s = sampling_fps, t_update_s
        self.counters = EdgeCounters()
        self._pending: list[tuple[float, bytes]] = []
        self._last_sample_s: float | None = None
        self._last_upload_s: float | None = None

    @property
    def versions(self) -> dict[str, int | None]:
        return {app: s.version for app, s in self.students.items()}

    def sync(self) -> dict[str, int | None]:
        """Pull each app's update since its version (full on first contact); returns the versions."""
        for app, student in self.students.items():
            payload = self.transport.fetch(self.camera_id, app, student.version)
            if payload is None:
                continue
            if payload.branchpoint is not None and payload.branchpoint != student.active.branchpoint:
                student = self._move(app, payload.branchpoint)
            full = student.apply(payload.data)
            self.counters.downlink_bytes += len(payload.data)
            self.counters.updates += 1
            self.counters.full_updates += int(full)
        return self.versions

    def _move(self, app: str, branchpoint: int) -> _Student:
        """A fresh student for the server's new cut of `app` (the update that said so is a full one)."""
        if self.rebuild is None:
            raise UpdateMismatchError(f"the server moved app {app!r} to branchpoint {branchpoint}; this edge holds "
                                      f"{self.students[app].active.branchpoint} and has no `rebuild` to follow")
        log.info("camera %s app %s: branchpoint %d -> %d", self.camera_id, app,
                 self.students[app].active.branchpoint, branchpoint)
        student = self.students[app] = _Student(self.rebuild(app, branchpoint))
        self.counters.branchpoint_moves += 1
        return student

    @torch.no_grad()
    def scores(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Per app, the probability of its class on each frame (uint8 RGB (N,H,W,3))."""
        x = to_input(frames, self.input_size)
        self.counters.frames += len(x)
        return {app: torch.sigmoid(s.active(x)[:, 0]).numpy() for app, s in self.students.items()}

    def observe(self, frame: np.ndarray, t_s: float, *, infer: bool = True) -> dict[str, bool]:
        """One decoded frame of the live stream: local labels, plus sampling/upload/sync when due.

        `infer=False` skips the students (a simulation that scores only every n-th frame)."""
        labels = {app: bool(p[0] >= 0.5) for app, p in self.scores(frame[None]).items()} if infer else {}
        if sample_due(self._last_sample_s, t_s, self.sampling_fps):
            self._pending.append((t_s, encode_jpeg(frame, self.jpeg_quality)))
            self._last_sample_s = t_s
        if self._last_upload_s is None:
            self._last_upload_s = t_s
        elif t_s - self._last_upload_s >= self.t_update_s:
            self.upload()
            self._last_upload_s = t_s
            self.sync()
        return labels

    def upload(self) -> Advice:
        """Send the buffered samples now and adopt the server's advice."""
        stamps = [t for t, _ in self._pending]
        jpegs = [j for _, j in self._pending]
        advice = self.transport.upload(self.camera_id, stamps, jpegs)
        self.counters.uplink_bytes += sum(len(j) for j in jpegs)
        self.counters.samples += len(jpegs)
        self.counters.uploads += 1
        self._pending = []
        self.sampling_fps, self.t_update_s = advice.sampling_fps, advice.t_update_s
        return advice
