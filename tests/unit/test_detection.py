"""Detect apps: head shapes, decoding hand-made maps, NMS, boxes back in the frame's pixels, zones."""
from __future__ import annotations

import math

import pytest
import torch

from stemcell.models import build_base, make_task_model
from stemcell.models.detection import DetectHead, decode, normalised_boxes, to_frame_pixels
from stemcell.models.readout import read_detections
from stemcell.models.zones import check_polygon, in_zones

K = 2  # classes in the hand-made maps


def blank_map(h: int = 8, w: int = 8) -> torch.Tensor:
    """A (K+4, h, w) head output with no objects: heat logits -10, centred offsets, 1-cell sizes."""
    out = torch.zeros(K + 4, h, w)
    out[:K] = -10.0
    return out


def put(out: torch.Tensor, cls: int, row: int, col: int, size_cells: tuple[float, float], logit: float = 4.0) -> None:
    """One object of `cls` centred in cell (row, col) (offset logit 0 = mid-cell), `size_cells` (w, h) wide."""
    out[cls, row, col] = logit
    out[K + 2, row, col] = math.log(size_cells[0])
    out[K + 3, row, col] = math.log(size_cells[1])


def test_head_output_shape_on_every_branchpoint() -> None:
    base = build_base("tiny_cnn", num_classes=3)
    x = torch.randn(2, 3, 64, 64)
    for b in (0, 3, base.num_segments):
        model = make_task_model(base, b, "detect", num_classes=K)
        assert isinstance(model.head, DetectHead)
        out = model(x)  # tiny_cnn: stride 16 -> 4x4, doubled by the head -> 8x8
        assert out.shape == (2, K + 4, 8, 8)
        assert model.upper_forward(model.stem_features(x)).shape == out.shape
    assert make_task_model(base, 6, "count").head.fc.out_features == 1


def test_initial_head_predicts_almost_nothing() -> None:
    head = DetectHead(16, K)
    with torch.no_grad():
        heat, _ = normalised_boxes(head(torch.zeros(1, 16, 4, 4)), K)
    assert float(heat.max()) < 0.1


def test_decode_hand_made_map_in_normalised_and_pixel_units() -> None:
    out = blank_map()
    put(out, 1, row=2, col=5, size_cells=(2.0, 4.0))
    (found,) = decode(out[None], K, [(8, 8)])  # frame of 8x8 pixels: one pixel per cell
    assert found.classes.tolist() == [1]
    assert found.scores.tolist() == pytest.approx([torch.sigmoid(torch.tensor(4.0)).item()])
    # centre (5.5, 2.5) cells, 2 x 4 cells -> x 4.5..6.5, y 0.5..4.5
    assert found.boxes[0].tolist() == pytest.approx([4.5, 0.5, 6.5, 4.5])


def test_boxes_map_back_to_the_frames_own_resolution() -> None:
    out = blank_map()
    put(out, 0, row=4, col=2, size_cells=(2.0, 2.0))
    small, large = decode(torch.stack([out, out]), K, [(8, 8), (480, 640)])
    # normalised box 1.5/8..3.5/8 x 3.5/8..5.5/8, scaled by 640 wide and 480 high
    assert large.boxes[0].tolist() == pytest.approx([120.0, 210.0, 280.0, 330.0])
    assert small.boxes[0].tolist() == pytest.approx([1.5, 3.5, 3.5, 5.5])
    clipped = to_frame_pixels(torch.tensor([[-0.1, 0.5, 0.5, 1.2], [0.5, 0.5, 1.5, 1.0]]), torch.tensor([[100, 200], [10, 20]]))
    assert clipped.tolist() == [[0.0, 50.0, 100.0, 100.0], [10.0, 5.0, 20.0, 10.0]]


def test_nms_merges_duplicate_peaks_of_one_object_but_not_other_classes() -> None:
    def two_peaks(size: float, second_class: int = 0) -> torch.Tensor:
        out = blank_map()
        put(out, 0, row=3, col=3, size_cells=(size, size), logit=4.0)  # peaks two cells apart (the cell
        put(out, second_class, row=3, col=5, size_cells=(size, size), logit=3.0)  # between them is low)
        return out

    (apart,) = decode(two_peaks(2.0)[None], K, [(8, 8)])
    assert len(apart.scores) == 2  # x 2.5..4.5 and 4.5..6.5: IoU 0, two objects
    (merged,) = decode(two_peaks(8.0)[None], K, [(8, 8)])  # x 0..7.5 and 1.5..8 (clipped): IoU 0.75
    assert len(merged.scores) == 1
    assert merged.scores[0] == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())  # the stronger peak stays
    (two_classes,) = decode(two_peaks(8.0, second_class=1)[None], K, [(8, 8)])
    assert sorted(two_classes.classes.tolist()) == [0, 1]  # NMS is per class


