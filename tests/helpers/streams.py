"""Real stream sources on loopback for the ingest tests and `benchmarks/ingest.py`.

* `h264_clip`: the synthetic world's camera rendered, then re-encoded to H.264 by the `ffmpeg` CLI
  (`stemcell.world.export` writes mp4v, which RTSP payloaders do not carry).
* `RtspServer`: GStreamer's RTSP server (gst-rtsp-server through python3-gi, Debian packages
  `gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp python3-gi`) in its own process, run by the system
  Python. Chosen over `ffmpeg -rtsp_flags listen`: that flag only exists for *receiving* a stream
  (FFmpeg's RTSP muxer can only push to a server), while gst-rtsp-server is a real server that
  answers any number of clients, so killing and restarting it is a real outage.
* `MjpegServer`: multipart/x-mixed-replace JPEGs over HTTP, as IP cameras serve them.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
_SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")


def _gst_rtsp_available() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    probe = ("import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer; "
             "from gi.repository import Gst; Gst.init(None); "
             "assert all(Gst.ElementFactory.find(e) for e in ('rtph264pay', 'qtdemux', 'h264parse'))")
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, check=False).returncode == 0


RTSP_OK = shutil.which("ffmpeg") is not None and _gst_rtsp_available()
needs_rtsp = pytest.mark.skipif(not RTSP_OK, reason="needs ffmpeg and GStreamer's RTSP server (.ci/run installs them)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def world_frames(count: int, height: int = 64, width: int = 96, seed: int = 0) -> np.ndarray:
    """`count` RGB frames of the synthetic world's camera 0."""
    from stemcell.world import World, WorldConfig

    world = World(WorldConfig(seed=seed, num_cameras=1, height=height, width=width, fps=10,
                              duration_s=max(1, count // 10 + 1)))
    return world.camera(0).frames(np.arange(count))


def h264_clip(path: Path, seconds: float, *, size: tuple[int, int] = (96, 64), fps: int = 10) -> Path:
    """An H.264 mp4 of the synthetic world, `size` = (width, height), keyframe every second."""
    from stemcell.world import World, WorldConfig
    from stemcell.world.export import write_mp4

    timeline = World(WorldConfig(seed=0, num_cameras=1, height=64, width=96, fps=fps,
                                 duration_s=int(seconds) + 1)).camera(0)
    raw = write_mp4(timeline, path.with_suffix(".mp4v.mp4"), 0, int(seconds * fps))
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(raw), "-vf",
                    f"scale={size[0]}:{size[1]}", "-r", str(fps), "-c:v", "libx264", "-preset", "ultrafast",
                    "-g", str(fps), "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


class RtspServer:
    """gst-rtsp-server streaming `clip` at rtsp://127.0.0.1:PORT/<mount> for each mount (restartable)."""

    def __init__(self, clip: Path, mounts: tuple[str, ...] = ("s",), port: int | None = None) -> None:
        self.clip, self.mounts, self.port = clip, mounts, port or free_port()
        self._proc: subprocess.Popen[str] | None = None

    def url(self, mount: str = "s") -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount}"

    def start(self) -> RtspServer:
        self._proc = subprocess.Popen([SYSTEM_PYTHON, str(_SERVER_SCRIPT), str(self.port), str(self.clip),
                                       *self.mounts], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if "ready" not in line:
            raise RuntimeError(f"RTSP server did not start: {line!r}")
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class MjpegServer:
    """`frames` (RGB) looped at `fps` as multipart JPEG at http://127.0.0.1:PORT/mjpeg (a thread)."""

    def __init__(self, frames: np.ndarray, fps: float = 10.0) -> None:
        jpegs = [cv2.imencode(".jpg", f[..., ::-1])[1].tobytes() for f in frames]
        period = 1.0 / fps

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for i in range(10**9):
                        jpeg = jpegs[i % len(jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        time.sleep(period)
                except (BrokenPipeError, ConnectionResetError):
                    return

            def log_message(self, *_args: object) -> None:
                return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/mjpeg"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> MjpegServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


__all__ = ["RTSP_OK", "MjpegServer", "RtspServer", "free_port", "h264_clip", "needs_rtsp", "world_frames"]
