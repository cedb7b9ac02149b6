"""`kind: synthetic`: the synthetic world's cameras, with exact per-class object counts."""
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


@register_source("synthetic")
def load_synthetic(section: SyntheticData, request: LoadRequest) -> FrameDataset:
    """Every camera of the configured world, `frames_per_video` frames spread over each timeline."""
    world = World(request.world)
    parts, timelines = [], []
    for cam in range(world.config.num_cameras):
        timeline = world.camera(cam)
        idx = even_sample(timeline.num_frames, request.frames_per_video)
        frames = np.stack([resize_square(f, request.input_size) for f in timeline.frames(idx)])
        counts = timeline.counts()
        parts.append((frames, counts[idx], np.full(len(idx), cam), idx))
        timelines.append(VideoTimeline(f"camera{cam:02d}", str(cam), np.arange(timeline.num_frames), counts))
    frames, counts, cams, idx = (np.concatenate(p) for p in zip(*parts))
    samples = LabelledFrames(frames, counts > 0, cams, idx, counts)
    return FrameDataset("synthetic", CLASSES, world.config.fps, samples, tuple(timelines), (), "the synthetic world")