def test_peaks_below_threshold_and_non_maxima_are_dropped() -> None:
    out = blank_map()
    put(out, 0, row=1, col=1, size_cells=(1.0, 1.0), logit=-2.0)  # p = 0.12 < 0.3
    put(out, 1, row=6, col=6, size_cells=(1.0, 1.0), logit=3.0)
    out[1, 6, 7] = 2.0  # a neighbour lower than the peak is no peak
    (found,) = decode(out[None], K, [(8, 8)])
    assert found.classes.tolist() == [1] and len(found.boxes) == 1


def test_read_detections_counts_and_event() -> None:
    out = blank_map()
    put(out, 0, row=1, col=1, size_cells=(1.0, 1.0))
    put(out, 0, row=6, col=6, size_cells=(1.0, 1.0))
    put(out, 1, row=1, col=6, size_cells=(1.0, 1.0))
    reading = read_detections(out, ("person", "car"), min_count=3, frame_size=(80, 80))
    assert reading.counts == {"person": 2, "car": 1} and reading.count == 3 and reading.label
    assert {b["class"] for b in reading.boxes} == {"person", "car"}
    assert all(set(b) == {"x0", "y0", "x1", "y1", "score", "class"} for b in reading.boxes)
    assert not read_detections(out, ("person", "car"), min_count=4, frame_size=(80, 80)).label


def test_zones_use_the_bottom_centre() -> None:
    boxes = torch.tensor([[10.0, 0.0, 20.0, 45.0],  # bottom-centre (15, 45): inside
                          [10.0, 60.0, 20.0, 70.0],  # (15, 70): below the zone though its top is not
                          [40.0, 20.0, 60.0, 30.0]])  # (50, 30): right of the triangle's slope
    zone = check_polygon([[0, 40], [50, 40], [0, 60]], "zone")
    assert in_zones(boxes, [zone]).tolist() == [True, False, False]
    assert in_zones(boxes, [zone, check_polygon([[30, 0], [70, 0], [70, 35], [30, 35]], "z")]).tolist() == [
        True, False, True]
    with pytest.raises(ValueError, match="at least 3"):
        check_polygon([[0, 0], [1, 1]], "cameras.c1.apps[0].zones[0]")


def test_zones_restrict_counts_not_boxes() -> None:
    out = blank_map()
    put(out, 0, row=1, col=1, size_cells=(1.0, 1.0))  # bottom-centre (15, 20) in an 80x80 frame
    put(out, 0, row=6, col=6, size_cells=(1.0, 1.0))  # (65, 70)
    left_half = check_polygon([[0, 0], [40, 0], [40, 80], [0, 80]], "zone")
    reading = read_detections(out, ("person", "car"), min_count=2, frame_size=(80, 80), zones=[left_half])
    assert len(reading.boxes) == 2 and reading.count == 1 and reading.counts == {"person": 1, "car": 0}
    assert not reading.label


def test_a_batch_decodes_like_its_frames_one_by_one() -> None:
    first, empty, third = blank_map(), blank_map(), blank_map()
    put(first, 0, row=3, col=3, size_cells=(8.0, 8.0), logit=4.0)
    put(first, 0, row=3, col=5, size_cells=(8.0, 8.0), logit=3.0)  # suppressed by the first in its frame
    put(third, 0, row=3, col=5, size_cells=(8.0, 8.0), logit=3.0)  # the same box, another frame: kept
    put(third, 1, row=6, col=1, size_cells=(1.0, 1.0), logit=2.0)
    sizes = [(8, 8), (80, 80), (16, 32)]
    together = decode(torch.stack([first, empty, third]), K, sizes)
    alone = [decode(m[None], K, [size])[0] for m, size in zip((first, empty, third), sizes)]
    assert [len(d.scores) for d in together] == [1, 0, 2]
    for a, b in zip(together, alone):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores) and torch.equal(a.classes, b.classes)
