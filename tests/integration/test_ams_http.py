"""The two learning routes end to end: Serve with `learning.enabled`, a real edge client over HTTP.

`GET /cameras/{id}/model?since=V` and `POST /cameras/{id}/samples` (app.learning_service): full
update on first contact, 304 when current, sparse update after the worker retrains, the serving
executor picks the new version up, and bad input is refused with 4xx. The teacher is the world's
ground truth (`learning.teacher`, `kind: oracle`), as in controlled experiments: edge-1 streams world camera 0.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import numpy as np
import pytest
import ray
import yaml
from ray import serve

from actors.planner import get_or_create_planner
from app.learning_service import register_learning_worker, worker_role
from app.serve_app import build_app
from benchmarks.ports import reserved_port
from stemcell.client import Admin, Camera, StemcellError
from stemcell.edge import EdgeClient, HttpTransport
from stemcell.imaging import encode_jpeg
from stemcell.learning import decode
from stemcell.package import load_package
from stemcell.serve_config import PlannerSection, load_serve_config
from stemcell.world import World, WorldConfig
from tests.helpers.builders import tiny_package
from tests.integration.test_serve_http import Server

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

ADMIN_TOKEN = "admin-" + "y" * 26
CAMERA_TOKEN = "camera-token-" + "z" * 20
APP_NAME = "stemcell-ams-test"
MAX_UPLOAD = 12
WORLD = {"seed": 2, "num_cameras": 1, "height": 32, "width": 32, "duration_s": 120.0}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("ams-serve")
    with reserved_port() as port:  # held while Serve's proxy serves there (see benchmarks/ports.py)
        srv = Server(root, port)
        tiny_package(srv.package, branchpoints=(3,), apps=("car",))
        srv.config_path.write_text(yaml.safe_dump({
            "package_dir": str(srv.package), "state_path": str(root / "state.db"),
            "admin_token_env": "STEMCELL_AMS_ADMIN_TOKEN", "app_name": APP_NAME,
            "ingress": {"num_cpus": 0.25},
            "executors": {"count": 1, "num_gpus": 0.25, "num_cpus": 0.5, "namespace": "stemcell-ams-test"},
            "learning": {"enabled": True, "num_cpus": 0.25, "teacher_num_cpus": 0.25, "num_gpus": 0.1,
                         "teacher_num_gpus": 0.1, "iterations": 3, "batch_size": 4, "adaptive": False,
                         "max_upload_frames": MAX_UPLOAD, "live_batch": 4, "live_max_wait_s": 2.0,
                         "teacher": {"kind": "oracle", "world": WORLD, "cameras": {"edge-1": 0, "live-1": 0}}},
        }))
        os.environ["STEMCELL_AMS_ADMIN_TOKEN"] = ADMIN_TOKEN
        serve.start(http_options={"host": "127.0.0.1", "port": srv.port})
        serve.run(build_app({"config_path": str(srv.config_path)}), name=APP_NAME, route_prefix="/")
        with Admin(srv.url, ADMIN_TOKEN, timeout=60.0) as admin:
            admin.add_camera("edge-1", [{"app": "car", "branchpoint": 3}], fps=10, token=CAMERA_TOKEN)
        yield srv
        serve.shutdown()
        os.environ.pop("STEMCELL_AMS_ADMIN_TOKEN", None)


def _frames(start_s: float, count: int) -> tuple[list[float], np.ndarray]:
    cam = World(WorldConfig(**WORLD)).camera(0)
    stamps = [start_s + i for i in range(count)]
    return stamps, cam.frames([int(t * 10) for t in stamps])


def test_edge_streams_over_http(server: Server) -> None:
    package = load_package(server.package)
    transport = HttpTransport(server.url, CAMERA_TOKEN)
    edge = EdgeClient("edge-1", {"car": package.app_model("car", 3)}, transport, input_size=32)
    assert edge.sync() == {"car": 0} and edge.counters.full_updates == 1
    assert transport.fetch("edge-1", "car", 0) is None  # current: 304, nothing crosses

    stamps, frames = _frames(0.0, 11)
    advice = transport.upload("edge-1", stamps, [encode_jpeg(f, 90) for f in frames])
    assert advice.accepted == 11 and advice.sampling_fps == 1.0 and advice.t_update_s == 10.0
    deadline = time.monotonic() + 60
    while edge.sync()["car"] == 0 and time.monotonic() < deadline:  # the worker trains in the background
        time.sleep(0.5)
    assert edge.versions["car"] >= 1 and edge.counters.full_updates == 1  # the catch-up was sparse or merged

    stamps, frames = _frames(11.0, 2)  # the next upload pushes the new version to the serving executor
    transport.upload("edge-1", stamps, [encode_jpeg(f) for f in frames])
    with Camera(server.url, CAMERA_TOKEN, "edge-1") as cam:
        assert cam.infer(frames[0], ts=20.0)["model_versions"]["car"] >= 1
    transport.close()


def test_model_route_headers_and_errors(server: Server) -> None:
    with server.http(CAMERA_TOKEN) as http:
        full = http.get("/cameras/edge-1/model")
        assert full.status_code == 200 and full.headers["content-type"] == "application/octet-stream"
        assert full.headers["X-Update-Kind"] == "full" and full.headers["X-Base-Version"] == "none"
        assert full.headers["X-Branchpoint"] == "3"  # the cut the tensors belong to
        assert decode(full.content).version == int(full.headers["X-Model-Version"])
        assert http.get("/cameras/edge-1/model", params={"since": full.headers["X-Model-Version"]}).status_code == 304
        assert http.get("/cameras/edge-1/model", params={"since": -1}).status_code == 422
        assert http.get("/cameras/edge-1/model", params={"app": "person"}).status_code == 422
        assert http.get("/cameras/edge-1/model", params={"app": "../x"}).status_code == 400
    with server.http("wrong-token-" + "w" * 20) as http:
        assert http.get("/cameras/edge-1/model").status_code == 403


def test_samples_route_refuses_bad_uploads(server: Server) -> None:
    stamps, frames = _frames(30.0, 2)
    jpeg = encode_jpeg(frames[0])
    with server.http(CAMERA_TOKEN) as http:
        url = "/cameras/edge-1/samples"
        no_ts = http.post(url, files=[("frames", ("a.jpg", jpeg, "image/jpeg"))])
        assert no_ts.status_code == 422 and "ts" in no_ts.json()["detail"]
        backwards = http.post(url, files=[("frames", ("a.jpg", jpeg, "image/jpeg"))] * 2, data={"ts": ["5", "4"]})
        assert backwards.status_code == 422
        too_many = http.post(url, files=[("frames", ("a.jpg", jpeg, "image/jpeg"))] * (MAX_UPLOAD + 1),
                             data={"ts": [str(i) for i in range(MAX_UPLOAD + 1)]})
        assert too_many.status_code == 413
        assert http.post(url, files=[("frames", ("a.jpg", b"not a jpeg", "image/jpeg"))],
                         data={"ts": ["1"]}).status_code == 400  # bytes that are not an image
        assert http.post(url, content=b"{}", headers={"content-type": "application/json"}).status_code == 415
        late = http.post(url, files=[("frames", ("a.jpg", jpeg, "image/jpeg"))], data={"ts": ["120.5"]})
        assert late.status_code == 422 and "[0, 120) s" in late.json()["detail"]  # past the world camera's timeline
    with Admin(server.url, ADMIN_TOKEN, timeout=60.0) as admin:
        admin.add_camera("unmapped", [{"app": "car", "branchpoint": 3}], fps=10, token=CAMERA_TOKEN + "u")
    with server.http(CAMERA_TOKEN + "u") as http:
        unmapped = http.post("/cameras/unmapped/samples", files=[("frames", ("a.jpg", jpeg, "image/jpeg"))],
                             data={"ts": ["1"]})
        assert unmapped.status_code == 422 and "teacher.cameras" in unmapped.json()["detail"]
    with server.http(ADMIN_TOKEN) as http:
        assert http.delete("/admin/cameras/unmapped").status_code == 200
        assert http.post("/cameras/nope/samples", files=[("frames", ("a.jpg", jpeg, "image/jpeg"))],
                         data={"ts": ["1"]}).status_code == 404
    with pytest.raises(StemcellError) as err:
        HttpTransport(server.url, "wrong-token-" + "w" * 20).upload("edge-1", stamps, [jpeg, jpeg])
    assert err.value.status == 403


def test_served_frames_reach_the_teacher_without_uploads(server: Server) -> None:
    """A camera registered with `learning: true` only posts frames for inference; the ingress samples
    them (ASR rate, 1 fps to start), the teacher labels them and they fill the worker's buffer."""
    ns = load_serve_config(server.config_path).executors.namespace
    teacher = ray.get_actor("stemcell-teacher", namespace=ns)
    labelled = ray.get(teacher.stats.remote()).frames
    with server.http(ADMIN_TOKEN) as http:
        body = {"camera_id": "live-1", "apps": [{"app": "car", "branchpoint": 3}], "fps": 10,
                "token": CAMERA_TOKEN + "l", "learning": True}
        assert http.post("/admin/cameras", json=body).status_code == 201
    stamps, frames = _frames(0.0, 8)
    with Camera(server.url, CAMERA_TOKEN + "l", "live-1") as cam:
        for t, frame in zip(stamps, frames):  # 1 s apart: every frame is a sample at 1 fps
            cam.infer(frame, ts=t)
    worker = ray.get_actor("stemcell-retrain", namespace=ns)
    deadline, jobs = time.monotonic() + 30, {}
    while time.monotonic() < deadline and jobs.get("live-1/car", {}).get("buffer", 0) < 8:
        time.sleep(0.3)
        jobs = ray.get(worker.stats.remote())["jobs"]
    assert jobs["live-1/car"]["buffer"] == 8  # two batches of 4, no POST /samples
    assert ray.get(teacher.stats.remote()).frames == labelled + 8
    with server.http(ADMIN_TOKEN) as http:
        learning = http.get("/cameras/live-1/status").json()["learning"]
        assert learning["enabled"] and learning["samples_buffered"] == 8 and learning["version"] == 0
        assert 0.0 <= learning["agreement_now"] <= 1.0 and len(learning["history"]) == 2
        assert learning["app"] == "car" and learning["apps"]["car"]["agreement_now"] == learning["agreement_now"]
        car = http.get("/admin/plan").json()["cameras"]["live-1"]["apps"]["car"]
        assert car["f1_live"] is None and car["live_samples"] == 8 and car["f1_validation"] == car["frame_f1"]
        zoo = http.get("/admin/zoo").json()
        assert zoo["enabled"] is False and zoo["experts"] == [] and zoo["cameras"] == {}
    with server.http(CAMERA_TOKEN) as http:
        assert http.get("/admin/zoo").status_code == 403


