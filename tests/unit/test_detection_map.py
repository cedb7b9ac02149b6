"""mAP through pycocotools on tiny cases whose answer is known by hand."""
from __future__ import annotations

import numpy as np
import pytest

from stemcell.eval.detection_map import coco_map

SIZE = (200, 200)
TRUTH = [np.array([[0, 0.0, 0.0, 100.0, 100.0]])]


def test_a_perfect_box_scores_one() -> None:
    result = coco_map(TRUTH, [np.array([[0, 0.0, 0.0, 100.0, 100.0, 0.9]])], 1, SIZE)
    assert result is not None and result.map50 == pytest.approx(1.0) and result.map50_95 == pytest.approx(1.0)


def test_iou_072_matches_half_the_thresholds() -> None:
    # IoU 0.72: a hit at 0.50, 0.55, 0.60, 0.65, 0.70 and a miss at 0.75..0.95 -> mAP@[.5:.95] = 5/10
    result = coco_map(TRUTH, [np.array([[0, 0.0, 0.0, 100.0, 72.0, 0.9]])], 1, SIZE)
    assert result is not None and result.map50 == pytest.approx(1.0) and result.map50_95 == pytest.approx(0.5)


def test_a_more_confident_false_alarm_halves_ap50() -> None:
    # ranked: false alarm (0.95) then the hit (0.9): precision 1/2 at recall 1 -> AP 0.5
    predicted = [np.array([[0, 120.0, 120.0, 180.0, 180.0, 0.95], [0, 0.0, 0.0, 100.0, 100.0, 0.9]])]
    result = coco_map(TRUTH, predicted, 1, SIZE)
    assert result is not None and result.map50 == pytest.approx(0.5, abs=0.01)


def test_classes_are_averaged_and_the_edges_are_defined() -> None:
    truth = [np.array([[0, 0.0, 0.0, 100.0, 100.0], [1, 120.0, 120.0, 180.0, 180.0]])]
    only_class_0 = [np.array([[0, 0.0, 0.0, 100.0, 100.0, 0.9]])]
    result = coco_map(truth, only_class_0, 2, SIZE)
    assert result is not None and result.map50 == pytest.approx(0.5)  # class 0: AP 1, class 1: AP 0
    nothing = coco_map(truth, [np.zeros((0, 6))], 2, SIZE)
    assert nothing is not None and nothing.map50 == 0.0 and nothing.map50_95 == 0.0
    assert coco_map([np.zeros((0, 5))], only_class_0, 1, SIZE) is None  # no truth: undefined
    with pytest.raises(ValueError, match="1 ground-truth frames but 2"):
        coco_map(TRUTH, only_class_0 * 2, 1, SIZE)
