"""Sliding training buffer of teacher-labelled frames (AMS Algorithm 1, buffer B).

Why a *time* horizon rather than a count: AMS trains on the last T_horizon seconds of video
(240 s in the paper) so the student generalises over the current scene instead of over-fitting
the last few frames; with an adaptive sampling rate the number of frames in that window varies,
so eviction is by timestamp. `max_items` additionally bounds memory whatever the rate.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class BufferItem:
    t_s: float  # capture timestamp (video time, seconds)
    frame: np.ndarray  # uint8 RGB (H, W, 3)
    labels: np.ndarray  # float32 teacher labels, one per class
    key: int | None = None  # caller's id of the frame (e.g. its timeline index), to look up derived data
    boxes: np.ndarray | None = None  # float32 (M, 5) label column, normalised x0, y0, x1, y1 (None: no boxes)


class SampleBuffer:
    """Labelled frames of the last `horizon_s` seconds (by timestamp), at most `max_items` of them."""

    def __init__(self, horizon_s: float = 240.0, max_items: int = 4096) -> None:
        if horizon_s <= 0 or max_items < 1:
            raise ValueError("horizon_s must be > 0 and max_items >= 1")
        self.horizon_s = horizon_s
        self.max_items = max_items
        self._items: deque[BufferItem] = deque()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def latest_s(self) -> float | None:
        return self._items[-1].t_s if self._items else None

    @property
    def oldest_s(self) -> float | None:
        return self._items[0].t_s if self._items else None

    def add(self, t_s: float, frame: np.ndarray, labels: np.ndarray, key: int | None = None,
            boxes: np.ndarray | None = None) -> None:
        """Append one sample (timestamps must not go backwards), then evict what fell out. `boxes`: the
        teacher's objects, for detect apps (`stemcell.learning.detect_learning`)."""
        if self._items and t_s < self._items[-1].t_s:
            raise ValueError(f"timestamps must be non-decreasing: {t_s} after {self._items[-1].t_s}")
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"expected one uint8 RGB frame (H,W,3), got {frame.dtype} {frame.shape}")
        found = None if boxes is None else np.asarray(boxes, dtype=np.float32).reshape(-1, 5)
        self._items.append(BufferItem(float(t_s), frame, np.asarray(labels, dtype=np.float32), key, found))
        self.evict(t_s)

    def extend(self, t_s: np.ndarray, frames: np.ndarray, labels: np.ndarray) -> None:
        """Add a batch of samples in time order (e.g. one upload from the edge)."""
        for t, f, y in zip(t_s, frames, labels):
            self.add(float(t), f, y)

    def evict(self, now_s: float) -> None:
        """Drop samples older than `now_s - horizon_s`, and the oldest beyond `max_items`."""
        cutoff = now_s - self.horizon_s
        while self._items and (self._items[0].t_s < cutoff or len(self._items) > self.max_items):
            self._items.popleft()

    def sample_items(self, batch_size: int, rng: np.random.Generator, before_s: float | None = None) -> list[BufferItem]:
        """`batch_size` items drawn uniformly: without replacement when the buffer holds enough,
        with replacement otherwise, so a young buffer still yields full batches. `before_s`: only
        items older than it (the newest are held out for the safety check)."""
        pool = self._items if before_s is None else [it for it in self._items if it.t_s < before_s]
        if not pool:
            raise ValueError("the buffer is empty")
        n = len(pool)
        return [pool[i] for i in rng.choice(n, size=batch_size, replace=batch_size > n)]

    def sample(self, batch_size: int, rng: np.random.Generator,
               before_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A uniform random batch: frames (B,H,W,3) uint8 and labels (B,C) float32."""
        items = self.sample_items(batch_size, rng, before_s)
        return np.stack([it.frame for it in items]), np.stack([it.labels for it in items])

    def timestamps(self) -> np.ndarray:
        return np.array([it.t_s for it in self._items], dtype=np.float64)

    def items(self, since_s: float | None = None) -> list[BufferItem]:
        """The samples in time order; only those strictly after `since_s` when it is given."""
        return [it for it in self._items if since_s is None or it.t_s > since_s]

    def state_dict(self) -> dict[str, Any]:
        """The samples as tensors only (checkpoints are read with `weights_only=True`); boxes as one
        (sum M, 5) tensor and a count per sample (-1: the sample has no boxes)."""
        items = list(self._items)
        boxed = [it.boxes for it in items if it.boxes is not None]
        return {
            "t": torch.tensor([it.t_s for it in items], dtype=torch.float64),
            "frames": torch.from_numpy(np.stack([it.frame for it in items])) if items else torch.zeros(0, dtype=torch.uint8),
            "labels": torch.from_numpy(np.stack([it.labels for it in items])) if items else torch.zeros(0),
            "boxes": torch.from_numpy(np.concatenate(boxed)) if boxed else torch.zeros((0, 5)),
            "box_counts": torch.tensor([-1 if it.boxes is None else len(it.boxes) for it in items], dtype=torch.int64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Add the samples of `state_dict()` (a checkpoint from before boxes were kept: none have boxes)."""
        counts = state["box_counts"].tolist() if "box_counts" in state else [-1] * len(state["t"])
        boxes, start = state.get("boxes", torch.zeros((0, 5))).numpy(), 0
        for t, frame, y, n in zip(state["t"].tolist(), state["frames"].numpy(), state["labels"].numpy(), counts):
            self.add(t, frame, y, boxes=None if n < 0 else boxes[start : start + n])
            start += max(n, 0)
