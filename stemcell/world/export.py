"""Export a camera as a real video file plus exact labels, and read the labels back.

The mp4 (OpenCV, fourcc 'mp4v') is what a demo camera streams through `open_source`; the Parquet
file beside it holds one row per video frame (row j <-> frame j of the mp4) with the ground truth,
so accuracy can be scored on decoded video exactly as on rendered frames.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stemcell.world.datatypes import CLASSES, Box, FrameLabels
from stemcell.world.timeline import CameraTimeline

_CONFIG_KEY = b"stemcell.world_config"
_BOX_TYPE = pa.struct([("class", pa.string()), ("x0", pa.int32()), ("y0", pa.int32()), ("x1", pa.int32()), ("y1", pa.int32())])
_SCHEMA = pa.schema(
    [("camera", pa.int32()), ("frame", pa.int64()), ("ts", pa.float64()), ("scene_id", pa.int32())]
    + [(name, pa.bool_()) for name in CLASSES]
    + [("boxes", pa.list_(_BOX_TYPE))]
)


@dataclass(frozen=True)
class ExportedLabels:
    """Labels of an exported clip; entry j describes frame j of the mp4."""

    camera: int  # camera the clip came from
    frames: np.ndarray  # int64 (N,): frame numbers in the camera's timeline
    ts: np.ndarray  # float64 (N,): timestamps in the camera's timeline (seconds)
    labels: tuple[FrameLabels, ...]  # exact ground truth per frame
    world_config: dict[str, object]  # WorldConfig fields of the world the clip was rendered from

    def presence(self) -> np.ndarray:
        """bool (N, len(CLASSES))."""
        return np.stack([lab.presence for lab in self.labels]) if self.labels else np.zeros((0, len(CLASSES)), bool)


def write_mp4(timeline: CameraTimeline, path: Path, start: int, stop: int) -> Path:
    """Render frames [start, stop) of `timeline` into an mp4v video at the timeline's fps."""
    size = (timeline.config.width, timeline.config.height)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), timeline.fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v video to {path} (FFmpeg backend missing?)")
    try:
        for i in range(start, stop):
            writer.write(cv2.cvtColor(timeline.frame(i), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def export_camera(
    timeline: CameraTimeline, out_dir: str | Path, start: int = 0, stop: int | None = None, *, name: str | None = None
) -> tuple[Path, Path]:
    """Render frames [start, stop) of `timeline` to `<name>.mp4` and their labels to `<name>.parquet`."""
    stop = timeline.num_frames if stop is None else stop
    if not 0 <= start < stop <= timeline.num_frames:
        raise ValueError(f"bad frame range [{start}, {stop}) for a timeline of {timeline.num_frames} frames")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or f"camera{timeline.camera:02d}_{start}-{stop}"
    mp4_path, parquet_path = out_dir / f"{name}.mp4", out_dir / f"{name}.parquet"
    write_mp4(timeline, mp4_path, start, stop)
    rows = [timeline.labels(i) for i in range(start, stop)]
    columns: dict[str, object] = {
        "camera": [timeline.camera] * len(rows),
        "frame": list(range(start, stop)),
        "ts": [timeline.ts(i) for i in range(start, stop)],
        "scene_id": [lab.scene_id for lab in rows],
    }
    for k, cls in enumerate(CLASSES):
        columns[cls] = [bool(lab.presence[k]) for lab in rows]
    columns["boxes"] = [
        [{"class": b.name, "x0": b.x0, "y0": b.y0, "x1": b.x1, "y1": b.y1} for b in lab.boxes] for lab in rows
    ]
    meta = {_CONFIG_KEY: json.dumps(dataclasses.asdict(timeline.config)).encode()}
    pq.write_table(pa.table(columns, schema=_SCHEMA.with_metadata(meta)), parquet_path)
    return mp4_path, parquet_path


def read_labels(parquet_path: str | Path) -> ExportedLabels:
    """Read a labels file written by `export_camera`."""
    table = pq.read_table(parquet_path)
    missing = set(_SCHEMA.names) - set(table.column_names)
    if missing:
        raise ValueError(f"{parquet_path} is not a Stemcell labels file (missing columns {sorted(missing)})")
    data = table.to_pydict()
    presence = np.array([data[cls] for cls in CLASSES], bool).T.reshape(table.num_rows, len(CLASSES))
    labels = []
    for j in range(table.num_rows):
        row_presence = presence[j].copy()
        row_presence.flags.writeable = False
        boxes = tuple(Box(CLASSES.index(b["class"]), b["x0"], b["y0"], b["x1"], b["y1"]) for b in data["boxes"][j])
        labels.append(FrameLabels(row_presence, boxes, int(data["scene_id"][j])))
    meta = table.schema.metadata or {}
    return ExportedLabels(
        camera=int(data["camera"][0]) if table.num_rows else -1,
        frames=np.asarray(data["frame"], np.int64),
        ts=np.asarray(data["ts"], np.float64),
        labels=tuple(labels),
        world_config=json.loads(meta[_CONFIG_KEY]) if _CONFIG_KEY in meta else {},
    )
