"""Each camera's newest analysed frame and results, for `GET /cameras/{id}/snapshot` and `/latest` (the `/ui` page).

Why a reference and not a JPEG: encoding costs milliseconds per frame and almost every frame is never
looked at, so the frame path only stores the decoded array it already holds (a dictionary update);
the JPEG is encoded when someone asks, once per frame and size (the answer is cached until a newer
frame arrives). Memory is bounded by `max_bytes`: past it, the cameras updated longest ago lose their
frame first. Each ingress replica keeps the frames it analysed itself (a camera's posts usually reach
one replica); a pulled camera's frames never reach the ingress, so its `CameraIngest` actor keeps them
in one of these too and the routes ask it (`app.ui_routes`). Pure logic (no Ray, no web) so both can use it.
"""
from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from stemcell.imaging import encode_jpeg

SNAPSHOT_SIDES = (16, 2048)  # the smallest and largest longer side a snapshot may be asked at
SNAPSHOT_QUALITY = 80
_SIDES_CACHED = 4  # encodings kept per frame (the page asks two sizes: thumbnail and full)


@dataclass
class _Latest:
    frame: np.ndarray  # RGB uint8 (H, W, 3), the array the request decoded (not copied)
    result: dict[str, Any]  # the frame's answer as the frames route returned it (frame_ts, results, ...)
    seq: int  # bumps per kept frame: part of the ETag
    source_size: tuple[int, int] | None = None  # (height, width) as the camera sent it, when `frame` was resized
    jpegs: dict[int, bytes] = field(default_factory=dict)  # longer side -> encoded snapshot of `frame`


@dataclass(frozen=True)
class Snapshot:
    jpeg: bytes
    etag: str  # quoted, as the ETag header carries it
    frame_ts: float


def _resized(frame: np.ndarray, side: int) -> np.ndarray:
    h, w = frame.shape[:2]
    scale = side / max(h, w)
    if scale >= 1.0:
        return frame
    return cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


class LatestFrames:
    """`keep` on the frame path (cheap), `snapshot`/`latest` when asked; thread-safe."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self._boot = secrets.token_hex(4)  # ETags of two replicas (or two runs) never collide
        self._cameras: OrderedDict[str, _Latest] = OrderedDict()  # least recently updated first
        self._bytes = 0
        self._seq = 0
        self._lock = threading.Lock()

    def keep(self, camera_id: str, frame: np.ndarray, result: dict[str, Any],
             source_size: tuple[int, int] | None = None) -> None:
        """Remember `frame` (the last one a request analysed) and its answer; evict past `max_bytes`.
        `source_size`: (height, width) the camera sent it at, the pixels of its detect boxes."""
        with self._lock:
            self._seq += 1
            old = self._cameras.pop(camera_id, None)
            if old is not None:
                self._bytes -= old.frame.nbytes
            self._cameras[camera_id] = _Latest(frame, result, self._seq, source_size=source_size)
            self._bytes += frame.nbytes
            while self._bytes > self.max_bytes and len(self._cameras) > 1:
                _, evicted = self._cameras.popitem(last=False)
                self._bytes -= evicted.frame.nbytes

    def forget(self, camera_id: str) -> None:
        """A removed camera's frame goes at once (it must not be served under a re-used id)."""
        with self._lock:
            old = self._cameras.pop(camera_id, None)
            if old is not None:
                self._bytes -= old.frame.nbytes

    def latest(self, camera_id: str) -> dict[str, Any]:
        """The newest analysed frame's time, per-app results and size [w, h] as analysed (after the
        ingress's resize, if any; what the snapshot shows at most), and `source_size` [w, h] as the camera
        sent it, the pixels detect apps' boxes are in (`frame_ts` None: none seen here)."""
        with self._lock:
            entry = self._cameras.get(camera_id)
        if entry is None:
            return {"camera_id": camera_id, "frame_ts": None, "results": [], "model_versions": {}, "snapshot": False,
                    "frame_size": None, "source_size": None}
        h, w = entry.frame.shape[:2]
        sh, sw = entry.source_size or (h, w)
        return {**entry.result, "camera_id": camera_id, "snapshot": True, "frame_size": [w, h], "source_size": [sw, sh]}

    def etag(self, camera_id: str, side: int) -> str | None:
        """The tag `snapshot` would answer now, without encoding (a matching If-None-Match gets a 304)."""
        with self._lock:
            entry = self._cameras.get(camera_id)
        return None if entry is None else self._tag(entry, side)

    def snapshot(self, camera_id: str, side: int) -> Snapshot | None:
        """The newest frame as JPEG, its longer side at most `side` px (encoded once per frame and side)."""
        if not SNAPSHOT_SIDES[0] <= side <= SNAPSHOT_SIDES[1]:
            raise ValueError(f"side must be within {SNAPSHOT_SIDES}, got {side}")
        with self._lock:
            entry = self._cameras.get(camera_id)
        if entry is None:
            return None
        jpeg = entry.jpegs.get(side)
        if jpeg is None:  # encoded outside the lock: a slow encode never holds up the frame path
            jpeg = encode_jpeg(_resized(entry.frame, side), quality=SNAPSHOT_QUALITY)
            if len(entry.jpegs) >= _SIDES_CACHED:
                entry.jpegs.clear()
            entry.jpegs[side] = jpeg
        return Snapshot(jpeg, self._tag(entry, side), float(entry.result.get("frame_ts") or 0.0))

    def _tag(self, entry: _Latest, side: int) -> str:
        return f'"{self._boot}-{entry.seq}-{side}"'

    @property
    def held_bytes(self) -> int:
        return self._bytes
