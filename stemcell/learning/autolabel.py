"""`stemcell label`: a teacher labels footage into the `video_labels` table, resumably.

The table (CSV or Parquet, read by the `video_labels` data source) has one row per object:
`video` (file name), `frame`, `ts` (seconds), `class`, `x0, y0, x1, y1` (pixel box), `score`,
`camera_id`. A labelled frame without objects gets one row whose `class` is null, so a reader with
`labelled_frames: listed` knows exactly which frames were labelled (every `--every`-th one).

Resuming: labelled frames are committed in small Parquet parts (written whole, then renamed) under
`.<out>.parts/` beside the output, with the run's settings. A rerun with the same settings skips
what the parts hold and starts after the last committed frame of each video; the output file is
written (atomically) only when every video is done, and the parts are then removed.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stemcell.data.video_labels import VIDEO_SUFFIXES
from stemcell.learning.teachers.base import FrameMeta, FrameObjects, Teacher
from stemcell.world.video_io import _STREAM_SCHEMES, open_source

log = logging.getLogger(__name__)

SCHEMA = pa.schema([
    ("video", pa.string()), ("frame", pa.int64()), ("ts", pa.float64()), ("class", pa.string()),
    ("x0", pa.float32()), ("y0", pa.float32()), ("x1", pa.float32()), ("y1", pa.float32()),
    ("score", pa.float32()), ("camera_id", pa.string()),
])
Progress = Callable[[str, int, "int | None"], None]  # (video, frames read, frames in the video or None)


@dataclass(frozen=True)
class LabelRun:
    """What one `stemcell label` run does; everything but `batch` must match to resume."""

    out: Path  # labels.parquet (or .csv)
    every: int = 1  # label frames 0, every, 2*every, ... of each video
    classes: tuple[str, ...] = ()  # classes written (others the teacher reports are dropped); () = all
    teacher: str = ""  # the teacher's settings as JSON (a resumed run must use the same teacher)
    batch: int = 8  # frames per teacher call
    part_frames: int = 64  # labelled frames per committed part: the most an interruption loses

    @property
    def parts_dir(self) -> Path:
        return self.out.parent / f".{self.out.name}.parts"


def list_videos(source: str) -> list[str]:
    """A video file, every video file in a folder (sorted), or a stream URL, as `open_source` specs."""
    if source.lower().startswith(_STREAM_SCHEMES):
        return [source]
    path = Path(source).expanduser()
    if path.is_dir():
        videos = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        if not videos:
            raise ValueError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) in folder {path}")
        return videos
    if not path.is_file():
        raise FileNotFoundError(f"video source not found: {source}")
    return [str(path)]


def video_name(spec: str) -> str:
    """The `video` column: a file's name; for a stream, its URL made a file-like name."""
    if spec.lower().startswith(_STREAM_SCHEMES):
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.split("://", 1)[1]).strip("_") or "stream"
    return Path(spec).name


