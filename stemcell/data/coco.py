"""`kind: coco`: a COCO detection JSON (images, annotations, categories).

Images may be frames extracted from video: an image's optional `video_id` groups it into a sequence
and `frame_id` gives its frame index there (COCO-VID / TAO style), so the held-out split stays by
whole time chunks per video. Without them all images form one sequence in id order. Every image is
a labelled frame; one without annotations is a negative.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from stemcell.config import CocoData
from stemcell.data.dataset import DataError, DataFile, FrameDataset, VideoTimeline, even_sample, resize_square
from stemcell.data.registry import LoadRequest, register_source
from stemcell.data.video_labels import class_list
from stemcell.package.store import file_sha256
from stemcell.training.data import LabelledFrames


def _read_json(path: Path) -> dict[str, list[dict[str, object]]]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"data.annotations: COCO file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(raw.get(k), list)]
    if missing:
        raise DataError(f"{path}: missing COCO lists {missing}")
    return raw


def _index(path: Path, items: list[dict[str, object]], what: str, required: tuple[str, ...]) -> dict[object, dict[str, object]]:
    out: dict[object, dict[str, object]] = {}
    for i, item in enumerate(items):
        lacking = [k for k in required if k not in item]
        if lacking:
            raise DataError(f"{path}: {what}[{i}] lacks {lacking}")
        if item["id"] in out:
            raise DataError(f"{path}: {what}[{i}]: duplicate id {item['id']!r}")
        out[item["id"]] = item
    return out


def _object_counts(path: Path, raw: dict[str, list[dict[str, object]]], images: dict[object, dict[str, object]],
                   names: dict[object, str], classes: tuple[str, ...]) -> tuple[dict[object, np.ndarray], dict[object, list]]:
    """Objects per class and pixel boxes (class column, x0, y0, x1, y1) per image id; dangling ids
    and boxes outside the image are errors."""
    counts = {i: np.zeros(len(classes), np.int32) for i in images}
    boxes: dict[object, list] = {i: [] for i in images}
    for k, ann in enumerate(raw["annotations"]):
        where = f"{path}: annotations[{k}] (id {ann.get('id')!r})"
        if ann.get("image_id") not in images:
            raise DataError(f"{where}: image_id {ann.get('image_id')!r} is not among the images")
        if ann.get("category_id") not in names:
            raise DataError(f"{where}: category_id {ann.get('category_id')!r} is not among the categories")
        image = images[ann["image_id"]]
        if "bbox" in ann:
            x, y, w, h = (float(v) for v in ann["bbox"])  # type: ignore[union-attr]
            width, height = image.get("width"), image.get("height")
            if w <= 0 or h <= 0 or x < 0 or y < 0 or (width is not None and x + w > float(width) + 0.5) or (  # type: ignore[arg-type]
                    height is not None and y + h > float(height) + 0.5):  # type: ignore[arg-type]
                raise DataError(f"{where}: bbox {ann['bbox']} lies outside the {width}x{height} image "
                                f"{image.get('file_name')} (or is empty)")
            boxes[ann["image_id"]].append([classes.index(names[ann["category_id"]]), x, y, x + w, y + h])
        counts[ann["image_id"]][classes.index(names[ann["category_id"]])] += 1
    return counts, boxes


def _normalised(boxes: list, image: np.ndarray) -> np.ndarray:
    """Pixel boxes of one image -> (M, 5) class column, x0, y0, x1, y1 normalised by its size."""
    h, w = image.shape[:2]
    return (np.array(boxes, np.float32).reshape(-1, 5) / np.array([1, w, h, w, h], np.float32)).clip(0, None)


def _read_image(root: Path, image: dict[str, object], path: Path) -> np.ndarray:
    file = root / str(image["file_name"])
    bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"{path}: image id {image['id']!r}: cannot read {file} (missing or corrupt)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@register_source("coco")
def load_coco(section: CocoData, request: LoadRequest) -> FrameDataset:
    path = section.annotations
    raw = _read_json(path)
    images = _index(path, raw["images"], "images", ("id", "file_name"))
    categories = _index(path, raw["categories"], "categories", ("id", "name"))
    names = {cid: str(c["name"]) for cid, c in categories.items()}
    used = {names[a["category_id"]] for a in raw["annotations"] if a.get("category_id") in names}
    for k, ann in enumerate(raw["annotations"]):
        if section.classes is not None and names.get(ann.get("category_id")) not in (*section.classes, None):
            raise DataError(f"{path}: annotations[{k}] (id {ann.get('id')!r}): class "
                            f"{names[ann['category_id']]!r} is not in data.classes {section.classes}")
    classes = class_list(section.classes or list(dict.fromkeys(names.values())), used, str(path))
    counts, pixel_boxes = _object_counts(path, raw, images, names, classes)
    sequences: dict[str, list[dict[str, object]]] = defaultdict(list)
    for image in images.values():
        sequences[str(image.get("video_id", "images"))].append(image)
    root = section.images or path.parent
    parts, timelines, boxes = [], [], []
    for v, (name, members) in enumerate(sorted(sequences.items())):
        members.sort(key=lambda im: (im.get("frame_id", 0), str(im["id"])))  # type: ignore[arg-type]
        frames = np.array([int(im.get("frame_id", j)) for j, im in enumerate(members)], np.int64)  # type: ignore[call-overload]
        seq_counts = np.stack([counts[im["id"]] for im in members])
        timelines.append(VideoTimeline(name, name, frames, seq_counts))
        pick = even_sample(len(members), request.frames_per_video)
        originals = [_read_image(root, members[j], path) for j in pick]
        boxes += [_normalised(pixel_boxes[members[j]["id"]], im) for j, im in zip(pick, originals)]
        pixels = np.stack([resize_square(im, request.input_size) for im in originals])
        parts.append((pixels, seq_counts[pick], np.full(len(pick), v), frames[pick]))
    if not parts:
        raise DataError(f"{path}: no images")
    frames, cnt, cams, idx = (np.concatenate(p) for p in zip(*parts))
    complete = all("bbox" in a for a in raw["annotations"])  # else boxes are unknown (counts still are)
    samples = LabelledFrames(frames, cnt > 0, cams, idx, cnt, tuple(boxes) if complete else None)
    return FrameDataset("coco", classes, section.fps, samples, tuple(timelines), (DataFile(str(path), file_sha256(path)),),
                        str(path))
