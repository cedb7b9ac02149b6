"""Pulled cameras end to end: a real RTSP server (GStreamer) and an MJPEG server on loopback, the
Serve app, CameraIngest actors and an executor, driven over HTTP like an operator would.

One Serve app for the module; each test uses its own camera ids. Sources are tiny (96x64, 10 fps).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import ray
import yaml
from ray import serve

from actors.state_store import get_or_create_state_store
from app.serve_app import build_app
from tests.helpers.builders import square_frames, tiny_package
from tests.helpers.streams import (
    MjpegServer,
    RtspServer,
    free_port,
    h264_clip,
    needs_rtsp,
    world_frames,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

ADMIN = "admin-" + "i" * 26
APP_NAME = "stemcell-ingest-test"
NAMESPACE = "stemcell-ingest-test"


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("ingest")
    tiny_package(root / "pkg", branchpoints=(0, 3), apps=("car",), detect_apps=("cars",))
    (root / "videos").mkdir()
    port = free_port()
    config = root / "serve.yaml"
    config.write_text(yaml.safe_dump({
        "package_dir": str(root / "pkg"), "state_path": str(root / "state.db"), "admin_token_env": "STEMCELL_INGEST_TEST",
        "app_name": APP_NAME, "ingress": {"num_cpus": 0.25},
        "executors": {"count": 1, "num_gpus": 0.25, "num_cpus": 1, "namespace": NAMESPACE, "max_wait_ms": 2},
        "ingest": {"allowed_dirs": [str(root / "videos")], "cameras_per_actor": 4, "num_cpus": 0.1, "max_failures": 3,
                   "offline_retry_s": 1.0, "backoff_base_s": 0.2, "backoff_cap_s": 1.0, "open_timeout_s": 3.0},
    }))
    os.environ["STEMCELL_INGEST_TEST"] = ADMIN
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"config_path": str(config)}), name=APP_NAME, route_prefix="/")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {ADMIN}"},
                      timeout=120.0) as client:
        client.root = root  # type: ignore[attr-defined]
        yield client
    serve.shutdown()
    for actor in ray.util.list_named_actors(all_namespaces=True):  # detached ingest actors outlive Serve
        if actor["namespace"] == NAMESPACE and actor["name"].startswith("stemcell-ingest"):
            ray.kill(ray.get_actor(actor["name"], namespace=NAMESPACE))
    os.environ.pop("STEMCELL_INGEST_TEST", None)


def _camera(http: httpx.Client, camera_id: str) -> dict[str, Any]:
    page = http.get("/admin/cameras", params={"limit": 1000}).json()
    return next(c for c in page["cameras"] if c["camera_id"] == camera_id)


def _wait(http: httpx.Client, camera_id: str, ok: Callable[[dict[str, Any]], bool], timeout_s: float = 60.0
          ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        cam = _camera(http, camera_id)
        if ok(cam):
            return cam
        if time.monotonic() > deadline:
            raise AssertionError(f"camera {camera_id} never got there: {cam}")
        time.sleep(0.3)


def _analysed(http: httpx.Client, camera_id: str) -> int:
    return http.get(f"/cameras/{camera_id}/status").json()["executor_stats"]["frames"]


@pytest.fixture(scope="module")
def clip(http: httpx.Client) -> Path:
    return h264_clip(http.root / "videos" / "clip.mp4", 40)  # type: ignore[attr-defined]


@needs_rtsp
def test_rtsp_camera_is_analysed_and_survives_a_server_restart(http: httpx.Client, clip: Path) -> None:
    server = RtspServer(clip).start()
    try:
        added = http.post("/admin/cameras", json={"camera_id": "rtsp-1", "apps": ["car"], "fps": 10,
                                                  "source": {"url": server.url(), "transport": "tcp"}})
        assert added.status_code == 201, added.text
        assert added.json()["token"] is None  # pulled cameras need no token
        before = _analysed(http, "rtsp-1")
        cam = _wait(http, "rtsp-1", lambda c: c["state"] == "streaming" and (c["fps_analysed"] or 0) > 0)
        assert cam["fps_in"] > 0 and cam["last_frame_at"] > time.time() - 10 and cam["ingest_actor"]
        assert _analysed(http, "rtsp-1") > before
        actor = ray.get_actor(cam["ingest_actor"], namespace=NAMESPACE)
        pid = ray.get(actor.pid.remote())
        server.stop()
        cam = _wait(http, "rtsp-1", lambda c: c["state"] in ("reconnecting", "offline"))
        assert cam["last_error"]
        server.start()
        cam = _wait(http, "rtsp-1", lambda c: c["state"] == "streaming" and c["reconnects"] >= 1)
        assert ray.get(actor.pid.remote()) == pid  # the outage never killed the actor
        frames = _analysed(http, "rtsp-1")
        time.sleep(1.5)
        assert _analysed(http, "rtsp-1") > frames
        # disabled, then enabled again (PATCH keeps the other fields)
        assert http.patch("/admin/cameras/rtsp-1", json={"enabled": False}).status_code == 200
        assert _camera(http, "rtsp-1")["state"] == "stopped"
        assert http.get("/admin/cameras", params={"state": "stopped"}).json()["total"] >= 1
        assert http.patch("/admin/cameras/rtsp-1", json={"enabled": True, "fps": 5}).status_code == 200
        cam = _wait(http, "rtsp-1", lambda c: c["state"] == "streaming")
        assert cam["source"]["url"] == server.url() and cam["apps"][0]["app"] == "car"
    finally:
        server.stop()
        http.delete("/admin/cameras/rtsp-1")


def test_mjpeg_source_over_http(http: httpx.Client) -> None:
    with MjpegServer(world_frames(20)) as mjpeg:
        assert http.post("/admin/cameras", json={"camera_id": "mjpeg-1", "apps": ["car"],
                                                 "source": {"url": mjpeg.url, "fps": 5}}).status_code == 201
        cam = _wait(http, "mjpeg-1", lambda c: c["state"] == "streaming" and (c["fps_analysed"] or 0) > 0)
        assert cam["fps_analysed"] <= 6.5  # analysed at the source's fps (5), not the stream's 10
        http.delete("/admin/cameras/mjpeg-1")


def test_file_source_under_allowed_dirs_loops(http: httpx.Client) -> None:
    from stemcell.world import World, WorldConfig
    from stemcell.world.export import write_mp4

    timeline = World(WorldConfig(seed=3, num_cameras=1, height=48, width=64, fps=10, duration_s=2)).camera(0)
    video = write_mp4(timeline, http.root / "videos" / "loop.mp4", 0, 10)  # type: ignore[attr-defined]  # 1 s
    assert http.post("/admin/cameras", json={"camera_id": "file-1", "apps": ["car"],
                                             "source": {"url": str(video)}}).status_code == 201
    _wait(http, "file-1", lambda c: c["state"] == "streaming")
    time.sleep(2.5)  # past the end of the 1 s file: it loops, the camera keeps streaming
    cam = _camera(http, "file-1")
    assert cam["state"] == "streaming" and cam["fps_in"] > 3 and cam["reconnects"] == 0
    # its newest analysed frame and results, kept by its ingest actor, through the ingress's routes
    latest = http.get("/cameras/file-1/latest").json()
    assert latest["camera_id"] == "file-1" and latest["frame_ts"] > time.time() - 10 and latest["snapshot"]
    assert latest["frame_size"] == [64, 48] and [r["app"] for r in latest["results"]] == ["car"]
    assert http.patch("/admin/cameras/file-1", json={"enabled": False}).status_code == 200
    time.sleep(0.5)  # a frame in flight lands: the snapshot stops changing
    shot = http.get("/cameras/file-1/snapshot", params={"side": 32})
    assert shot.status_code == 200 and shot.headers["content-type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(shot.content, np.uint8), cv2.IMREAD_COLOR).shape == (24, 32, 3)
    assert shot.headers["etag"] and shot.headers["cache-control"] == "private, max-age=2"
    again = http.get("/cameras/file-1/snapshot", params={"side": 32}, headers={"If-None-Match": shot.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == shot.headers["etag"]
    # an ingest actor that is not there: a clear 503, not a 500 (the stored name pointed elsewhere, then back)
    store = get_or_create_state_store(str(http.root / "state.db"), namespace=NAMESPACE)  # type: ignore[attr-defined]
    config = dict(ray.get(store.get_camera.remote("file-1")).config)
    ray.get(store.put_camera.remote("file-1", config | {"ingest_actor": "stemcell-ingest-gone"}))
    for route in ("snapshot", "latest"):
        gone = http.get(f"/cameras/file-1/{route}")
        assert gone.status_code == 503 and "stemcell-ingest-gone" in gone.json()["detail"]
    ray.get(store.put_camera.remote("file-1", config))
    http.delete("/admin/cameras/file-1")
    assert all(c["camera_id"] != "file-1" for c in http.get("/admin/cameras").json()["cameras"])


@needs_rtsp
def test_pulled_detect_boxes_are_in_the_decoded_frames_pixels(http: httpx.Client) -> None:
    """A 96x64 file of one frame with bright squares (the detect app's 'car's), each model-input pixel a
    3x2 block: the served boxes are in the decoded frame's pixels, where the squares are."""
    squares = square_frames(n=8, seed=3)
    big = np.repeat(np.repeat(squares.frames[7], 2, axis=0), 3, axis=1)  # two squares, one right of x = 32
    video = http.root / "videos" / "squares.mp4"  # type: ignore[attr-defined]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    for _ in range(20):
        writer.write(big[..., ::-1])
    writer.release()
    assert http.post("/admin/cameras", json={"camera_id": "file-boxes", "apps": ["cars"],
                                             "source": {"url": str(video)}}).status_code == 201
    _wait(http, "file-boxes", lambda c: c["state"] == "streaming")
    time.sleep(1.0)
    latest = http.get("/cameras/file-boxes/latest").json()
    http.delete("/admin/cameras/file-boxes")
    (result,) = latest["results"]
    assert latest["frame_size"] == [96, 64] and result["app"] == "cars" and result["boxes"]
    truth = squares.boxes[7][:, 1:] * np.array([96, 64, 96, 64])
    for box in result["boxes"]:
        assert 0 <= box["x0"] <= box["x1"] <= 96 and 0 <= box["y0"] <= box["y1"] <= 64
    top = max(result["boxes"], key=lambda b: b["score"])
    x0, y0, x1, y1 = top["x0"], top["y0"], top["x1"], top["y1"]
    overlap = [max(0.0, min(x1, t[2]) - max(x0, t[0])) * max(0.0, min(y1, t[3]) - max(y0, t[1])) for t in truth]
    union = [(x1 - x0) * (y1 - y0) + (t[2] - t[0]) * (t[3] - t[1]) - o for t, o in zip(truth, overlap)]
    assert max(o / u for o, u in zip(overlap, union)) > 0.3, (result["boxes"], truth)  # on a square, in 96x64 px
    assert x1 > 40  # not in the model input's 32 px


def test_push_cameras_are_listed_as_push(http: httpx.Client) -> None:
    added = http.post("/admin/cameras", json={"camera_id": "push-1", "apps": ["car"], "fps": 4})
    assert added.status_code == 201 and added.json()["token"]  # push cameras still get their token
    cam = _camera(http, "push-1")
    assert (cam["state"], cam["source"], cam["ingest_actor"], cam["apps"][0]["app"]) == ("push", None, None, "car")
    assert http.patch("/admin/cameras/push-1", json={"fps": 8}).status_code == 200
    assert _camera(http, "push-1")["fps"] == 8 and _camera(http, "push-1")["apps"][0]["app"] == "car"
    assert http.patch("/admin/cameras/nobody", json={"fps": 8}).status_code == 404
    assert http.get("/admin/cameras", params={"state": "sleeping"}).status_code == 422
    assert http.get("/admin/cameras", headers={"Authorization": "Bearer " + "c" * 32}).status_code == 403
    paths = http.get("/openapi.json").json()["paths"]
    assert {"get", "post"} <= set(paths["/admin/cameras"]) and "patch" in paths["/admin/cameras/{camera_id}"]
    assert "post" in paths["/admin/cameras:bulk"]
    http.delete("/admin/cameras/push-1")


def test_bad_sources(http: httpx.Client, tmp_path: Path) -> None:
    def add(camera_id: str, url: str) -> httpx.Response:
        return http.post("/admin/cameras", json={"camera_id": camera_id, "apps": ["car"], "source": {"url": url}})

    assert add("bad-1", "ftp://127.0.0.1/x").status_code == 422
    outside = tmp_path / "clip.mp4"
    outside.write_bytes(b"\0")
    assert add("bad-2", str(outside)).status_code == 403
    assert http.get("/admin/cameras").json()["total"] == len(http.get("/admin/cameras").json()["cameras"])
    closed = free_port()  # nothing listens there
    assert add("dead-1", f"rtsp://127.0.0.1:{closed}/none").status_code == 201
    cam = _wait(http, "dead-1", lambda c: c["state"] == "offline")
    assert "cannot open" in cam["last_error"]
    assert {c["camera_id"] for c in http.get("/admin/cameras", params={"state": "offline"}).json()["cameras"]} >= {
        "dead-1"}
    http.delete("/admin/cameras/dead-1")


@needs_rtsp
def test_killed_ingest_actor_resumes_its_cameras(http: httpx.Client, clip: Path) -> None:
    with RtspServer(clip) as server:
        http.post("/admin/cameras", json={"camera_id": "rtsp-2", "apps": ["car"], "source": {"url": server.url()}})
        cam = _wait(http, "rtsp-2", lambda c: c["state"] == "streaming")
        actor = ray.get_actor(cam["ingest_actor"], namespace=NAMESPACE)
        pid = ray.get(actor.pid.remote())
        ray.kill(actor, no_restart=False)
        deadline = time.monotonic() + 60
        while True:  # Ray restarts it; the constructor re-attaches the camera from the StateStore
            try:
                if ray.get(actor.pid.remote(), timeout=5) != pid:
                    break
            except ray.exceptions.RayError:
                pass
            assert time.monotonic() < deadline, "ingest actor did not restart"
            time.sleep(0.5)
        _wait(http, "rtsp-2", lambda c: c["state"] == "streaming" and (c["fps_analysed"] or 0) > 0)
        http.delete("/admin/cameras/rtsp-2")


def test_bulk_registration_of_1000_cameras(http: httpx.Client, clip: Path) -> None:
    """1,000 pulled cameras in one request; the first ENABLED of them (the looped file, two ingest actors
    of `cameras_per_actor: 4`) really stream, the rest are registered disabled."""
    enabled = 6
    cams = [{"camera_id": f"bulk-{i:04d}", "apps": ["car"], "enabled": i < enabled,
             "source": {"url": str(clip) if i < enabled else f"rtsp://127.0.0.1:9/cam{i}"}} for i in range(1000)]
    dup = http.post("/admin/cameras:bulk", json={"cameras": cams[:3] + [cams[1]]})
    assert dup.status_code == 422 and "bulk-0001" in dup.text
    started = time.perf_counter()
    answer = http.post("/admin/cameras:bulk", json={"cameras": cams})
    seconds = time.perf_counter() - started
    assert answer.status_code == 201, answer.text[:500]
    assert len(answer.json()["cameras"]) == 1000
    page = http.get("/admin/cameras", params={"state": "stopped", "offset": 990, "limit": 100}).json()
    assert page["total"] >= 1000 - enabled and len(page["cameras"]) == page["total"] - 990
    assert seconds < 60
    for i in range(enabled):
        cam = _wait(http, f"bulk-{i:04d}", lambda c: c["state"] == "streaming" and (c["fps_analysed"] or 0) > 0)
        assert cam["ingest_actor"] is not None
    assert len({_camera(http, f"bulk-{i:04d}")["ingest_actor"] for i in range(enabled)}) >= 2  # spread over actors
    for i in range(enabled):  # the module's last cameras: stop their readers
        assert http.delete(f"/admin/cameras/bulk-{i:04d}").status_code == 200
