"""What every data source produces: sampled frames with per-class object counts, plus provenance.

Counts, not just presence: a `count` app learns how many objects of its class(es) a frame holds,
and presence is simply count > 0. `timelines` keep the labels of *every* labelled frame of each
video (cheap: no decoding), so the package can describe each app's events (base rate, mean event
length) over the whole footage, not only over the frames sampled for training.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stemcell.imaging import resize_frames
from stemcell.models import to_input
from stemcell.training.data import LabelledFrames


class DataError(ValueError):
    """Bad training data; the message names the file and the row or field at fault."""


@dataclass(frozen=True)
class DataFile:
    path: str  # as given in the config
    sha256: str  # content hash (provenance in the manifest)


@dataclass(frozen=True)
class VideoTimeline:
    """Labels of every labelled frame of one video (or image sequence)."""

    name: str  # file name (or sequence id) as the labels refer to it
    camera_id: str  # camera the footage came from
    frames: np.ndarray  # int64 (M,), increasing labelled frame indices
    counts: np.ndarray  # int32 (M, C): objects of each class in each labelled frame

    def spacing(self) -> float:
        """Typical gap between labelled frames (1 when every frame is labelled)."""
        return float(np.median(np.diff(self.frames))) if len(self.frames) > 1 else 1.0


@dataclass(frozen=True)
class FrameDataset:
    kind: str  # data source kind (registry name)
    classes: tuple[str, ...]  # column order of every counts array
    fps: float  # frame rate of the footage (event lengths are in these frames)
    samples: LabelledFrames  # decoded frames chosen for training/validation; `cameras` = video index
    timelines: tuple[VideoTimeline, ...]  # one per video, indexed like samples.cameras
    files: tuple[DataFile, ...]  # every input file read (videos, tables, images), with hashes
    origin: str  # where the labels came from (the table, the COCO file, the world): for messages

    def label_counts(self) -> dict[str, int]:
        """Objects per class over all labelled frames (what the manifest records)."""
        total = sum((t.counts.sum(0) for t in self.timelines), np.zeros(len(self.classes), np.int64))
        return {c: int(n) for c, n in zip(self.classes, total)}


def resize_square(frame: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> (size, size, 3), area-averaged (what the model sees; keeps memory small):
    `stemcell.imaging.resize_frames`, the one resize of training, serving and clients."""
    return resize_frames(frame, size)


def even_sample(count: int, budget: int) -> np.ndarray:
    """`budget` positions spread evenly over range(count) (all of them when budget >= count)."""
    return np.unique(np.linspace(0, count - 1, num=min(budget, count)).astype(int)) if count else np.zeros(0, int)


def split_by_chunks(
    samples: LabelledFrames, fps: float, val_fraction: float, chunk_s: float, seed: int
) -> tuple[LabelledFrames, LabelledFrames]:
    """Train/validation split by whole `chunk_s` time chunks of each video.

    Neighbouring frames are near-duplicates, so a random per-frame split would leak; whole chunks
    keep the held-out estimate honest.
    """
    rng = np.random.default_rng(seed)
    chunk_frames = max(1, int(chunk_s * fps))
    chunk_ids = samples.cameras.astype(np.int64) * 1_000_000 + samples.indices // chunk_frames
    unique_chunks = np.unique(chunk_ids)
    val_chunks = unique_chunks[rng.random(len(unique_chunks)) < val_fraction]
    is_val = np.isin(chunk_ids, val_chunks)
    return samples.subset(~is_val), samples.subset(is_val)


def model_inputs(
    frames: np.ndarray, input_size: int, mean: Sequence[float], std: Sequence[float], batch_size: int = 256
) -> Iterator[torch.Tensor]:
    """Model-input batches (float32 (B, 3, size, size), normalised) from any source's uint8 frames."""
    for start in range(0, len(frames), batch_size):
        yield to_input(frames[start : start + batch_size], input_size, mean=mean, std=std)


def app_truth(counts: np.ndarray, classes: Sequence[str], app_classes: Sequence[str]) -> np.ndarray:
    """int (N,) objects of any of the app's classes per frame."""
    columns = [list(classes).index(c) for c in app_classes]
    return counts[:, columns].sum(axis=1)
