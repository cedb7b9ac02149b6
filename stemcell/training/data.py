"""Labelled frames drawn from the synthetic world, split so validation never sees training moments."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stemcell.world import World


@dataclass(frozen=True)
class LabelledFrames:
    frames: np.ndarray  # uint8 (N, H, W, 3) RGB
    presence: np.ndarray  # bool (N, num_classes): which classes are visible in each frame
    cameras: np.ndarray  # int (N,) camera of each frame
    indices: np.ndarray  # int (N,) frame index within its camera's timeline
    counts: np.ndarray | None = None  # int (N, num_classes) objects per class; None: only presence is known
    # per frame float32 (M, 5): class column, x0, y0, x1, y1 normalised to [0, 1] of the frame; None: no boxes
    boxes: tuple[np.ndarray, ...] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def object_counts(self) -> np.ndarray:
        """Objects per class (presence as 0/1 where counts are unknown)."""
        return self.counts if self.counts is not None else self.presence.astype(np.int32)

    def subset(self, mask: np.ndarray) -> LabelledFrames:
        counts = None if self.counts is None else self.counts[mask]
        boxes = None if self.boxes is None else tuple(self.boxes[i] for i in np.arange(len(self))[mask])
        return LabelledFrames(self.frames[mask], self.presence[mask], self.cameras[mask], self.indices[mask], counts,
                              boxes)


def world_frames(
    world: World,
    cameras: Sequence[int],
    frames_per_camera: int,
    *,
    seed: int = 0,
    val_fraction: float = 0.0,
    chunk_s: float = 20.0,
    end_fraction: float = 1.0,
) -> tuple[LabelledFrames, LabelledFrames]:
    """Sample frames evenly over each camera's timeline; split train/val by whole time chunks.

    Neighbouring frames are near-duplicates, so a random per-frame split would leak; assigning whole
    `chunk_s` chunks to validation keeps the held-out estimate honest. `end_fraction` < 1 samples only
    the start of each timeline (used to show drift).
    """
    rng = np.random.default_rng(seed)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for cam in cameras:
        timeline = world.camera(cam)
        stop = max(1, int(timeline.num_frames * end_fraction))
        idx = np.unique(np.linspace(0, stop - 1, num=min(frames_per_camera, stop)).astype(int))
        parts.append((timeline.frames(idx), timeline.presence()[idx], np.full(len(idx), cam), idx))
    frames, presence, cams, idx = (np.concatenate(p) for p in zip(*parts))
    chunk_frames = max(1, int(chunk_s * world.config.fps))
    chunk_ids = cams * 1_000_000 + idx // chunk_frames
    unique_chunks = np.unique(chunk_ids)
    val_chunks = unique_chunks[rng.random(len(unique_chunks)) < val_fraction]
    is_val = np.isin(chunk_ids, val_chunks)
    data = LabelledFrames(frames, presence.astype(bool), cams, idx)
    return data.subset(~is_val), data.subset(is_val)
