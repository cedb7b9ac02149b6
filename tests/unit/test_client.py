"""Client: what goes on the wire, and the retry logic (httpx.MockTransport stands in for the server)."""
from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Callable

import cv2
import httpx
import numpy as np
import pytest

from app.streamer import run_stream
from benchmarks.ports import reserved_port
from stemcell.client import (
    Admin,
    Camera,
    RetryPolicy,
    StemcellError,
    backoff_delay,
    own_size_params,
    parse_retry_after,
)
from stemcell.frame_stream import split_frames
from stemcell.imaging import encode_jpeg, encode_png, resize_frames

Handler = Callable[[httpx.Request], httpx.Response]
RESULT = {"camera_id": "cam-1", "frame_ts": 1.5, "results": [], "model_versions": {}}


class Recorder:
    """Serves scripted responses in order and keeps every request it saw."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def _camera(handler: Handler, sleeps: list[float], **kwargs: object) -> Camera:
    """A camera that sends arrays whole unless a test says otherwise (these tests look at the wire)."""
    kwargs.setdefault("resize", False)
    return Camera("http://stemcell.test/", "cam-token-0123456789", "cam-1", transport=httpx.MockTransport(handler),
                  sleep=sleeps.append, rng=random.Random(0), clock=lambda: 1_000_000.0, **kwargs)


def _frame(height: int, width: int) -> np.ndarray:
    """A smooth frame with detail at every scale (resizing it changes it, encoding keeps it)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 255 // width), (y * 255 // height), ((x + y) % 64) * 4], axis=-1).astype(np.uint8)


def test_camera_resizes_arrays_to_the_input_size_it_asks_for_once() -> None:
    status = httpx.Response(200, json={"camera_id": "cam-1", "input_size": 24})
    rec = Recorder(status, httpx.Response(200, json=RESULT), httpx.Response(200, json={"frames": [RESULT, RESULT]}))
    frame = _frame(90, 160)
    cam = _camera(rec, [], resize=True)
    cam.infer(frame)
    cam.infer_batch([frame, frame])
    assert [(r.method, r.url.path) for r in rec.requests] == [
        ("GET", "/cameras/cam-1/status"), ("POST", "/cameras/cam-1/frames"), ("POST", "/cameras/cam-1/frames:batch")]
    # the server's resize rule, then JPEG: exactly what a camera with that size should send
    assert rec.requests[1].content == encode_jpeg(resize_frames(frame, 24))
    assert rec.requests[2].content.count(encode_jpeg(resize_frames(frame, 24))) == 2
    assert len(rec.requests[1].content) < len(encode_jpeg(frame)) / 3


def test_camera_given_its_input_size_asks_nothing_and_bytes_are_never_resized() -> None:
    rec = Recorder(*[httpx.Response(200, json=RESULT)] * 3)
    jpeg = encode_jpeg(_frame(90, 160))
    _camera(rec, [], resize=True).infer(jpeg)  # bytes: no status call, sent as they are
    _camera(rec, [], resize=True, input_size=32).infer(_frame(90, 160))
    _camera(rec, []).infer(_frame(90, 160))  # resize=False: whole
    assert [r.method for r in rec.requests] == ["POST"] * 3
    assert rec.requests[0].content == jpeg
    assert rec.requests[1].content == encode_jpeg(resize_frames(_frame(90, 160), 32))
    assert rec.requests[2].content == encode_jpeg(_frame(90, 160))


def test_a_resized_frame_tells_the_server_its_own_size_so_boxes_come_back_in_its_pixels() -> None:
    """Resized arrays go with `?w=&h=` (the size the caller gave), so the server serves detect boxes and
    tests zones in those pixels; bytes and frames sent whole carry no declaration (their own header says it)."""
    rec = Recorder(*[httpx.Response(200, json=RESULT)] * 4, httpx.Response(200, json={"frames": [RESULT, RESULT]}))
    cam = _camera(rec, [], resize=True, input_size=24)
    cam.infer(_frame(90, 160), ts=2.0)
    cam.infer(_frame(24, 24))  # already at the input size: nothing resized, nothing declared
    cam.infer(encode_jpeg(_frame(90, 160)))
    _camera(rec, []).infer(_frame(90, 160))  # resize=False
    cam.infer_batch([_frame(90, 160), _frame(90, 160)])
    params = [dict(r.url.params) for r in rec.requests]
    assert params == [{"ts": "2.0", "w": "160", "h": "90"}, {}, {}, {}, {"w": "160", "h": "90"}]


