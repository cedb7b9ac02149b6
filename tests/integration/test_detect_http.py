"""A detect app end to end over HTTP: registered with a zone, frames posted, boxes served in the
frame's pixels, counts and events restricted to the zone.

The ingress resizes posted frames to the model's input before the executor sees them, so frames are
posted at that size (`input_size` in the registration answer, what the client-side resize sends);
boxes in other frame sizes are checked where the size is known (tests/unit/test_detect_apps.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from stemcell.client import Admin, Camera
from tests.helpers.builders import detect_package, square_frames
from tests.helpers.serving import ADMIN_TOKEN, served_package

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

HEIGHT, WIDTH = 32, 32  # the model input
LEFT_HALF = [[0, 0], [WIDTH / 2, 0], [WIDTH / 2, HEIGHT], [0, HEIGHT]]


def _bottom_centre_in_left_half(box: dict) -> bool:
    return (box["x0"] + box["x1"]) / 2 < WIDTH / 2


def test_detect_app_serves_boxes_counts_and_zoned_events(tmp_path: Path) -> None:
    detect_package(tmp_path / "pkg")
    frames = square_frames(n=6, seed=3).frames
    with served_package(tmp_path, tmp_path / "pkg", "stemcell-detect") as url, Admin(url, ADMIN_TOKEN, timeout=60) as admin:
        added = admin.add_camera("street", [{"app": "cars", "branchpoint": 0}], fps=10)
        assert added["input_size"] == WIDTH
        free = added["token"]
        zoned = admin.add_camera("door", [{"app": "cars", "branchpoint": 0, "zones": [LEFT_HALF]}], fps=10)["token"]
        with pytest.raises(Exception, match="422"):  # a zone needs 3 points
            admin.add_camera("bad", [{"app": "cars", "zones": [[[0, 0], [1, 1]]]}], fps=10)
        with Camera(url, free, "street") as cam:
            everything = cam.infer_batch(list(frames))
        with Camera(url, zoned, "door") as cam:
            in_zone = cam.infer_batch(list(frames))
    total = 0
    for whole, part in zip(everything, in_zone):
        (a,), (z,) = whole["results"], part["results"]
        assert a["app"] == "cars" and a["count"] == len(a["boxes"]) == a["counts"]["car"]
        assert a["event_active"] == (a["count"] >= 1)
        for box in a["boxes"]:
            assert set(box) == {"x0", "y0", "x1", "y1", "score", "class"} and box["class"] == "car"
            assert 0 <= box["x0"] <= box["x1"] <= WIDTH and 0 <= box["y0"] <= box["y1"] <= HEIGHT
        assert z["boxes"] == a["boxes"]  # every box is served; the zone restricts what is counted
        assert z["count"] == sum(_bottom_centre_in_left_half(b) for b in a["boxes"])
        assert z["event_active"] == (z["count"] >= 1)
        total += a["count"]
    assert total >= 1
