"""Export the synthetic world in the formats users bring: videos + a labels table, or COCO.

What `stemcell train` reads with `data.kind: video_labels` / `coco` (see README "Train on your own
cameras"), so the whole own-data path is tested against the world's exact ground truth.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from stemcell.world.datatypes import CLASSES
from stemcell.world.export import write_mp4
from stemcell.world.timeline import World


def export_video_labels(world: World, out_dir: str | Path, *, table: str = "labels.csv") -> tuple[list[Path], Path]:
    """Every camera as `cameraNN.mp4` plus one labels table (CSV or Parquet by suffix) covering every frame.

    One row per visible object with its box; a frame without objects gets one row with an empty
    class, so the table lists every labelled frame (`labelled_frames: listed` and `until_last` agree).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns: dict[str, list[object]] = {k: [] for k in ("video", "frame", "class", "x0", "y0", "x1", "y1", "camera_id")}
    videos = []
    for timeline in world.cameras():
        video = write_mp4(timeline, out / f"camera{timeline.camera:02d}.mp4", 0, timeline.num_frames)
        videos.append(video)
        for i in range(timeline.num_frames):
            objects = [(b.name, b.x0, b.y0, b.x1, b.y1) for b in timeline.labels(i).boxes] or [(None,) * 5]
            for obj in objects:
                for key, value in zip(columns, (video.name, i, *obj, f"cam-{timeline.camera}")):
                    columns[key].append(value)
    types = {"video": pa.string(), "frame": pa.int64(), "class": pa.string(), "camera_id": pa.string(),
             **{k: pa.int32() for k in ("x0", "y0", "x1", "y1")}}
    data = pa.table({k: pa.array(v, types[k]) for k, v in columns.items()})
    path = out / table
    if path.suffix == ".parquet":
        pq.write_table(data, path)
    else:
        pacsv.write_csv(data, path)
    return videos, path


def export_coco(world: World, out_dir: str | Path, frames: Sequence[int] | np.ndarray) -> Path:
    """Frames `frames` of every camera as PNGs plus `annotations.json` (COCO, with `video_id`/`frame_id`)."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)]
    images, annotations = [], []
    for timeline in world.cameras():
        for i in frames:
            image_id = len(images) + 1
            name = f"images/camera{timeline.camera:02d}_{int(i):06d}.png"
            cv2.imwrite(str(out / name), cv2.cvtColor(timeline.frame(int(i)), cv2.COLOR_RGB2BGR))
            images.append({"id": image_id, "file_name": name, "width": timeline.config.width,
                           "height": timeline.config.height, "video_id": f"camera{timeline.camera:02d}", "frame_id": int(i)})
            for b in timeline.labels(int(i)).boxes:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": b.cls + 1,
                                    "bbox": [b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0], "area": (b.x1 - b.x0) * (b.y1 - b.y0),
                                    "iscrowd": 0})
    path = out / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path
