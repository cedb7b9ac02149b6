"""Python client for a Stemcell server: cameras post frames, operators manage cameras and apps.

    cam = Camera("http://host:8000", token, "cam-1")
    cam.infer(rgb_frame)            # -> {"camera_id", "frame_ts", "results": [...], "model_versions"}

A camera's frames are analysed at its `input_size` (a square of 64-224 px), so by default arrays
are resized to it here, with the server's own rule (`stemcell.imaging.resize_frames`), before
JPEG encoding: a 1080p frame goes out as a few KB instead of a few hundred, and the server has
nothing left to resize. The size comes from the registration answer (`input_size=`) or, failing
that, from one `GET /cameras/{id}/status` before the first frame. `resize=False` sends frames whole
(e.g. to keep full frames in event snapshots); JPEG/PNG bytes are always sent as they are. A resized
frame goes with `?w=&h=`, its size as given here, so the server serves detect apps' boxes (and tests
their zones) in the pixels of the frame the caller passed, not in the uploaded one's.

Overload is normal for a camera fleet (503 + Retry-After from the server's back-pressure, a Serve
replica restarting, a dropped connection), so those are retried with capped exponential backoff
and jitter (jitter keeps a fleet that failed together from retrying together).  Every other
failure raises `StemcellError` with the server's status and message: retrying a 403 or a 413 can
only repeat it.
"""
from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from stemcell.frame_stream import MEDIA_TYPE as FRAME_STREAM
from stemcell.frame_stream import encode_frames
from stemcell.imaging import encode_jpeg, resize_frames, sniff_format
from stemcell.retry import jittered_backoff

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
Frame = np.ndarray | bytes


class StemcellError(RuntimeError):
    """A request the server refused or could not answer; `status` is 0 when no answer came."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up on one request."""

    retries: int = 3  # extra attempts after the first
    base_delay_s: float = 0.1  # first backoff; doubles each attempt
    max_delay_s: float = 5.0  # cap on one backoff (and on an honoured Retry-After)
    jitter: float = 0.5  # each delay is scaled by a uniform factor in [1 - jitter, 1]


