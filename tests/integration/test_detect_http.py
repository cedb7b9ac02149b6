"""A detect app end to end over HTTP: registered with a zone, frames posted, boxes served in the
frame's pixels, counts and events restricted to the zone.

Frames are posted at the model's input and, blown up 3x2, larger: as PNG bytes (the ingress reads
their own size from the header) and as arrays the client resizes to the input before upload (it
declares their size with `?w=&h=`). Either way the model sees the same input, and the boxes must be
the input-size ones scaled to the large frame, with a zone given in the large frame's pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stemcell.client import Admin, Camera
from stemcell.imaging import encode_png
from tests.helpers.builders import detect_package, square_frames
from tests.helpers.serving import ADMIN_TOKEN, served_package

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

HEIGHT, WIDTH = 32, 32  # the model input
LEFT_HALF = [[0, 0], [WIDTH / 2, 0], [WIDTH / 2, HEIGHT], [0, HEIGHT]]
SY, SX = 2, 3  # the large frames: 64 x 96, each input pixel a 2 x 3 block (the area resize gives it back exactly)
BIG_LEFT_THIRD = [[0, 0], [WIDTH * SX / 3, 0], [WIDTH * SX / 3, HEIGHT * SY], [0, HEIGHT * SY]]


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
            lossless = [cam.infer(encode_png(f)) for f in frames]  # the PNG posts' reference (JPEG's loss differs)
        with Camera(url, zoned, "door") as cam:
            in_zone = cam.infer_batch(list(frames))
        big = np.repeat(np.repeat(frames, SY, axis=1), SX, axis=2)
        third = admin.add_camera("gate", [{"app": "cars", "branchpoint": 0, "zones": [BIG_LEFT_THIRD]}], fps=10)
        with Camera(url, third["token"], "gate") as cam:
            as_png = [cam.infer(encode_png(f)) for f in big]  # sent whole: the ingress resizes
            resized_here = cam.infer_batch(list(big))  # resized by the client, which declares 96 x 64
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
    for pairs in zip(zip(everything, resized_here), zip(lossless, as_png)):
        for (small,), (large,) in ((s["results"], b["results"]) for s, b in pairs):
            assert len(large["boxes"]) == len(small["boxes"])
            for box, ref in zip(large["boxes"], small["boxes"]):  # the same detections, in the large frame's pixels
                for key, scale in (("x0", SX), ("x1", SX), ("y0", SY), ("y1", SY)):  # served to 0.1 px
                    assert box[key] == pytest.approx(ref[key] * scale, abs=0.05 * scale + 0.05), key
            # the zone is in the large frame's pixels: in input pixels every box would lie inside it
            assert large["count"] == sum((b["x0"] + b["x1"]) / 2 < WIDTH * SX / 3 for b in large["boxes"])
    assert any((b["x0"] + b["x1"]) / 2 >= WIDTH for r in resized_here for b in r["results"][0]["boxes"])
