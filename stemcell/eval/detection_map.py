"""mAP of detect apps through pycocotools (the reference COCO evaluation), never a hand-written AP.

Frames and boxes are handed over in memory as a COCO ground truth and result list; pycocotools
prints its tables to stdout, which is captured (the numbers are returned).
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


@dataclass(frozen=True)
class MapResult:
    map50: float  # AP at IoU 0.5, averaged over classes (COCO's 101-point interpolation)
    map50_95: float  # AP averaged over IoU 0.50:0.05:0.95 and classes


def coco_map(
    truth: Sequence[np.ndarray], predicted: Sequence[np.ndarray], num_classes: int, frame_size: tuple[int, int]
) -> MapResult | None:
    """mAP of per-frame predictions against per-frame ground truth, all in the same pixel units.

    `truth[i]`: (M, 5) class, x0, y0, x1, y1; `predicted[i]`: (P, 6) class, x0, y0, x1, y1, score;
    classes are 0..num_classes-1. None when there is no ground-truth box at all (mAP is undefined).
    """
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} ground-truth frames but {len(predicted)} predicted frames")
    height, width = frame_size
    images = [{"id": i, "width": width, "height": height} for i in range(len(truth))]
    annotations: list[dict[str, object]] = []
    for i, boxes in enumerate(truth):
        for cls, x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 5):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(cls) + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    if not annotations:
        return None
    results = [
        {"image_id": i, "category_id": int(cls) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score}
        for i, boxes in enumerate(predicted)
        for cls, x0, y0, x1, y1, score in np.asarray(boxes, np.float64).reshape(-1, 6)
    ]
    if not results:
        return MapResult(0.0, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": k + 1, "name": str(k)} for k in range(num_classes)]}
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # stats[0] = AP@[.5:.95], stats[1] = AP@.5 (all areas, 100 detections); -1 means no class had truth
    return MapResult(map50=max(0.0, float(evaluation.stats[1])), map50_95=max(0.0, float(evaluation.stats[0])))
