"""A detect app with learning on, end to end over HTTP: samples posted to `POST /cameras/{id}/samples`
are boxed by the teacher (a `kind: python` plug-in that boxes the bright squares), their boxes reach
the RetrainWorker, the detect head retrains, and the serving executor answers with the new version."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from stemcell.client import Admin, Camera
from stemcell.edge import HttpTransport
from stemcell.imaging import encode_jpeg
from tests.helpers.builders import detect_package, square_frames
from tests.helpers.serving import ADMIN_TOKEN, served_package

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

LEARNING = {"learning": {
    "enabled": True, "num_cpus": 0.25, "teacher_num_cpus": 0.25, "num_gpus": 0.1, "teacher_num_gpus": 0.1,
    "iterations": 3, "batch_size": 4, "adaptive": False, "max_upload_frames": 16,
    "teacher": {"kind": "python", "factory": "tests.helpers.teachers:square_boxer", "classes": ["car"]}}}


def test_detect_app_learns_from_teacher_boxes_and_serves_the_new_version(tmp_path: Path) -> None:
    detect_package(tmp_path / "pkg", branchpoints=(3,), epochs=3)
    frames = square_frames(n=40, seed=5).frames
    with served_package(tmp_path, tmp_path / "pkg", "stemcell-detect-learn", LEARNING) as url, \
            Admin(url, ADMIN_TOKEN, timeout=60) as admin:
        token = admin.add_camera("lot", [{"app": "cars", "branchpoint": 3}], fps=10)["token"]
        with Camera(url, token, "lot") as cam:
            assert cam.infer(frames[0])["model_versions"]["cars"] == 0
        transport = HttpTransport(url, token)
        versions, deadline, start = {"cars": 0}, time.monotonic() + 120, 0
        while versions.get("cars", 0) < 1 and time.monotonic() < deadline:  # the worker trains in the background
            stamps = [float(t) for t in range(start, start + 12)]
            advice = transport.upload("lot", stamps, [encode_jpeg(frames[t % len(frames)], 95) for t in range(start, start + 12)])
            assert advice.accepted == 12 and advice.t_update_s == 10.0
            versions, start = advice.versions, start + 12
            time.sleep(1.0)
        transport.close()
        assert versions["cars"] >= 1, versions
        with Camera(url, token, "lot") as cam:  # the upload that saw the new version pushed it to the executor
            served = cam.infer(frames[1])["results"][0]
        assert served["app"] == "cars" and served["count"] == len(served["boxes"])
        with Camera(url, token, "lot") as cam:
            assert cam.infer(frames[2])["model_versions"]["cars"] >= 1
