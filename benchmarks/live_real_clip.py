"""The real clip of benchmarks/live_learning.py: vtest.avi zones with OpenCV's HOG people teacher.

In the whole vtest frame someone is always there (HOG marks every frame "person"), so agreement
with the teacher says nothing; in some quadrants people come and go. Each such zone is a camera
learning "person": the teacher labels the zone at full resolution (enlarged, HOG's window is 128 px
tall), the student sees it at model size, as a pulled camera with `learning.live_teacher_side` does.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from ams_common import fresh_app

from stemcell.imaging import resize_frames
from stemcell.learning import AmsConfig, AmsTrainer
from stemcell.learning.serving import LiveLearning
from stemcell.learning.teachers import HogPeopleTeacherConfig, build_teacher, presence
from stemcell.models import SegmentedNet

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
VTEST_FPS = 10.0
# (row, column) quadrants where people come and go (HOG x1.5 marks 71 %, 12 % and 22 % of 1 fps
# samples); in the top-right one, as in the whole frame, someone is always there
VTEST_ZONES = ((0, 0), (1, 0), (1, 1))


def vtest_zones(args: argparse.Namespace) -> tuple[list[np.ndarray], list[float]]:
    """vtest.avi at `--real-fps`, cut into quadrant zones people enter and leave (`VTEST_ZONES`)."""
    from stemcell.world.video_io import open_source

    frames, stamps = [], []
    with open_source(VTEST) as source:
        for index, (frame, _) in enumerate(source):
            if index % max(1, round(VTEST_FPS / args.real_fps)) == 0:
                frames.append(frame)
                stamps.append(index / VTEST_FPS)
    height, width = frames[0].shape[:2]
    zones = [np.stack([np.ascontiguousarray(f[r * height // 2:(r + 1) * height // 2, c * width // 2:(c + 1) * width // 2])
                       for f in frames]) for r, c in VTEST_ZONES]
    return zones, stamps


def real_clip(base: SegmentedNet, args: argparse.Namespace, config: AmsConfig) -> dict[str, Any]:
    """vtest.avi (people walking) with OpenCV's HOG people teacher, one zone camera per quadrant where
    people come and go (in the whole frame they are always there): the teacher sees each
    zone at full resolution, enlarged `--real-hog-scale` times (HOG's window is 128 px tall), the
    student the zone at model size. Agreement of the student with the teacher over the first and the
    last third of the clip, on samples it had not trained on yet, pooled over the zones."""
    if not VTEST.is_file():
        return {"real_agreement_start": None, "real_agreement_end": None, "real_clip": f"{VTEST} missing"}
    teacher = build_teacher(HogPeopleTeacherConfig(kind="opencv_hog_people", scale=args.real_hog_scale))
    trainer = AmsTrainer(config)
    live = LiveLearning(trainer, lambda a, bp: fresh_app(base, bp, a), lambda a: [args.branchpoint])
    zones, stamps = vtest_zones(args)
    positives, thirds = [], {"start": [], "end": []}
    for z, full in enumerate(zones):
        camera = f"vtest-zone{z}"
        trainer.add_job(camera, "person", fresh_app(base, args.branchpoint, "person"), 0,
                        {"branchpoint": args.branchpoint})
        small = resize_frames(full, args.size)
        for k in range(0, len(small), args.live_batch):
            ts, frames = stamps[k:k + args.live_batch], small[k:k + args.live_batch]
            labels = presence(teacher.label(full[k:k + args.live_batch]), ("person",))
            positives += labels[:, 0].tolist()
            live.measure(camera, ["person"], ts, frames, labels)
            trainer.add_samples(camera, np.asarray(ts), frames, labels)
            trainer.run_pending()
        history = live.stats.agreement[(camera, "person")].history
        third = max(1, len(history) // 3)
        thirds["start"] += [a for _, a in history[:third]]
        thirds["end"] += [a for _, a in history[-third:]]
    return {"real_agreement_start": float(np.mean(thirds["start"])), "real_agreement_end": float(np.mean(thirds["end"])),
            "real_teacher_positive_fraction": float(np.mean(positives)),
            "real_clip": f"{VTEST.name}: {len(zones)} quadrant zones x {len(stamps)} samples at {args.real_fps:g} fps; HOG sees "
                         f"{zones[0].shape[2]}x{zones[0].shape[1]} px zones x {args.real_hog_scale:g}, the student {args.size} px"}
