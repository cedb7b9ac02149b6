"""Where a pulled camera's frames come from, checked before anything opens it.

A source is an `rtsp://` / `rtsps://` stream, an `http(s)://` stream (MJPEG or anything FFmpeg
reads), or a video file on the server, looped. Files are the dangerous kind: an admin token must not
turn into "read any file the server can", so a path must lie under one of `ingest.allowed_dirs`
(after resolving `..` and symlinks). A source that is well-formed but unreachable is *not* an error
here: it is accepted and the camera shows `offline` with the reason.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

Kind = Literal["rtsp", "http", "file"]
Transport = Literal["tcp", "udp"]
_SHORT_PROBE = "analyzeduration;500000|probesize;262144"  # 0.5 s / 256 KiB of stream before decoding starts
_SCHEMES: dict[str, Kind] = {"rtsp": "rtsp", "rtsps": "rtsp", "http": "http", "https": "http", "file": "file"}


class UnsupportedSource(ValueError):
    """Not a source this server can read (HTTP 422)."""


class ForbiddenSource(PermissionError):
    """A file outside the folders the server may read from (HTTP 403)."""


@dataclass(frozen=True)
class Source:
    """A checked source: `location` is the URL, or the resolved absolute path of a file."""

    url: str
    kind: Kind
    location: str
    fps: float | None = None  # frames/s to analyse; None = the camera's stream rate
    transport: Transport = "tcp"  # RTSP only: interleaved TCP survives NAT and loss; UDP has less latency

    def capture_options(self) -> str:
        """`OPENCV_FFMPEG_CAPTURE_OPTIONS` for this source (FFmpeg's `key;value|key;value` form).

        The RTSP transport, and a short probe: FFmpeg's default 5 s of stream analysis would make
        every (re)connect take that long, while an RTSP server's SDP already names the codec. Open
        and read timeouts go through OpenCV's own capture parameters, whose meaning does not change
        between the FFmpeg versions OpenCV wheels bundle."""
        return f"rtsp_transport;{self.transport}|{_SHORT_PROBE}" if self.kind == "rtsp" else ""

    def as_config(self) -> dict[str, object]:
        """The stored form (kept with the camera in the StateStore, so a restarted actor re-attaches it)."""
        return {"url": self.url, "fps": self.fps, "transport": self.transport}


def _allowed_file(path_text: str, allowed_dirs: Sequence[Path]) -> str:
    path = Path(path_text).expanduser()
    if not path.is_absolute():
        raise UnsupportedSource(f"a file source must be an absolute path, got {path_text!r}")
    resolved = Path(os.path.realpath(path))
    for folder in allowed_dirs:
        if resolved.is_relative_to(Path(os.path.realpath(folder))):
            return str(resolved)
    raise ForbiddenSource(f"{path_text} is outside the folders file sources may come from (ingest.allowed_dirs)")


def check_source(url: str, allowed_dirs: Sequence[Path], *, fps: float | None = None,
                 transport: Transport = "tcp") -> Source:
    """Validate `url` (raises `UnsupportedSource` / `ForbiddenSource`); reachability is not checked."""
    text = url.strip()
    if not text:
        raise UnsupportedSource("source url is empty")
    if text.startswith(("/", "~")):
        return Source(text, "file", _allowed_file(text, allowed_dirs), fps, transport)
    parts = urlsplit(text)
    kind = _SCHEMES.get(parts.scheme.lower())
    if kind is None:
        raise UnsupportedSource(f"unsupported source scheme {parts.scheme or 'none'!r} in {text!r}: "
                                f"use rtsp(s)://, http(s):// or an absolute file path")
    if kind == "file":
        return Source(text, "file", _allowed_file(parts.path, allowed_dirs), fps, transport)
    if not parts.hostname:
        raise UnsupportedSource(f"source {text!r} names no host")
    return Source(text, kind, text, fps, transport)
