"""`stemcell stream`: be a camera.  Read a video file, an RTSP stream or a synthetic camera at a
fixed rate and post its frames to a Stemcell server.

A real camera never queues without bound: when the server (or the network) is slower than the
stream, the sender keeps only the newest frame and drops the rest, so latency stays bounded and
what is analysed is always recent.  A file or synthetic source is paced to wall-clock time as if
it were live.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from app.rolling import RollingWindow
from stemcell.client import Camera, StemcellError
from stemcell.world import open_source

log = logging.getLogger(__name__)

OnResult = Callable[[float, float, dict], None]  # (source ts, round-trip ms, the server's answer)


class LatestFrame:
    """A one-slot mailbox: `put` replaces an unsent frame (counted as dropped), `take` waits for one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: tuple[np.ndarray, float] | None = None
        self._closed = False
        self.dropped = 0

    def put(self, frame: np.ndarray, ts: float) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = (frame, ts)
            self._cond.notify()

    def take(self, timeout_s: float = 0.5) -> tuple[np.ndarray, float] | None:
        """The newest frame, or None once closed and empty."""
        with self._cond:
            while self._item is None and not self._closed:
                self._cond.wait(timeout_s)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class _Sender:
    """Worker threads that post frames from the mailbox and account for the answers."""

    def __init__(self, camera: Camera, box: LatestFrame, concurrency: int, on_result: OnResult | None) -> None:
        self.camera, self.box, self.on_result = camera, box, on_result
        self.window = RollingWindow(window_s=5.0)
        self.lock = threading.Lock()
        self.errors: dict[str, int] = {}
        self.positives: dict[str, int] = {}
        self.latencies_ms: list[float] = []
        self.threads = [threading.Thread(target=self._run, name=f"stemcell-send-{i}", daemon=True)
                        for i in range(concurrency)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while (item := self.box.take()) is not None:
            frame, ts = item
            started = time.perf_counter()
            try:
                answer = self.camera.infer(frame, ts=ts)
            except (StemcellError, ValueError) as exc:
                key = str(getattr(exc, "status", "client"))
                with self.lock:
                    self.errors[key] = self.errors.get(key, 0) + 1
                log.warning("frame at %.2fs not analysed: %s", ts, exc)
                continue
            ms = (time.perf_counter() - started) * 1000.0
            with self.lock:
                self.window.add(1, ms)
                self.latencies_ms.append(ms)
                for r in answer["results"]:
                    if r["label"]:
                        self.positives[r["app"]] = self.positives.get(r["app"], 0) + 1
            if self.on_result is not None:
                self.on_result(ts, ms, answer)

    def join(self) -> None:
        self.box.close()
        for t in self.threads:
            t.join()


def run_stream(source: str, camera: str, url: str, token: str, fps: float, duration_s: float | None = None, *,
               concurrency: int = 2, report_every_s: float = 5.0, out: Callable[[str], None] = print,
               client: Camera | None = None, on_result: OnResult | None = None, resize: bool = True) -> dict[str, Any]:
    """Stream `source` as camera `camera` to `url` at `fps` for `duration_s` (None: until the source ends).

    Prints a line every `report_every_s` (frames/s analysed, dropped, p50/p99 ms) and returns a
    summary.  `concurrency` requests may be in flight at once (more hides network latency).
    `on_result(ts, latency_ms, answer)` sees every answer (from the sender threads). `resize` sends
    frames at the camera's input size (`stemcell.client.Camera`); False sends them whole.
    """
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    cam = client or Camera(url, token, camera, retries=1, resize=resize)
    box = LatestFrame()
    sender = _Sender(cam, box, concurrency, on_result)
    read = 0
    first_ts: float | None = None
    started = time.monotonic()
    next_report = started + report_every_s
    try:
        with open_source(source, fps=fps) as src:
            for frame, ts in src:
                now = time.monotonic()
                if duration_s is not None and now - started >= duration_s:
                    break
                first_ts = ts if first_ts is None else first_ts
                due = started + (ts - first_ts)  # a file plays at its own pace; a live source is never early
                if due > now:
                    time.sleep(due - now)
                box.put(frame, ts)
                read += 1
                if time.monotonic() >= next_report:
                    with sender.lock:
                        snap = sender.window.snapshot()
                    out(_report_line(camera, snap, box.dropped, sum(sender.errors.values())))
                    next_report += report_every_s
    finally:
        sender.join()
        if client is None:
            cam.close()
    elapsed = time.monotonic() - started
    lat = np.array(sender.latencies_ms) if sender.latencies_ms else None
    summary = {
        "camera": camera, "source": source, "target_fps": fps, "duration_s": round(elapsed, 3),
        "frames_read": read, "frames_sent": len(sender.latencies_ms), "frames_dropped": box.dropped,
        "errors": dict(sender.errors), "fps_analysed": len(sender.latencies_ms) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": None if lat is None else float(np.percentile(lat, 50)),
        "p99_ms": None if lat is None else float(np.percentile(lat, 99)),
        "positives": dict(sender.positives),
    }
    out(f"{camera}: {summary['frames_sent']}/{read} frames analysed in {elapsed:.1f}s "
        f"({summary['fps_analysed']:.1f} fps), {box.dropped} dropped, errors {summary['errors'] or 0}")
    return summary


def _report_line(camera: str, snap: dict[str, Any], dropped: int, errors: int) -> str:
    p50, p99 = snap["p50_ms"], snap["p99_ms"]
    lat = "no answers yet" if p50 is None else f"p50 {p50:.0f} ms, p99 {p99:.0f} ms"
    return f"{camera}: {snap['fps']:.1f} fps analysed, {lat}, {dropped} dropped, {errors} errors"
