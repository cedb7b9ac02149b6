"""Detect apps through M-Trainer's candidate, the M-Package and the runtime: boxes in the frame's pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stemcell.models import to_input
from stemcell.models.detection import DetectHead, decode
from stemcell.control.camera_changes import plan_changes
from stemcell.control.camera_plans import PlanHints, resolve_apps
from stemcell.control.contracts import AppRequest, AppRun, CameraSpec
from stemcell.package import MPackage, load_package
from stemcell.package.planning import problem_from_manifest
from stemcell.scheduling.problem import AppChoice, Schedule
from stemcell.sharing import InferRequest, StemRuntime
from tests.helpers.builders import detect_package, square_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> MPackage:
    root: Path = tmp_path_factory.mktemp("detect_pkg")
    threads = torch.get_num_threads()  # module scope runs before one_torch_thread: one thread here too
    torch.set_num_threads(1)
    try:
        detect_package(root)
    finally:
        torch.set_num_threads(threads)
    return load_package(root)


def test_manifest_records_map_and_count_event_metrics(package: MPackage) -> None:
    (app,) = package.manifest.apps
    assert app.task == "detect" and app.classes == ["car"]
    for c in package.manifest.candidates_for("cars"):
        assert c.map50 is not None and 0.0 <= c.map50_95 <= c.map50 <= 1.0  # type: ignore[operator]
        assert c.count_mae is not None and 0.0 <= c.f1 <= 1.0
    model = package.app_model("cars", 6)
    assert isinstance(model.head, DetectHead) and model.head.num_classes == 1


def test_runtime_serves_boxes_in_the_frames_own_pixels(package: MPackage) -> None:
    runtime = StemRuntime(package, device="cpu")
    runtime.set_camera("c1", [{"app": "cars", "branchpoint": 0, "fps": 10.0}], stream_fps=10.0)
    big = np.repeat(np.repeat(square_frames(n=4, seed=3).frames, 4, axis=1), 6, axis=2)  # sent at 128 x 192
    (served,) = runtime.infer([InferRequest("c1", big)])
    assert isinstance(served, list)
    with torch.no_grad():
        expected = decode(package.app_model("cars", 0)(to_input(big, 32)), 1, [(128, 192)] * len(big))
    total = 0
    for frame, want in zip(served, expected):
        app = frame.as_dict()["results"][0]
        got = np.array([[b["x0"], b["y0"], b["x1"], b["y1"]] for b in app["boxes"]]).reshape(-1, 4)
        np.testing.assert_allclose(got, want.boxes.numpy(), atol=0.06)  # served rounded to 0.1 px
        assert all(0 <= b["x1"] <= 192 and 0 <= b["y1"] <= 128 and b["class"] == "car" for b in app["boxes"])
        assert app["count"] == len(app["boxes"]) == app["counts"]["car"]
        assert app["event_active"] == (app["count"] >= 1)
        total += app["count"]
    assert total >= 1  # the trained head finds squares: the check above compared real boxes


def test_zones_from_the_app_config_restrict_counts(package: MPackage) -> None:
    runtime = StemRuntime(package, device="cpu")
    nowhere = [[1000.0, 1000.0], [1001.0, 1000.0], [1000.0, 1001.0]]
    runtime.set_camera("c1", [{"app": "cars", "branchpoint": 0, "fps": 10.0, "zones": [nowhere]}], stream_fps=10.0)
    runtime.set_camera("c2", [{"app": "cars", "branchpoint": 0, "fps": 10.0}], stream_fps=10.0)
    frames = square_frames(n=4, seed=3).frames
    zoned, free = runtime.infer([InferRequest("c1", frames), InferRequest("c2", frames)])
    assert isinstance(zoned, list) and isinstance(free, list)
    for z, f in zip(zoned, free):
        z_app, f_app = z.as_dict()["results"][0], f.as_dict()["results"][0]
        assert z_app["boxes"] == f_app["boxes"]  # every box is served ...
        assert z_app["count"] == 0 and not z_app["event_active"]  # ... but none is in the zone


def test_registration_zones_are_checked_and_survive_replanning(package: MPackage) -> None:
    manifest = package.manifest
    square = ((0, 0), (10, 0), (10, 10), (0, 10))
    (run,) = resolve_apps(manifest, [AppRequest("cars", zones=(square,))], 10.0, PlanHints())
    assert run.zones == (tuple((float(x), float(y)) for x, y in square),)
    assert AppRun.parse(run.as_dict()) == run and "zones" not in resolve_apps(manifest, [AppRequest("cars")], 10.0,
                                                                                PlanHints())[0].as_dict()
    with pytest.raises(ValueError, match=r"app 'cars': zones\[1\]: a zone is a polygon of at least 3"):
        resolve_apps(manifest, [AppRequest("cars", zones=(square, ((0, 0), (1, 1))))], 10.0, PlanHints())
    choice = AppChoice("cars", 1, 6, 5.0, 0.5, 0.5, 0.5)
    moved = plan_changes({"c1": CameraSpec("c1", 10.0, (run,))}, {"c1": Schedule((choice,), 0.1, 1.0, 0.5, "greedy", True)})
    assert moved[0].after.apps[0].branchpoint == 6 and moved[0].after.apps[0].zones == run.zones


def test_planner_sees_count_event_quality_and_the_detect_heads_cost(package: MPackage) -> None:
    manifest = package.manifest
    problem = problem_from_manifest(manifest, ["cars"], 1.0, batch_size=1)
    detect_head = manifest.latency.detect_head_s
    assert detect_head is not None and problem.head_latency_s == pytest.approx(detect_head["1"])
    assert detect_head["1"] != manifest.latency.head_s["1"]
    by_b = {c.branchpoint: c for c in manifest.candidates_for("cars")}
    for c in problem.apps[0].candidates:  # count-event precision/recall, as trained
        assert (c.precision, c.recall) == (by_b[c.branchpoint].precision, by_b[c.branchpoint].recall)