def parse_retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from `now`: delta-seconds or an HTTP date (RFC 9110); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def backoff_delay(policy: RetryPolicy, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
    """Seconds to wait before retry number `attempt` (0-based).

    The server's Retry-After is a floor (it knows when its queue drains); exponential backoff with
    jitter applies on top of it when ours is longer, and everything is capped at `max_delay_s`.
    """
    jittered = jittered_backoff(policy.base_delay_s, policy.max_delay_s, attempt, policy.jitter, rng.random())
    return min(policy.max_delay_s, max(jittered, retry_after_s or 0.0))


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else str(detail)[:500]


def own_size_params(sizes: Sequence[tuple[int, int] | None]) -> dict[str, int]:
    """`?w=&h=` for a request whose frames were resized here (sizes: each frame's (height, width) as
    given, None for one sent as it is); the server takes it as every frame's own size, so the frames
    of one request must all have been resized from one size."""
    resized = set(sizes) - {None}
    if not resized:
        return {}
    if len(resized) > 1 or None in sizes:
        raise ValueError(f"frames resized from different sizes ({sorted(resized)}) or mixed with frames sent as "
                         "they are cannot share one request: send one size per batch")
    (height, width), = resized
    return {"w": width, "h": height}


class _Client:
    """One HTTP connection pool plus the retry loop; subclasses only say which routes to call."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy(retries=retries)
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {token}"})
        self._sleep, self._clock = sleep, clock
        self._rng = rng or random.Random()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send, retrying overload and connection failures; return the JSON body or raise StemcellError."""
        for attempt in range(self.policy.retries + 1):
            last = attempt == self.policy.retries
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise StemcellError(0, f"{method} {path}: no answer from the server ({type(exc).__name__}: {exc})") from exc
                delay = backoff_delay(self.policy, attempt, None, self._rng)
                log.debug("%s %s: %s, retrying in %.2fs", method, path, type(exc).__name__, delay)
            else:
                if response.status_code < 400:
                    return response.json()
                if response.status_code not in RETRYABLE_STATUS or last:
                    raise StemcellError(response.status_code, _error_message(response))
                retry_after = parse_retry_after(response.headers.get("Retry-After"), self._clock())
                delay = backoff_delay(self.policy, attempt, retry_after, self._rng)
                log.debug("%s %s: HTTP %d, retrying in %.2fs", method, path, response.status_code, delay)
            self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Camera(_Client):
    """A camera's view of the server: post frames, read its own status (its token only opens its routes)."""

    def __init__(self, base_url: str, token: str, camera_id: str, *, resize: bool = True,
                 input_size: int | None = None, **kwargs: Any) -> None:
        """`resize`: send arrays at the camera's input size (learned from `input_size`, the registration
        answer's, or else asked once); False sends them whole."""
        super().__init__(base_url, token, **kwargs)
        self.camera_id = camera_id
        self._path_id = quote(camera_id, safe="")
        self.resize = resize
        self._input_size = input_size

    def input_size(self) -> int | None:
        """The side arrays are resized to before encoding; None when `resize` is off."""
        if self.resize and self._input_size is None:
            self._input_size = int(self.status()["input_size"])
        return self._input_size if self.resize else None

    def _encoded(self, frame: Frame) -> tuple[bytes, str, tuple[int, int] | None]:
        """(bytes, content type, (height, width) of the frame as given when it was resized here, else
        None): arrays are JPEG-encoded (first resized to `input_size()` unless `resize` is off);
        JPEG/PNG bytes are sent as they are."""
        if isinstance(frame, (bytes, bytearray, memoryview)):
            data = bytes(frame)
            fmt = sniff_format(data)
            if fmt is None:
                raise ValueError("frame bytes are neither JPEG nor PNG; pass an RGB uint8 array instead")
            return data, f"image/{fmt}", None
        rgb, size = np.asarray(frame), self.input_size()
        if size is None or rgb.shape[:2] == (size, size):
            return encode_jpeg(rgb), "image/jpeg", None
        return encode_jpeg(resize_frames(rgb, size)), "image/jpeg", (int(rgb.shape[0]), int(rgb.shape[1]))

    def infer(self, frame: Frame, ts: float | None = None) -> dict:
        """One frame (RGB uint8 array, or JPEG/PNG bytes) -> that frame's per-app results (detect
        apps' boxes in the given frame's pixels)."""
        data, content_type, own = self._encoded(frame)
        params: dict[str, Any] = {"ts": ts} if ts is not None else {}
        return self.request("POST", f"/cameras/{self._path_id}/frames", content=data,
                            headers={"Content-Type": content_type}, params={**params, **own_size_params([own])})

    def infer_batch(self, frames: Sequence[Frame], timestamps: Sequence[float] | None = None) -> list[dict]:
        """Several frames in one request (far less per-request overhead); one result per frame, in order.
        Sent as the lean `application/octet-stream` body (`stemcell.frame_stream`), not multipart: the
        server slices it instead of parsing a multipart body in Python."""
        if timestamps is not None and len(timestamps) != len(frames):
            raise ValueError(f"{len(timestamps)} timestamps for {len(frames)} frames")
        encoded = [self._encoded(frame) for frame in frames]
        params: dict[str, Any] = own_size_params([own for _, _, own in encoded])
        if timestamps is not None:
            params["ts"] = ",".join(repr(float(t)) for t in timestamps)
        return self.request("POST", f"/cameras/{self._path_id}/frames:batch", params=params,
                            content=encode_frames([data for data, _, _ in encoded]),
                            headers={"Content-Type": FRAME_STREAM})["frames"]

    def status(self) -> dict:
        return self.request("GET", f"/cameras/{self._path_id}/status")


class Admin(_Client):
    """Operator calls (admin token): register cameras and apps, read the plan."""

    def add_camera(self, camera_id: str, apps: Sequence[str | dict], fps: float | None = None,
                   token: str | None = None) -> dict:
        """Register (or reconfigure) a camera; the answer holds its token, shown this once only."""
        body: dict[str, Any] = {"camera_id": camera_id, "apps": list(apps)}
        if fps is not None:
            body["fps"] = fps
        if token is not None:
            body["token"] = token
        return self.request("POST", "/admin/cameras", json=body)

    def remove_camera(self, camera_id: str) -> dict:
        return self.request("DELETE", f"/admin/cameras/{quote(camera_id, safe='')}")

    def register_app(self, app: str, package_dir: str) -> dict:
        return self.request("POST", "/admin/apps", json={"app": app, "package_dir": str(package_dir)})

    def plan(self) -> dict:
        return self.request("GET", "/admin/plan")