def test_own_size_params_need_one_size_per_request() -> None:
    assert own_size_params([None, None]) == {}
    assert own_size_params([(1080, 1920), (1080, 1920)]) == {"w": 1920, "h": 1080}
    for mixed in ([(1080, 1920), (720, 1280)], [(1080, 1920), None]):
        with pytest.raises(ValueError, match="one size per batch"):
            own_size_params(mixed)
    rec = Recorder()
    with pytest.raises(ValueError, match="one size per batch"):  # refused before anything is sent
        _camera(rec, [], resize=True, input_size=24).infer_batch([_frame(90, 160), _frame(60, 80)])
    assert rec.requests == []


def test_infer_sends_a_jpeg_of_the_rgb_frame_with_bearer_auth() -> None:
    rec, sleeps = Recorder(httpx.Response(200, json=RESULT)), []
    frame = np.zeros((24, 32, 3), np.uint8)
    frame[..., 0] = 200  # pure red: a BGR mix-up would come back blue
    assert _camera(rec, sleeps).infer(frame, ts=1.5) == RESULT
    req = rec.requests[0]
    assert req.method == "POST" and req.url.path == "/cameras/cam-1/frames" and req.url.params["ts"] == "1.5"
    assert req.headers["authorization"] == "Bearer cam-token-0123456789"
    assert req.headers["content-type"] == "image/jpeg"
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(req.content, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert decoded.shape == (24, 32, 3) and decoded[..., 0].mean() > 180 and decoded[..., 2].mean() < 20
    assert sleeps == []


def test_infer_passes_png_bytes_through_and_refuses_other_bytes() -> None:
    rec = Recorder(httpx.Response(200, json=RESULT))
    png = encode_png(np.zeros((4, 4, 3), np.uint8))
    _camera(rec, []).infer(png)
    assert rec.requests[0].content == png and rec.requests[0].headers["content-type"] == "image/png"
    with pytest.raises(ValueError, match="neither JPEG nor PNG"):
        _camera(rec, []).infer(b"not an image")


def test_infer_batch_sends_the_lean_frame_stream_with_timestamps_in_the_query() -> None:
    rec = Recorder(httpx.Response(200, json={"camera_id": "cam-1", "frames": [RESULT, RESULT]}))
    frames = [_frame(24, 32), _frame(24, 32) // 2]
    assert _camera(rec, []).infer_batch(frames, timestamps=[1.5, 2.25]) == [RESULT, RESULT]
    req = rec.requests[0]
    assert req.url.path == "/cameras/cam-1/frames:batch" and req.headers["content-type"] == "application/octet-stream"
    assert split_frames(req.content, max_frames=2) == [encode_jpeg(f) for f in frames]
    assert req.url.params["ts"] == "1.5,2.25"
    with pytest.raises(ValueError, match="1 timestamps for 2 frames"):
        _camera(rec, []).infer_batch(frames, timestamps=[0.0])


def test_camera_id_is_escaped_in_the_path() -> None:
    rec = Recorder(httpx.Response(200, json={}))
    Camera("http://x", "t" * 20, "../admin", transport=httpx.MockTransport(rec)).status()
    assert rec.requests[0].url.raw_path == b"/cameras/..%2Fadmin/status"


def test_503_is_retried_honouring_retry_after() -> None:
    rec, sleeps = Recorder(httpx.Response(503, headers={"Retry-After": "2"}, json={"detail": "busy"}),
                           httpx.Response(200, json=RESULT)), []
    assert _camera(rec, sleeps).infer(b"\xff\xd8\xff" + b"\x00" * 10) == RESULT
    assert len(rec.requests) == 2
    assert sleeps == [2.0]  # the server's hint is a floor; our first backoff (<= 0.1 s) is shorter


def test_connection_errors_back_off_exponentially_with_jitter_then_fail_clearly() -> None:
    rec, sleeps = Recorder(*[httpx.ConnectError("refused")] * 4), []
    policy = RetryPolicy(retries=3, base_delay_s=0.1, max_delay_s=0.3, jitter=0.5)
    with pytest.raises(StemcellError, match="no answer from the server") as err:
        _camera(rec, sleeps, policy=policy).status()
    assert err.value.status == 0
    assert len(rec.requests) == 4 and len(sleeps) == 3
    for attempt, delay in enumerate(sleeps):
        nominal = min(0.3, 0.1 * 2**attempt)
        assert 0.5 * nominal <= delay <= nominal


def test_client_errors_are_not_retried_and_carry_status_and_message() -> None:
    for status, detail in [(400, "JPEG image is truncated"), (403, "token does not match"), (413, "too big")]:
        rec, sleeps = Recorder(httpx.Response(status, json={"detail": detail})), []
        with pytest.raises(StemcellError) as err:
            _camera(rec, sleeps).infer(b"\xff\xd8\xff")
        assert (err.value.status, err.value.message) == (status, detail)
        assert str(err.value) == f"HTTP {status}: {detail}"
        assert len(rec.requests) == 1 and sleeps == []


def test_retries_run_out_on_persistent_overload() -> None:
    rec, sleeps = Recorder(*[httpx.Response(503, text="overloaded")] * 3), []
    with pytest.raises(StemcellError) as err:
        _camera(rec, sleeps, retries=2).status()
    assert err.value.status == 503 and err.value.message == "overloaded"
    assert len(rec.requests) == 3 and len(sleeps) == 2


def test_admin_calls() -> None:
    rec = Recorder(httpx.Response(201, json={"camera_id": "c1", "token": "secret"}),
                   httpx.Response(200, json={"removed": True}),
                   httpx.Response(201, json={"app": "car"}),
                   httpx.Response(200, json={"cameras": {}}))
    admin = Admin("http://x", "admin-token-0123456789", transport=httpx.MockTransport(rec))
    assert admin.add_camera("c1", ["car"], fps=5.0)["token"] == "secret"
    admin.remove_camera("c1")
    admin.register_app("car", "/pkg")
    assert admin.plan() == {"cameras": {}}
    assert [(r.method, r.url.path) for r in rec.requests] == [
        ("POST", "/admin/cameras"), ("DELETE", "/admin/cameras/c1"), ("POST", "/admin/apps"), ("GET", "/admin/plan")]
    assert json.loads(rec.requests[0].content) == {"camera_id": "c1", "apps": ["car"], "fps": 5.0}
    assert json.loads(rec.requests[2].content) == {"app": "car", "package_dir": "/pkg"}


def test_real_refused_connection_is_retried_then_reported() -> None:
    sleeps: list[float] = []
    with reserved_port() as port:  # held, never listening: nothing can answer there
        cam = Camera(f"http://127.0.0.1:{port}", "t" * 20, "cam-1", retries=1, sleep=sleeps.append)
        with pytest.raises(StemcellError, match="ConnectError"):
            cam.status()
    assert len(sleeps) == 1


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(email.utils.formatdate(now + 7, usegmt=True), now) == pytest.approx(7.0)
    assert parse_retry_after(email.utils.formatdate(now - 7, usegmt=True), now) == 0.0
    assert parse_retry_after(None, now) is None and parse_retry_after("soon", now) is None


def test_backoff_delay_caps_and_floors() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=4.0, jitter=0.0)
    rng = random.Random(0)
    assert [backoff_delay(policy, a, None, rng) for a in range(4)] == [1.0, 2.0, 4.0, 4.0]
    assert backoff_delay(policy, 0, 3.0, rng) == 3.0  # Retry-After longer than our backoff wins
    assert backoff_delay(policy, 0, 60.0, rng) == 4.0  # but never beyond the cap


def test_stream_sender_drops_frames_instead_of_queueing() -> None:
    """A server at ~20 requests/s and a 100 fps camera: the sender keeps up by dropping, never by queueing."""
    def slow(request: httpx.Request) -> httpx.Response:
        time.sleep(0.05)
        return httpx.Response(200, json={**RESULT, "results": [{"app": "car", "label": True, "score": 0.9, "event_active": True}]})

    cam = Camera("http://x", "t" * 20, "cam-1", transport=httpx.MockTransport(slow), input_size=16)
    lines: list[str] = []
    summary = run_stream("synthetic:0?size=32x32&fps=100&duration=60", "cam-1", "http://x", "t" * 20, fps=100,
                         duration_s=1.0, concurrency=1, report_every_s=0.5, out=lines.append, client=cam)
    assert summary["frames_read"] >= 60  # paced near real time (1 s at 100 fps), not as fast as frames render
    assert summary["frames_read"] <= 101
    assert 8 <= summary["frames_sent"] <= 25  # ~20 at 50 ms each
    assert summary["frames_dropped"] == summary["frames_read"] - summary["frames_sent"]
    assert summary["positives"] == {"car": summary["frames_sent"]}
    assert any("dropped" in line for line in lines)

