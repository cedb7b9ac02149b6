"""`kind: synthetic`: the synthetic world's cameras, with exact per-class object counts and boxes."""
from __future__ import annotations

import numpy as np

from stemcell.config import SyntheticData
from stemcell.data.dataset import (
    FrameDataset,
    VideoTimeline,
    even_sample,
    resize_square,
)
from stemcell.data.registry import LoadRequest, register_source
from stemcell.training.data import LabelledFrames
from stemcell.world import CLASSES, World
from stemcell.world.datatypes import Box


def world_boxes(boxes: tuple[Box, ...], scale: np.ndarray) -> np.ndarray:
    """The world's exact pixel boxes as (M, 5) class, x0, y0, x1, y1 normalised by the frame size."""
    return np.array([[b.cls, *(np.array([b.x0, b.y0, b.x1, b.y1]) / scale)] for b in boxes], np.float32).reshape(-1, 5)


@register_source("synthetic")
def load_synthetic(section: SyntheticData, request: LoadRequest) -> FrameDataset:
    """Every camera of the configured world, `frames_per_video` frames spread over each timeline."""
    world = World(request.world)
    parts, timelines, boxes = [], [], []
    scale = np.array([world.config.width, world.config.height] * 2, np.float32)
    for cam in range(world.config.num_cameras):
        timeline = world.camera(cam)
        idx = even_sample(timeline.num_frames, request.frames_per_video)
        frames = np.stack([resize_square(f, request.input_size) for f in timeline.frames(idx)])
        counts = timeline.counts()
        parts.append((frames, counts[idx], np.full(len(idx), cam), idx))
        timelines.append(VideoTimeline(f"camera{cam:02d}", str(cam), np.arange(timeline.num_frames), counts))
        boxes += [world_boxes(timeline.labels(int(i)).boxes, scale) for i in idx]
    frames, counts, cams, idx = (np.concatenate(p) for p in zip(*parts))
    samples = LabelledFrames(frames, counts > 0, cams, idx, counts, tuple(boxes))
    return FrameDataset("synthetic", CLASSES, world.config.fps, samples, tuple(timelines), (), "the synthetic world")
