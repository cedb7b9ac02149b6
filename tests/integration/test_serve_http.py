"""The HTTP API end to end: local Ray + Serve, a real (tiny) M-Package, real HTTP via httpx.

Routes, inputs, limits, auth and restart; the frame path under load and at real resolutions is in
`test_serve_http_load.py`. One Serve app for the whole module (`tests.helpers.http_app`); tests that
change state use their own camera ids.  The restart test runs last (pytest keeps file order).
"""
from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from ray import serve

from app.serve_app import build_app
from stemcell.client import Admin, Camera, StemcellError
from stemcell.frame_stream import encode_frames
from stemcell.imaging import encode_jpeg, encode_png
from tests.helpers.http_app import ADMIN_TOKEN, APP_NAME, MAX_IMAGE_BYTES, Server, frame, png_bomb

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

NAMESPACE = "stemcell-test"  # the executors' (read by the `server` fixture of tests/helpers/http_app.py)


def test_build_app_refuses_to_start_without_admin_token(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEMCELL_TEST_ADMIN_TOKEN")
    with pytest.raises(ValueError, match="STEMCELL_TEST_ADMIN_TOKEN"):
        build_app({"config_path": str(server.config_path)})
    monkeypatch.setenv("STEMCELL_TEST_ADMIN_TOKEN", "short")
    with pytest.raises(ValueError, match="too short"):
        build_app({"config_path": str(server.config_path)})


def test_probes_and_openapi(server: Server) -> None:
    with server.http(None) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        paths = http.get("/openapi.json").json()["paths"]
        assert {"/cameras/{camera_id}/frames", "/cameras/{camera_id}/frames:batch", "/cameras/{camera_id}/status",
                "/admin/cameras", "/admin/cameras/{camera_id}", "/admin/apps", "/admin/plan"} <= set(paths)
        assert http.get("/docs").status_code == 200
        assert http.get("/docs-assets/swagger-ui-bundle.js").status_code == 200  # served here, not from a CDN


def test_webhook_targets_private_or_not_http_are_422(server: Server) -> None:
    """This server keeps the default `webhooks.allow_private: false`."""
    with server.http() as http:
        for url, reason in [("http://127.0.0.1:9/hook", "allow_private"), ("http://10.0.0.8/hook", "allow_private"),
                            ("ftp://example.com/hook", "http")]:
            answer = http.post("/admin/webhooks", json={"url": url, "secret": "s" * 20})
            assert answer.status_code == 422 and reason in answer.json()["detail"], (url, answer.text)
        assert http.get("/admin/webhooks").json() == {"webhooks": []}


def test_add_camera_resolves_apps_and_plan(admin: Admin, cam1: Camera) -> None:
    plan = admin.plan()
    entry = plan["cameras"]["cam-1"]
    assert entry["fps"] == 10
    assert entry["apps"]["person"]["branchpoint"] == 3 and entry["apps"]["person"]["fps"] == 5
    assert entry["apps"]["car"]["branchpoint"] in (0, 3, 6) and entry["apps"]["car"]["fps"] == 10
    assert 0.0 <= entry["apps"]["car"]["predicted_f1"] <= 1.0
    assert plan["version"] >= 1


def test_single_frame_happy_path(cam1: Camera) -> None:
    out = cam1.infer(frame(1), ts=12.5)
    assert out["camera_id"] == "cam-1" and out["frame_ts"] == 12.5
    assert sorted(r["app"] for r in out["results"]) == ["car", "person"]
    for r in out["results"]:
        assert isinstance(r["label"], bool) and 0.0 <= r["score"] <= 1.0 and isinstance(r["event_active"], bool)
    png = cam1.infer(encode_png(frame(2)))
    assert len(png["results"]) == 2


def test_same_frame_gives_same_scores_single_and_batch(cam1: Camera) -> None:
    png = encode_png(frame(3))
    single = {r["app"]: r["score"] for r in cam1.infer(png)["results"]}
    batch = cam1.infer_batch([encode_png(frame(4)), png, encode_png(frame(5, (32, 32)))], timestamps=[1.0, 2.0, 3.0])
    assert [f["frame_ts"] for f in batch] == [1.0, 2.0, 3.0]
    assert {r["app"]: r["score"] for r in batch[1]["results"]} == pytest.approx(single, abs=1e-5)


@pytest.mark.parametrize(("body", "content_type", "status", "message"), [
    (b"definitely not an image", "image/jpeg", 400, "not a JPEG or PNG"),
    (encode_jpeg(frame(6)), "text/plain", 415, "Content-Type must be"),
    (encode_jpeg(frame(6)), "image/png", 415, "says png but the body is a jpeg"),
    (encode_jpeg(frame(6))[:300], "image/jpeg", 400, "truncated"),
    (encode_png(frame(6))[:20], "image/png", 400, "IHDR"),
    (png_bomb(), "image/png", 413, "50000x50000"),
    (encode_png(np.zeros((1500, 1500, 3), np.uint8)), "image/png", 413, "pixels"),
    (encode_png(frame(7, (320, 320))), "image/png", 413, "limit"),
])
def test_bad_images_are_4xx_with_a_message(server: Server, cam1: Camera, body: bytes, content_type: str,
                                           status: int, message: str) -> None:
    with server.http() as http:
        r = http.post("/cameras/cam-1/frames", content=body, headers={"Content-Type": content_type})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_oversized_chunked_body_is_cut_off(server: Server, cam1: Camera) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
        for _ in range(64):
            yield b"\xff" * 8192

    with server.http() as http:
        r = http.post("/cameras/cam-1/frames", content=chunks(), headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 413 and "exceeds the limit" in r.json()["detail"]
    # A declared length over the limit is refused before the body is read (httpx will not lie, a socket will).
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(f"POST /cameras/cam-1/frames HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
                     f"Content-Type: image/jpeg\r\nContent-Length: {10 * MAX_IMAGE_BYTES}\r\n\r\nx".encode())
        assert sock.recv(65536).split(b" ", 2)[1] == b"413"


def test_bad_batches(server: Server, cam1: Camera) -> None:
    good = ("f.jpg", encode_jpeg(frame(8)), "image/jpeg")
    with server.http() as http:
        url = "/cameras/cam-1/frames:batch"
        assert http.post(url, content=b"{}", headers={"Content-Type": "application/json"}).status_code == 415
        r = http.post(url, files=[("frames", good)] * 9)
        assert r.status_code == 413 and "Too many files" in r.json()["detail"]
        r = http.post(url, files=[("frames", good), ("frames", ("x.jpg", b"nope", "image/jpeg"))])
        assert r.status_code == 400 and "frames[1]" in r.json()["detail"]
        r = http.post(url, files=[("other", good)])
        assert r.status_code == 400 and "unexpected form field" in r.json()["detail"]
        r = http.post(url, files=[("frames", good)], data={"ts": ["1", "2"]})
        assert r.status_code == 422
        r = http.post(url, files=[("frames", good)], data={"ts": "nan"})
        assert r.status_code == 422
        stream = {"Content-Type": "application/octet-stream"}  # the lean body (stemcell.frame_stream)
        r = http.post(url, content=encode_frames([good[1]] * 9), headers=stream)
        assert r.status_code == 413 and "more than 8 frames" in r.json()["detail"]
        r = http.post(url, content=encode_frames([good[1]])[:-5], headers=stream)
        assert r.status_code == 400 and "frame 0: declares" in r.json()["detail"]
        r = http.post(url, content=encode_frames([good[1], b"GIF89a"]), headers=stream)
        assert r.status_code == 415 and "frames[1]: neither JPEG nor PNG" in r.json()["detail"]
        r = http.post(url, content=encode_frames([good[1]] * 2), headers=stream, params={"ts": "1"})
        assert r.status_code == 422 and "1 ts values for 2 frames" in r.json()["detail"]


def test_bad_ids_unknown_cameras_and_bad_json(server: Server, cam1: Camera) -> None:
    jpeg = {"content": encode_jpeg(frame(9)), "headers": {"Content-Type": "image/jpeg"}}
    with server.http() as http:
        assert http.post("/cameras/nope/frames", **jpeg).status_code == 404
        assert http.post("/cameras/..%2Fadmin/frames", **jpeg).status_code == 404  # decoded to ../admin: no route
        r = http.post("/cameras/" + "a" * 65 + "/frames", **jpeg)
        assert r.status_code == 400 and "invalid camera_id" in r.json()["detail"]
        assert http.post("/cameras/bad$id/frames", **jpeg).status_code == 400
        assert http.post("/cameras/cam-1/frames?ts=inf", **jpeg).status_code == 422
        assert http.post("/admin/cameras", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 422
        assert http.post("/admin/cameras", json={"camera_id": "../x", "apps": ["car"]}).status_code == 422
        huge = {"camera_id": "c9", "apps": ["car"], "pad": "x" * 100_000}
        assert http.post("/admin/cameras", json=huge).status_code == 413
        r = http.post("/admin/cameras", json={"camera_id": "c9", "apps": ["unicorn"]})
        assert r.status_code == 422 and "unicorn" in r.json()["detail"]
        r = http.post("/admin/cameras", json={"camera_id": "c9", "apps": [{"app": "car", "branchpoint": 5}]})
        assert r.status_code == 422 and "no candidate at branchpoint 5" in r.json()["detail"]
        assert http.delete("/admin/cameras/nope").status_code == 404
        assert http.delete("/admin/cameras/bad$id").status_code == 400
        assert http.get("/cameras/nope/status").status_code == 404  # only the admin may learn that
        assert http.get("/cameras/cam-1/model").status_code == 404  # learning is off on this server
    # none of that hurt the executor
    assert len(cam1.infer(frame(10))["results"]) == 2


def test_auth_failures(server: Server, admin: Admin, cam1: Camera) -> None:
    other = admin.add_camera("cam-other", ["car"])["token"]
    jpeg = {"content": encode_jpeg(frame(11)), "headers": {"Content-Type": "image/jpeg"}}
    with server.http(None) as anon:
        assert anon.post("/cameras/cam-1/frames", **jpeg).status_code == 401
        r = anon.post("/cameras/cam-1/frames", content=jpeg["content"],
                      headers={"Content-Type": "image/jpeg", "Authorization": "Basic abc"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert anon.get("/admin/plan").status_code == 401
        assert anon.delete("/admin/cameras/cam-1").status_code == 401
        assert anon.get("/cameras/cam-1/status").status_code == 401
        # the token is checked before any body is read or parsed
        assert anon.post("/admin/cameras", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 401
    with server.http("w" * 32) as wrong:
        assert wrong.post("/cameras/cam-1/frames", **jpeg).status_code == 403
        assert wrong.post("/cameras/ghost/frames", **jpeg).status_code == 403  # no hint that it does not exist
        assert wrong.get("/admin/plan").status_code == 403
        assert wrong.delete("/admin/cameras/cam-1").status_code == 403
        assert wrong.get("/cameras/ghost/status").status_code == 403
    with server.http(other) as cam_other:
        assert cam_other.post("/cameras/cam-1/frames", **jpeg).status_code == 403
        assert cam_other.get("/cameras/cam-1/status").status_code == 403
        assert cam_other.get("/admin/plan").status_code == 403
        assert cam_other.delete("/admin/cameras/cam-other").status_code == 403  # a camera cannot remove itself
        assert cam_other.get("/cameras/cam-other/status").status_code == 200
        assert cam_other.post("/cameras/cam-other/frames", **jpeg).status_code == 200
    admin.remove_camera("cam-other")


def test_status_reports_apps_and_measurements(cam1: Camera) -> None:
    for i in range(5):
        cam1.infer(frame(20 + i))
    status = cam1.status()
    assert {a["app"] for a in status["apps"]} == {"car", "person"}
    assert status["stream_fps"] == 10 and status["executor"].startswith("stemcell-executor-")
    req = status["requests"]
    assert req["frames_total"] >= 5 and req["fps"] > 0 and 0 < req["p50_ms"] <= req["p99_ms"]
    executor = status["executor_stats"]
    assert executor["frames"] >= 5 and executor["requests"] >= 5 and executor["p99_ms"] >= executor["p50_ms"] > 0
    assert {row["segment"] for row in executor["segment_latency"]} >= {"head"}


def test_register_app(server: Server, admin: Admin, tmp_path: Path) -> None:
    out = admin.register_app("person", str(server.package))
    assert out["app"] == "person" and {c["branchpoint"] for c in out["candidates"]} == {0, 3, 6}
    # relative, as serve.yaml writes it: from the folder the config was loaded in, not the replica's
    relative = admin.register_app("person", os.path.relpath(server.package))
    assert relative["package_dir"] == str(server.package)
    with pytest.raises(StemcellError) as err:
        admin.register_app("unicorn", str(server.package))
    assert err.value.status == 422 and "not in the package" in err.value.message
    with pytest.raises(StemcellError) as err:
        admin.register_app("car", str(tmp_path / "missing"))
    assert err.value.status == 422
    other = tmp_path / "other"
    shutil.copytree(server.package, other)
    (other / "manifest.json").write_text((other / "manifest.json").read_text().replace('"created": "', '"created": "x'))
    with pytest.raises(StemcellError) as err:
        admin.register_app("car", str(other))
    assert err.value.status == 409


def test_restart_keeps_cameras_tokens_and_plan(server: Server, admin: Admin, cam1: Camera) -> None:
    import ray

    before = admin.plan()
    # an executor that does not answer makes the replica not ready (503, saying why); the redeploy below
    # re-creates it
    ray.kill(ray.get_actor("stemcell-executor-0", namespace=NAMESPACE), no_restart=True)
    with server.http(None) as http:
        ready = http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["ready"] is False and "Error" in ready.json()["reason"]
    serve.delete(APP_NAME)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.url}/healthz", timeout=5).raise_for_status()
    started = time.monotonic()
    server.deploy()
    restarted_in = time.monotonic() - started
    out = cam1.infer(frame(300))  # same token, executor rebuilt from the StateStore
    assert sorted(r["app"] for r in out["results"]) == ["car", "person"]
    after = admin.plan()
    assert after["cameras"] == before["cameras"]
    assert restarted_in < 120