def label_rows(video: str, frame: int, ts: float, objects: FrameObjects, classes: Sequence[str]) -> list[dict[str, Any]]:
    """One row per object of `classes` (a count beyond the boxes given adds box-less rows), or one
    row with a null class when the frame has none."""
    base = {"video": video, "frame": frame, "ts": ts, "camera_id": Path(video).stem}
    empty = {"x0": None, "y0": None, "x1": None, "y1": None, "score": None}
    rows = []
    for cls in classes:
        found = objects.objects.get(cls)
        if found is None:
            continue
        for box, score in zip(found.boxes.tolist(), found.scores.tolist()):
            rows.append({**base, "class": cls, "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3], "score": score})
        rows.extend({**base, "class": cls, **empty} for _ in range(found.count - len(found.boxes)))
    return rows or [{**base, "class": None, **empty}]


class _Parts:
    """The committed parts of an interrupted run and its settings (refused if they differ)."""

    def __init__(self, run: LabelRun, videos: Sequence[str]) -> None:
        self.dir = run.parts_dir
        settings = {"every": run.every, "classes": list(run.classes), "teacher": run.teacher,
                    "videos": [video_name(v) for v in videos]}
        state = self.dir / "run.json"
        if state.is_file():
            previous = json.loads(state.read_text())
            if previous != settings:
                changed = sorted(k for k in settings if previous.get(k) != settings[k])
                raise ValueError(f"{self.dir} holds an interrupted run with other {', '.join(changed)}: rerun with "
                                 f"the same settings to resume, or delete that folder to start over")
            log.info("resuming the interrupted run in %s", self.dir)
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            _write_atomic(state, lambda tmp: tmp.write_text(json.dumps(settings)))

    def _files(self, index: int) -> list[Path]:
        return sorted(self.dir.glob(f"part-{index:04d}-*.parquet"))

    def done(self, index: int) -> bool:
        return (self.dir / f"video-{index:04d}.done").exists()

    def resume_after(self, index: int) -> int:
        """The last frame committed for video `index`, or -1."""
        files = self._files(index)
        return int(pq.read_table(files[-1], columns=["frame"]).column("frame").to_numpy().max()) if files else -1

    def commit(self, index: int, rows: list[dict[str, Any]]) -> None:
        path = self.dir / f"part-{index:04d}-{len(self._files(index)):06d}.parquet"
        _write_atomic(path, lambda tmp: pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp))

    def mark_done(self, index: int) -> None:
        (self.dir / f"video-{index:04d}.done").touch()

    def table(self, count: int) -> pa.Table:
        files = [f for i in range(count) for f in self._files(i)]
        return pa.concat_tables([pq.read_table(f, schema=SCHEMA) for f in files]) if files else SCHEMA.empty_table()


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write to a temporary name, then rename: a reader (or a resumed run) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _batches(spec: str, every: int, start: int, batch: int, progress: Progress | None) -> Iterator[tuple[list[int], list[float], np.ndarray]]:
    """(frame indices, timestamps, RGB frames) of every `every`-th frame from `start`, `batch` at a time."""
    name = video_name(spec)
    with open_source(spec) as source:
        indices: list[int] = []
        stamps: list[float] = []
        frames: list[np.ndarray] = []
        for index, (frame, ts) in enumerate(source):
            if progress is not None:
                progress(name, index + 1, source.num_frames)
            if index < start or index % every:
                continue
            indices.append(index)
            stamps.append(ts)
            frames.append(frame)
            if len(frames) == batch:
                yield indices, stamps, np.stack(frames)
                indices, stamps, frames = [], [], []
        if frames:
            yield indices, stamps, np.stack(frames)


def label_videos(teacher: Teacher, source: str, run: LabelRun, progress: Progress | None = None,
                 world_cameras: dict[str, int] | None = None) -> dict[str, Any]:
    """Label every video of `source` into `run.out`; returns counts per class and frames labelled.

    `world_cameras` (the oracle teacher only): camera id (video stem) -> world camera it shows.
    """
    if run.every < 1:
        raise ValueError(f"--every must be >= 1, got {run.every}")
    unknown = sorted(set(run.classes) - set(teacher.classes))
    if unknown:
        raise ValueError(f"classes {unknown} are not among the teacher's classes {list(teacher.classes)}")
    if run.out.suffix.lower() not in (".parquet", ".csv"):
        raise ValueError(f"--out must end in .parquet or .csv, got {run.out.name}")
    videos = list_videos(source)
    if run.out.exists() and not run.parts_dir.exists():
        raise ValueError(f"{run.out} already exists: delete it or choose another --out")
    classes = run.classes or teacher.classes
    parts = _Parts(run, videos)
    for index, spec in enumerate(videos):
        if not parts.done(index):
            _label_one(teacher, spec, index, run, parts, classes, progress, world_cameras or {})
            parts.mark_done(index)
    table = parts.table(len(videos))
    run.out.parent.mkdir(parents=True, exist_ok=True)
    if run.out.suffix.lower() == ".csv":
        from pyarrow import csv

        _write_atomic(run.out, lambda tmp: csv.write_csv(table, tmp))
    else:
        _write_atomic(run.out, lambda tmp: pq.write_table(table, tmp))
    shutil.rmtree(run.parts_dir)
    labelled = table.select(["video", "frame"]).group_by(["video", "frame"]).aggregate([])
    per_class = {c: int(n) for c, n in zip(*_value_counts(table.column("class")))}
    return {"videos": len(videos), "frames_labelled": labelled.num_rows, "objects": per_class, "out": str(run.out)}


def _value_counts(column: pa.ChunkedArray) -> tuple[list[str], list[int]]:
    counts = column.drop_null().value_counts()
    return counts.field("values").to_pylist(), counts.field("counts").to_pylist()


def _label_one(teacher: Teacher, spec: str, index: int, run: LabelRun, parts: _Parts, classes: Sequence[str],
               progress: Progress | None, world_cameras: dict[str, int]) -> None:
    name = video_name(spec)
    after = parts.resume_after(index)
    if after >= 0:
        log.info("%s: resuming after frame %d", name, after)
    camera = world_cameras.get(Path(name).stem, 0)
    pending: list[dict[str, Any]] = []
    labelled = 0
    for indices, stamps, frames in _batches(spec, run.every, after + 1, run.batch, progress):
        objects = teacher.label(frames, FrameMeta(camera, np.asarray(indices, dtype=np.int64)))
        for frame, ts, found in zip(indices, stamps, objects):
            pending.extend(label_rows(name, frame, ts, found, classes))
        labelled += len(indices)
        if labelled >= run.part_frames:
            parts.commit(index, pending)
            pending, labelled = [], 0
    if pending:
        parts.commit(index, pending)
