"""`stemcell label`: build the teacher from its config file, label footage, show progress on stderr."""
from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from stemcell.config import load_config
from stemcell.learning.autolabel import LabelRun, label_videos
from stemcell.learning.teachers import OracleTeacherConfig, TeacherFile, build_teacher, resolve_paths

BAR_WIDTH = 30


class ProgressBar:
    """One line per video on `stream`, redrawn at most every `min_interval_s` (a bar when the frame
    count is known, a counter for live streams)."""

    def __init__(self, stream: TextIO = sys.stderr, min_interval_s: float = 0.2) -> None:
        self.stream, self.min_interval_s = stream, min_interval_s
        self._video: str | None = None
        self._started = self._drawn = 0.0

    def __call__(self, video: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if video != self._video:
            self.finish()
            self._video, self._started, self._drawn = video, now, now
        last = total is not None and done >= total
        if now - self._drawn < self.min_interval_s and not last:
            return
        self._drawn = now
        rate = done / max(now - self._started, 1e-6)
        if total:
            filled = BAR_WIDTH * min(done, total) // total
            eta = (total - done) / rate if rate > 0 else 0.0
            line = f"{video} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} frames {rate:.1f} fps eta {eta:.0f}s"
        else:
            line = f"{video} {done} frames {rate:.1f} fps"
        self.stream.write(f"\r{line}")
        self.stream.flush()

    def finish(self) -> None:
        if self._video is not None:
            self.stream.write("\n")
            self.stream.flush()
            self._video = None


def run_label(args: argparse.Namespace) -> int:
    teacher_config = resolve_paths(load_config(args.teacher, TeacherFile).teacher, args.teacher.parent)
    teacher = build_teacher(teacher_config)
    run = LabelRun(out=args.out, every=args.every, classes=tuple(args.classes or ()),
                   teacher=teacher_config.model_dump_json(), batch=args.batch)
    cameras = teacher_config.cameras if isinstance(teacher_config, OracleTeacherConfig) else None
    bar = ProgressBar()
    try:
        summary = label_videos(teacher, args.source, run, bar, world_cameras=cameras)
    except KeyboardInterrupt:
        bar.finish()
        print(f"interrupted: labelled frames so far are kept in {run.parts_dir}; rerun the same command to resume",
              file=sys.stderr)
        return 130
    bar.finish()
    objects = ", ".join(f"{c} {n}" for c, n in sorted(summary["objects"].items())) or "none"
    print(f"labelled {summary['frames_labelled']} frames of {summary['videos']} video(s) -> {summary['out']} "
          f"(objects: {objects})")
    print(f"train on it with `data: {{kind: video_labels, videos: {args.source}, labels: {summary['out']}, "
          f"labelled_frames: listed}}` in the training config: only the frames listed in this file were labelled "
          f"(every {args.every}th; a row with an empty class is a frame with no objects)")
    return 0
