"""Frame sources: video files, RTSP/HTTP streams and the synthetic world behind one iterator.

Files and streams share one code path through `cv2.VideoCapture` (FFmpeg backend), so the demo
camera that streams an exported mp4 exercises exactly what a real camera deployment runs.
Every source yields `(frame, ts)`: uint8 RGB (H, W, 3) and seconds since the source's start.
"""
from __future__ import annotations

import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs

import cv2
import numpy as np

from stemcell.world.datatypes import WorldConfig
from stemcell.world.timeline import CameraTimeline, World

log = logging.getLogger(__name__)

_STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
_OPEN_TIMEOUT_MS = 10_000


class FrameSource(ABC):
    """Iterator of `(frame_rgb_uint8, ts_seconds)` with `.fps`, `.close()` and `with` support.

    `fps` is the rate frames come out at: the source's own rate, or the `fps` asked of
    `open_source` when that is lower (frames are then dropped evenly, timestamps kept).
    """

    def __init__(self, native_fps: float, fps: float | None, num_frames: int | None) -> None:
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.num_frames = num_frames  # frames the source holds at its own rate; None for live streams
        self.native_fps = native_fps
        self.fps = min(fps, native_fps) if fps is not None else native_fps
        self._next_ts = 0.0
        self._index = 0
        self.closed = False

    @abstractmethod
    def _read(self, index: int) -> np.ndarray | None:
        """The source's frame number `index` (they are read in order), or None at the end."""

    def _release(self) -> None:
        """Free the underlying resource (called once by close())."""

    def __iter__(self) -> Iterator[tuple[np.ndarray, float]]:
        return self

    def __next__(self) -> tuple[np.ndarray, float]:
        while not self.closed:
            frame = self._read(self._index)
            if frame is None:
                break
            ts = self._index / self.native_fps
            self._index += 1
            # Tolerance of half a native frame so that e.g. 10 -> 5 fps keeps exactly every other frame.
            if ts + 0.5 / self.native_fps >= self._next_ts:
                self._next_ts += 1.0 / self.fps
                return frame, ts
        self.close()
        raise StopIteration

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._release()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class VideoCaptureSource(FrameSource):
    """A video file or network stream decoded by OpenCV; BGR is converted to RGB."""

    def __init__(self, spec: str, fps: float | None = None) -> None:
        is_stream = spec.lower().startswith(_STREAM_SCHEMES)
        if not is_stream and not Path(spec).is_file():
            raise FileNotFoundError(f"video file not found: {spec}")
        self.spec = spec
        self._cap = cv2.VideoCapture(spec, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, _OPEN_TIMEOUT_MS])
        first = self._grab() if self._cap.isOpened() else None
        if first is None:
            self._cap.release()
            kind = "stream is unreachable or not a video" if is_stream else "file is not a video OpenCV/FFmpeg can decode"
            raise ValueError(f"cannot open video source {spec!r}: the {kind}")
        native = float(self._cap.get(cv2.CAP_PROP_FPS))
        if not (math.isfinite(native) and native > 0):
            if fps is None:
                self._cap.release()
                raise ValueError(f"video source {spec!r} reports no frame rate; pass fps=")
            native = fps
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._pending: np.ndarray | None = first
        super().__init__(native, fps, count if count > 0 and not is_stream else None)

    def _grab(self) -> np.ndarray | None:
        ok, bgr = self._cap.read()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None

    def _read(self, index: int) -> np.ndarray | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        return self._grab()

    def _release(self) -> None:
        self._cap.release()


class SyntheticSource(FrameSource):
    """Frames of one camera of the synthetic world (`timeline` gives its exact labels too)."""

    def __init__(self, timeline: CameraTimeline, fps: float | None = None) -> None:
        self.timeline = timeline
        super().__init__(timeline.fps, fps, timeline.num_frames)

    def _read(self, index: int) -> np.ndarray | None:
        return self.timeline.frame(index) if index < self.timeline.num_frames else None


def parse_synthetic(spec: str) -> tuple[int, WorldConfig]:
    """`synthetic:<camera>[?seed=S&size=HxW&fps=F&duration=D]` -> (camera, world config)."""
    body = spec[len("synthetic:") :]
    camera_text, _, query = body.partition("?")
    if not camera_text.isdigit():
        raise ValueError(f"bad synthetic source {spec!r}: expected synthetic:<camera number>[?seed=S&size=HxW]")
    camera = int(camera_text)
    try:
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True, strict_parsing=bool(query)).items()}
        unknown = set(params) - {"seed", "size", "fps", "duration"}
        if unknown:
            raise ValueError(f"unknown parameter(s) {sorted(unknown)}")
        height, width = (int(v) for v in params.get("size", "128x128").lower().split("x"))
        config = WorldConfig(
            seed=int(params.get("seed", 0)),
            num_cameras=camera + 1,
            height=height,
            width=width,
            fps=float(params.get("fps", 10.0)),
            duration_s=float(params.get("duration", 600.0)),
        )
    except ValueError as err:
        raise ValueError(f"bad synthetic source {spec!r}: {err}") from err
    return camera, config


def open_source(spec: str | os.PathLike[str], fps: float | None = None) -> FrameSource:
    """Open a video file path, an rtsp:// (or http/rtmp/udp) URL, or `synthetic:<camera>[?...]`.

    Raises FileNotFoundError for a missing file and ValueError for anything that cannot be opened
    or decoded; `fps` (optional) caps the output rate by dropping frames evenly.
    """
    text = os.fspath(spec)
    if text.startswith("synthetic:"):
        camera, config = parse_synthetic(text)
        return SyntheticSource(World(config).camera(camera), fps)
    source = VideoCaptureSource(text, fps)
    log.info("opened %s at %.3g fps (output %.3g fps)", text, source.native_fps, source.fps)
    return source