def test_the_planner_moves_the_learning_worker_and_edges_follow(server: Server) -> None:
    config = load_serve_config(server.config_path)
    ns = config.executors.namespace
    planner = get_or_create_planner(config, PlannerSection(window_s=0, worker_num_cpus=0.25))
    try:
        worker = register_learning_worker(planner, config)
        assert worker["actor"] == "stemcell-retrain" and worker["generation"] == 0  # adopted, not a second one
        assert register_learning_worker(planner, config) == worker  # idempotent
        transport = HttpTransport(server.url, CAMERA_TOKEN)
        frame_jpeg = lambda t: [encode_jpeg(f) for f in _frames(t, 1)[1]]  # noqa: E731
        before = transport.upload("edge-1", [40.0], frame_jpeg(40.0))
        buffered = ray.get(ray.get_actor("stemcell-retrain", namespace=ns).stats.remote())["jobs"]["edge-1/car"]["buffer"]

        move = planner.set_shares.remote({worker["role"]: 0.2})  # make-before-break, while the edge uploads
        accepted, t = 0, 41.0
        while t < 110.0 and not ray.wait([move], timeout=0)[0]:
            accepted += transport.upload("edge-1", [t], frame_jpeg(t)).accepted  # never a 503: the ingress waits
            t += 1.0
            time.sleep(0.2)
        [switch] = ray.get(move)
        assert switch.ok and switch.new_actor == f"{worker['role']}-g1", switch
        advice = transport.upload("edge-1", [t], frame_jpeg(t))  # the ingress may still hold the killed actor
        accepted += advice.accepted
        moved = ray.get_actor(switch.new_actor, namespace=ns)
        stats = ray.get(moved.stats.remote())
        assert stats["share"] == 0.2 and accepted == t - 40.0  # every upload was taken ...
        assert stats["jobs"]["edge-1/car"]["buffer"] == buffered + accepted  # ... and none was lost in the move
        assert advice.versions["car"] >= before.versions["car"]  # the model moved with the worker
        edge = EdgeClient("edge-1", {"car": load_package(server.package).app_model("car", 3)}, transport, input_size=32)
        assert edge.sync() == {"car": advice.versions["car"]}
        transport.close()
    finally:
        with contextlib.suppress(ValueError):  # detached: it would outlive the module
            ray.kill(ray.get_actor(f"{worker_role(config)}-g1", namespace=ns))
        ray.kill(planner)
