"""`kind: video_labels`: video files (anything OpenCV reads) plus a labels table (CSV or Parquet).

The table has one row per object: `video` (file name), `frame` (index) or `ts` (seconds), `class`,
optionally a pixel box `x0, y0, x1, y1` and `camera_id` (default: the video's name without suffix).
A row whose `class` is empty marks a labelled frame with no objects. Which frames are labelled:
- `labelled: {video: [first, last]}` for a video: exactly those frames (inclusive);
- else `labelled_frames: until_last` (default, hand-made tables): every frame from 0 to the last
  frame listed for that video; frames without rows are negatives;
- else `labelled_frames: listed`: only frames that appear in the table (what `stemcell label
  --every N` writes).
Every problem is reported with the file and the row (1-based, header not counted) at fault.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from stemcell.config import VideoLabelsData
from stemcell.data.dataset import (
    DataError,
    DataFile,
    FrameDataset,
    VideoTimeline,
    even_sample,
    resize_square,
)
from stemcell.data.registry import LoadRequest, register_source
from stemcell.package.store import file_sha256
from stemcell.training.data import LabelledFrames

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts")
_TEXT_COLUMNS = ("video", "class", "camera_id")
_BOX = ("x0", "y0", "x1", "y1")


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    num_frames: int
    fps: float
    width: int
    height: int


@dataclass(frozen=True)
class LabelRow:
    row: int  # 1-based row in the table
    video: str
    frame: int
    cls: str | None  # None: a labelled frame without objects
    box: tuple[float, float, float, float] | None = None  # pixel x0, y0, x1, y1 (None: the table has none)


def video_files(videos: list[Path] | Path) -> list[Path]:
    """The configured videos: a list of files, or every video file in one folder (sorted)."""
    if isinstance(videos, Path) and videos.is_dir():
        found = sorted(p for p in videos.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not found:
            raise DataError(f"data.videos: {videos} holds no video files ({', '.join(VIDEO_SUFFIXES)})")
        return found
    paths = [videos] if isinstance(videos, Path) else list(videos)
    for i, p in enumerate(paths):
        if not p.is_file():
            raise DataError(f"data.videos[{i}]: video file not found: {p}")
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise DataError(f"data.videos: file names must be unique (the labels table refers to them), got {names}")
    return paths


def probe_video(path: Path) -> VideoInfo:
    """Open a video and decode its first frame; a missing or corrupt file is a DataError naming it."""
    cap = cv2.VideoCapture(str(path))
    try:
        ok, frame = cap.read() if cap.isOpened() else (False, None)
        if not ok or frame is None:
            raise DataError(f"{path}: cannot open or decode the video (missing, corrupt or unsupported codec)")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        if count <= 0:  # some containers do not say: count by decoding
            count = 1
            while cap.grab():
                count += 1
    finally:
        cap.release()
    if not math.isfinite(fps) or fps <= 0:
        raise DataError(f"{path}: the video reports no frame rate")
    return VideoInfo(path, count, fps, frame.shape[1], frame.shape[0])


def read_table(path: Path) -> dict[str, list[object]]:
    """The labels table as columns; CSV or Parquet by suffix."""
    if not path.is_file():
        raise DataError(f"data.labels: labels table not found: {path}")
    try:
        if path.suffix.lower() == ".parquet":
            table = pq.read_table(path)
        elif path.suffix.lower() == ".csv":
            types = {c: pa.string() for c in _TEXT_COLUMNS}  # a class named "1" stays a string
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
        else:
            raise DataError(f"data.labels: {path} must be .csv or .parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: cannot read the labels table: {exc}") from exc
    columns = table.to_pydict()
    missing = [c for c in ("video", "class") if c not in columns]
    if "frame" not in columns and "ts" not in columns:
        missing.append("frame (or ts)")
    box = [c for c in _BOX if c in columns]
    if box and len(box) != 4:
        missing += [c for c in _BOX if c not in columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (have {sorted(columns)})")
    return columns


def _frame_of(columns: dict[str, list[object]], i: int, fps: float, where: str) -> int:
    frame = columns["frame"][i] if "frame" in columns else None
    if frame is None:
        ts = columns["ts"][i] if "ts" in columns else None
        if ts is None:
            raise DataError(f"{where}: neither frame nor ts is set")
        return int(round(float(ts) * fps))  # type: ignore[arg-type]
    if float(frame) != int(frame):  # type: ignore[arg-type]
        raise DataError(f"{where}: frame {frame!r} is not a whole number")
    return int(frame)  # type: ignore[arg-type]


def _check_box(columns: dict[str, list[object]], i: int, info: VideoInfo, where: str) -> tuple[float, ...] | None:
    values = [columns[c][i] for c in _BOX]
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise DataError(f"{where}: box {dict(zip(_BOX, values))} is partly empty")
    x0, y0, x1, y1 = (float(v) for v in values)  # type: ignore[arg-type]
    if not (0 <= x0 < x1 <= info.width and 0 <= y0 < y1 <= info.height):
        raise DataError(f"{where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {info.width}x{info.height} "
                        f"frame of {info.path.name} (or is empty)")
    return (x0 / info.width, y0 / info.height, x1 / info.width, y1 / info.height)


def parse_rows(table_path: Path, columns: dict[str, list[object]], videos: dict[str, VideoInfo]) -> list[LabelRow]:
    """Validate every row against its video (name, frame range, box) and return the parsed rows."""
    rows = []
    has_box = "x0" in columns
    for i, name in enumerate(columns["video"]):
        where = f"{table_path}: row {i + 1}"
        if name is None or str(name) not in videos:
            raise DataError(f"{where}: video {name!r} is not among data.videos ({sorted(videos)})")
        info = videos[str(name)]
        frame = _frame_of(columns, i, info.fps, where)
        if not 0 <= frame < info.num_frames:
            raise DataError(f"{where}: frame {frame} is past the end of {info.path.name} ({info.num_frames} frames)")
        cls = columns["class"][i]
        cls = None if cls is None or (isinstance(cls, float) and math.isnan(cls)) or str(cls).strip() == "" else str(cls)
        box = _check_box(columns, i, info, where) if has_box and cls is not None else None
        rows.append(LabelRow(i + 1, str(name), frame, cls, box))  # type: ignore[arg-type]
    return rows


def labelled_frames(section: VideoLabelsData, info: VideoInfo, rows: list[LabelRow], table: Path) -> np.ndarray:
    """The labelled frame indices of one video under the documented rule."""
    name = info.path.name
    if name in section.labelled:
        first, last = section.labelled[name]
        if not 0 <= first <= last < info.num_frames:
            raise DataError(f"data.labelled.{name}: [{first}, {last}] is outside the video's {info.num_frames} frames")
        outside = next((r for r in rows if not first <= r.frame <= last), None)
        if outside is not None:
            raise DataError(f"{table}: row {outside.row}: frame {outside.frame} is outside data.labelled.{name} "
                            f"[{first}, {last}]")
        return np.arange(first, last + 1)
    listed = np.unique([r.frame for r in rows])
    if section.labelled_frames == "listed" or not len(listed):
        return listed
    return np.arange(listed[-1] + 1)


def read_frames(info: VideoInfo, wanted: np.ndarray, size: int) -> np.ndarray:
    """Decode the frames `wanted` (increasing) in one pass, resized to (size, size) RGB."""
    cap = cv2.VideoCapture(str(info.path))
    out, j = [], 0
    try:
        for index in range(int(wanted[-1]) + 1 if len(wanted) else 0):
            if not cap.grab():
                raise DataError(f"{info.path}: cannot decode frame {index} (file truncated or corrupt?)")
            if index == wanted[j]:
                ok, frame = cap.retrieve()
                if not ok:
                    raise DataError(f"{info.path}: cannot decode frame {index} (file truncated or corrupt?)")
                out.append(resize_square(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), size))
                j += 1
    finally:
        cap.release()
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def frame_boxes(rows: list[LabelRow], frame: int, classes: tuple[str, ...]) -> np.ndarray:
    """(M, 5) class column, normalised x0, y0, x1, y1 of the boxed objects in one frame."""
    found = [[classes.index(r.cls), *r.box] for r in rows if r.frame == frame and r.cls is not None and r.box]
    return np.array(found, np.float32).reshape(-1, 5)


def class_list(configured: list[str] | None, found: set[str], where: str) -> tuple[str, ...]:
    """The configured class order (every found class must be in it), else the found classes sorted."""
    if configured is not None and not configured:
        raise DataError(f"{where}: data.classes is empty (give the class names, or leave it out)")
    if configured is None:
        if not found:
            raise DataError(f"{where}: no objects at all (every class is empty)")
        return tuple(sorted(found))
    unknown = sorted(found - set(configured))
    if unknown:
        raise DataError(f"{where}: classes {unknown} are not in data.classes {configured}")
    return tuple(configured)


@register_source("video_labels")
def load_video_labels(section: VideoLabelsData, request: LoadRequest) -> FrameDataset:
    paths = video_files(section.videos)
    columns = read_table(section.labels)
    unknown_ranges = sorted(set(section.labelled) - {p.name for p in paths})
    if unknown_ranges:
        raise DataError(f"data.labelled: {unknown_ranges} are not among data.videos")
    infos = {p.name: probe_video(p) for p in paths}
    rows = parse_rows(section.labels, columns, infos)
    unknown = next((r for r in rows if section.classes and r.cls not in (*section.classes, None)), None)
    if unknown is not None:
        raise DataError(f"{section.labels}: row {unknown.row}: class {unknown.cls!r} is not in data.classes {section.classes}")
    classes = class_list(section.classes, {r.cls for r in rows if r.cls is not None}, str(section.labels))
    camera_ids = columns.get("camera_id")
    parts, timelines, files = [], [], [DataFile(str(section.labels), file_sha256(section.labels))]
    boxes: list[np.ndarray] = []
    for v, path in enumerate(paths):
        info = infos[path.name]
        mine = [r for r in rows if r.video == path.name]
        frames = labelled_frames(section, info, mine, section.labels)
        if not len(frames):
            log.warning("%s: no labelled frames (no rows and no data.labelled range): skipped", path)
            continue
        counts = np.zeros((len(frames), len(classes)), np.int32)
        for r in mine:
            if r.cls is not None:
                counts[np.searchsorted(frames, r.frame), classes.index(r.cls)] += 1
        cams = {str(camera_ids[r.row - 1]) for r in mine if camera_ids and camera_ids[r.row - 1] is not None}
        if len(cams) > 1:
            raise DataError(f"{section.labels}: video {path.name} has several camera_id values {sorted(cams)}")
        timelines.append(VideoTimeline(path.name, cams.pop() if cams else path.stem, frames, counts))
        pick = even_sample(len(frames), request.frames_per_video)
        boxes += [frame_boxes(mine, int(f), classes) for f in frames[pick]]
        parts.append((read_frames(info, frames[pick], request.input_size), counts[pick],
                      np.full(len(pick), len(timelines) - 1), frames[pick]))
        files.append(DataFile(str(path), file_sha256(path)))
    if not parts:
        raise DataError(f"{section.labels}: no video has labelled frames")
    fps = {info.fps for info in infos.values()}
    if len(fps) > 1:
        log.warning("videos have different frame rates %s; event lengths use the first video's", sorted(fps))
    frames, counts, cams, idx = (np.concatenate(p) for p in zip(*parts))
    complete = all(r.box is not None for r in rows if r.cls is not None)  # else boxes are unknown
    samples = LabelledFrames(frames, counts > 0, cams, idx, counts, tuple(boxes) if complete else None)
    return FrameDataset("video_labels", classes, infos[paths[0].name].fps, samples, tuple(timelines), tuple(files),
                        str(section.labels))
