"""What an ingest actor hands an executor per interval: one batch for all its cameras there.

An actor call costs about as much as decoding a small frame, so the pull ingest sends each
executor one call per analysis interval with every due camera's frame in it, not a call (or an
item, a tensor, a timestamp list) per camera. The frames travel as one C-contiguous uint8 array at
model size: Ray serialises numpy arrays out of band (no pickling of pixels; zero-copy reads from its
object store), uint8 is a quarter of the bytes of the float input, and the executor makes model
input of the whole batch in one conversion, on its own side.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PulledBatch:
    """Frame `i` is camera `camera_ids[i]`'s newest frame, read at `timestamps[i]` (wall seconds)."""

    camera_ids: tuple[str, ...]
    frames: np.ndarray  # (N, S, S, 3) uint8 RGB at model size, C-contiguous
    timestamps: np.ndarray  # (N,) float64
    sizes: np.ndarray  # (N, 2) int32: (height, width) as decoded, the pixels detect apps' boxes come back in

    def __post_init__(self) -> None:
        n = len(self.camera_ids)
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[0] != n \
                or self.frames.shape[-1] != 3:
            raise ValueError(f"expected {n} uint8 RGB frames (N,S,S,3), got {self.frames.dtype} {self.frames.shape}")
        if self.timestamps.shape != (n,) or self.sizes.shape != (n, 2):
            raise ValueError(f"{n} frames need {n} timestamps and (height, width) sizes, got "
                             f"{self.timestamps.shape} and {self.sizes.shape}")

    def __len__(self) -> int:
        return len(self.camera_ids)

    @classmethod
    def of(cls, camera_ids: Sequence[str], frames: np.ndarray, timestamps: Sequence[float],
           sizes: Sequence[tuple[int, int]]) -> PulledBatch:
        """From per-frame values (`frames` already stacked into one array)."""
        return cls(tuple(camera_ids), np.ascontiguousarray(frames), np.asarray(timestamps, dtype=np.float64),
                   np.asarray(sizes, dtype=np.int32).reshape(len(camera_ids), 2))

    def frame_size(self, i: int) -> tuple[int, int]:
        """Frame `i`'s (height, width) as decoded."""
        return int(self.sizes[i, 0]), int(self.sizes[i, 1])
