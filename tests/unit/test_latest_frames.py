"""LatestFrames: the newest frame per camera, JPEG on request (cached per frame and size), bounded memory."""
from __future__ import annotations

import numpy as np
import pytest

from stemcell.latest_frames import LatestFrames
from stemcell.imaging import decode_image


def _frame(value: int, h: int = 120, w: int = 200) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def _answer(ts: float, label: bool = True) -> dict:
    return {"frame_ts": ts, "results": [{"app": "car", "label": label, "score": 0.9}], "model_versions": {"car": 0}}


def test_snapshot_is_the_newest_frame_downscaled_and_cached_until_a_newer_one() -> None:
    latest = LatestFrames()
    assert latest.snapshot("cam", 640) is None and latest.etag("cam", 640) is None
    latest.keep("cam", _frame(30), _answer(1.0))
    latest.keep("cam", _frame(200), _answer(2.0, label=False))
    shot = latest.snapshot("cam", 100)
    picture = decode_image(shot.jpeg, "image/jpeg")
    assert picture.shape == (60, 100, 3)  # longer side 200 -> 100, aspect kept
    assert abs(int(picture.mean()) - 200) <= 3  # the newer frame, not the first
    assert shot.frame_ts == 2.0 and shot.etag == latest.etag("cam", 100)
    assert latest.snapshot("cam", 100).jpeg is shot.jpeg  # encoded once per frame and size
    assert decode_image(latest.snapshot("cam", 640).jpeg, "image/jpeg").shape == (120, 200, 3)  # never enlarged
    latest.keep("cam", _frame(90), _answer(3.0))
    assert latest.etag("cam", 100) != shot.etag
    assert latest.latest("cam")["frame_ts"] == 3.0 and latest.latest("cam")["results"][0]["label"] is True
    assert latest.latest("cam")["frame_size"] == [200, 120] == latest.latest("cam")["source_size"]
    latest.keep("cam", _frame(90), _answer(4.0), source_size=(1080, 1920))  # resized on the way: boxes in 1920 x 1080
    assert latest.latest("cam")["frame_size"] == [200, 120] and latest.latest("cam")["source_size"] == [1920, 1080]


def test_latest_without_a_frame_says_so() -> None:
    answer = LatestFrames().latest("cam")
    assert answer["frame_ts"] is None and answer["results"] == [] and answer["snapshot"] is False
    assert answer["frame_size"] is None and answer["source_size"] is None


def test_memory_bound_evicts_the_camera_updated_longest_ago() -> None:
    one = _frame(0).nbytes
    latest = LatestFrames(max_bytes=2 * one)
    for cam in ("a", "b", "c"):
        latest.keep(cam, _frame(1), _answer(1.0))
    latest.keep("b", _frame(2), _answer(2.0))  # b is now the freshest; a went when c came
    assert latest.held_bytes == 2 * one
    assert latest.snapshot("a", 640) is None
    assert latest.snapshot("b", 640) is not None and latest.snapshot("c", 640) is not None
    latest.forget("b")
    assert latest.snapshot("b", 640) is None and latest.held_bytes == one


def test_sizes_outside_the_limits_are_refused() -> None:
    latest = LatestFrames()
    latest.keep("cam", _frame(1), _answer(1.0))
    with pytest.raises(ValueError, match="side"):
        latest.snapshot("cam", 10_000)
