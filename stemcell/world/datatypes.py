"""Value types of the synthetic world: its configuration and exact per-frame ground truth."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES: tuple[str, ...] = ("person", "car", "bus", "bicycle", "dog")


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines the world: same config => identical frames and labels, byte for byte."""

    seed: int = 0  # master seed: scene pool, every camera's timeline and every frame's noise
    num_cameras: int = 4  # cameras in the world; camera c's timeline does not depend on this number
    height: int = 128  # frame height in pixels
    width: int = 128  # frame width in pixels
    fps: float = 10.0  # frames per second of every camera
    duration_s: float = 600.0  # length of every camera's timeline
    num_scene_types: int = 8  # size of the global scene pool shared by all cameras
    scenes_per_camera: int = 4  # each camera cycles through this many scene types (its "haunts")
    segment_s: tuple[float, float] = (45.0, 120.0)  # range of one scene segment's length
    class_coverage: tuple[float, float] = (0.15, 0.45)  # per scene and class: fraction of frames with the class
    event_s: tuple[float, float] = (0.3, 30.0)  # log-uniform range of one object's time on screen

    def __post_init__(self) -> None:
        if self.height < 16 or self.width < 16:
            raise ValueError(f"frames must be at least 16x16, got {self.height}x{self.width}")
        if self.num_cameras < 1 or self.fps <= 0 or self.duration_s <= 0:
            raise ValueError("num_cameras, fps and duration_s must be positive")
        if not 1 <= self.scenes_per_camera <= self.num_scene_types:
            raise ValueError("scenes_per_camera must be in [1, num_scene_types]")
        for name in ("segment_s", "class_coverage", "event_s"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be an increasing pair of positive numbers, got {(low, high)}")
        if self.class_coverage[1] >= 1.0:
            raise ValueError("class_coverage must stay below 1")

    @property
    def num_frames(self) -> int:
        return max(1, int(round(self.duration_s * self.fps)))


@dataclass(frozen=True)
class Segment:
    """A stretch of one camera's timeline showing one scene type."""

    start: int  # first frame
    stop: int  # first frame of the next segment (half-open)
    scene_id: int  # scene type shown
    light_start: float  # lighting multiplier at the segment's first frame ...
    light_end: float  # ... drifting linearly to this one at its last frame
    weather_level: float  # scales the scene's fog opacity for this visit
    planned_stop: int  # where the segment would end in an endless timeline (>= stop; the last one is cut)

    def light(self, index: int) -> float:
        # Planned length, not the cut one: a longer world must render the same frames.
        u = (index - self.start) / max(1, self.planned_stop - self.start - 1)
        return self.light_start + (self.light_end - self.light_start) * u


@dataclass(frozen=True)
class Box:
    """One object's box in pixel coordinates, half-open ([x0, x1) x [y0, y1)), clipped to the frame."""

    cls: int  # index into CLASSES
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def name(self) -> str:
        return CLASSES[self.cls]


@dataclass(frozen=True, eq=False)
class FrameLabels:
    """Exact ground truth of one frame. `presence[k]` is True when any part of a class-k object is in frame."""

    presence: np.ndarray  # bool (len(CLASSES),), read-only
    boxes: tuple[Box, ...]  # visible objects, far to near (drawing order)
    scene_id: int  # scene type of the segment this frame belongs to

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FrameLabels):
            return NotImplemented
        return (
            self.scene_id == other.scene_id
            and self.boxes == other.boxes
            and np.array_equal(self.presence, other.presence)
        )

    def __hash__(self) -> int:
        return hash((self.scene_id, self.boxes, self.presence.tobytes()))


@dataclass(frozen=True)
class Event:
    """A maximal run of frames in which a class is present: frames [start, stop)."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start
