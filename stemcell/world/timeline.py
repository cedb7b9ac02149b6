"""Cameras and their timelines: which scene is on when, which objects pass, and random-access frames."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from stemcell.world.datatypes import CLASSES, Box, Event, FrameLabels, Segment, WorldConfig
from stemcell.world.events import extract_events
from stemcell.world.objects import ObjectTrack, clip_boxes, sample_segment_objects
from stemcell.world.render import FrameRenderer
from stemcell.world.scenes import SceneType, make_scene_pool

# RNG stream tags: every random decision has its own stream keyed by (seed, tag, camera, ...), so
# camera c's timeline does not depend on other cameras, on num_cameras, or on duration_s (a longer
# world extends a shorter one).
_HAUNTS, _SEGMENT, _OBJECTS = 0xCA3, 0x5E6, 0x0B1


def _plan_segments(config: WorldConfig, camera: int) -> list[Segment]:
    """Cut the timeline into scene segments; each picks one of the camera's haunts, never twice in a row."""
    haunts = np.random.default_rng([config.seed, _HAUNTS, camera]).choice(
        config.num_scene_types, size=config.scenes_per_camera, replace=False
    )
    segments: list[Segment] = []
    start, previous = 0, -1
    while start < config.num_frames:
        rng = np.random.default_rng([config.seed, _SEGMENT, camera, len(segments)])
        length = max(1, int(rng.uniform(*config.segment_s) * config.fps))
        choices = [int(s) for s in haunts if s != previous] or [int(haunts[0])]
        scene_id = choices[int(rng.integers(len(choices)))]
        stop = min(start + length, config.num_frames)
        light_start, light_end = (float(v) for v in rng.uniform(0.7, 1.3, size=2))
        segments.append(
            Segment(start, stop, scene_id, light_start, light_end, float(rng.uniform(0.7, 1.3)), start + length)
        )
        start, previous = stop, scene_id
    return segments


class CameraTimeline:
    """One camera: scene segments, object tracks, exact labels, and frames rendered on demand.

    `frame(i)` is a pure function of (seed, camera, i) under the world's config; `presence()` and
    `scene_ids()` come from the object tracks alone, without rendering a pixel.
    """

    def __init__(self, config: WorldConfig, camera: int, pool: tuple[SceneType, ...], renderer: FrameRenderer) -> None:
        self.config = config
        self.camera = camera
        self.segments: tuple[Segment, ...] = tuple(_plan_segments(config, camera))
        self._renderer = renderer
        self._seg_starts = np.array([s.start for s in self.segments], np.int64)
        per_segment: list[tuple[ObjectTrack, ...]] = []
        next_id = 0
        for k, seg in enumerate(self.segments):
            rng = np.random.default_rng([config.seed, _OBJECTS, camera, k])
            # Sample over the planned segment, then cut: a longer world extends this one exactly.
            planned = sample_segment_objects(rng, config, pool[seg.scene_id], seg.start, seg.planned_stop, next_id)
            tracks = [dataclasses.replace(t, exit=min(t.exit, seg.stop)) for t in planned if t.enter < seg.stop]
            next_id += len(tracks)
            per_segment.append(tuple(sorted(tracks, key=lambda t: (t.depth, t.obj_id))))
        self._per_segment = per_segment
        self.objects: tuple[ObjectTrack, ...] = tuple(sorted((t for ts in per_segment for t in ts), key=lambda t: t.obj_id))
        self._counts = self._compute_counts()
        self._counts.flags.writeable = False
        self._presence = self._counts > 0
        self._presence.flags.writeable = False

    @property
    def num_frames(self) -> int:
        return self.config.num_frames

    @property
    def fps(self) -> float:
        return self.config.fps

    def ts(self, index: int) -> float:
        """Timestamp of frame `index` in seconds since the start of the timeline."""
        return index / self.config.fps

    def _compute_counts(self) -> np.ndarray:
        counts = np.zeros((self.num_frames, len(CLASSES)), np.int32)
        for track in self.objects:
            frames = np.arange(track.enter, track.exit)
            _, visible = clip_boxes(track.raw_boxes(frames), self.config.height, self.config.width)
            counts[frames[visible], track.cls] += 1
        return counts

    def _check(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} outside camera {self.camera}'s timeline [0, {self.num_frames})")
        return index

    def segment_at(self, index: int) -> Segment:
        return self.segments[int(np.searchsorted(self._seg_starts, self._check(index), side="right")) - 1]

    def _visible(self, index: int) -> tuple[Segment, list[tuple[ObjectTrack, np.ndarray, np.ndarray]]]:
        """Segment and the objects on screen at `index` (far to near) with raw and clipped boxes."""
        k = int(np.searchsorted(self._seg_starts, index, side="right")) - 1
        out = []
        for track in self._per_segment[k]:
            if track.enter <= index < track.exit:
                raw = track.raw_boxes(np.array([index]))
                clipped, visible = clip_boxes(raw, self.config.height, self.config.width)
                if visible[0]:
                    out.append((track, raw[0], clipped[0]))
        return self.segments[k], out

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as uint8 RGB (H, W, 3)."""
        index = self._check(index)
        segment, visible = self._visible(index)
        return self._renderer.render(self.camera, index, segment, [(t, raw) for t, raw, _ in visible])

    def frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames at `indices` stacked as (N, H, W, 3)."""
        out = np.empty((len(indices), self.config.height, self.config.width, 3), np.uint8)
        for j, index in enumerate(indices):
            out[j] = self.frame(index)
        return out

    def labels(self, index: int) -> FrameLabels:
        """Exact ground truth of frame `index` (class presence, clipped boxes, scene type)."""
        index = self._check(index)
        segment, visible = self._visible(index)
        presence = np.zeros(len(CLASSES), bool)
        boxes = []
        for track, _, clipped in visible:
            presence[track.cls] = True
            boxes.append(Box(track.cls, *(int(v) for v in clipped)))
        presence.flags.writeable = False
        return FrameLabels(presence, tuple(boxes), segment.scene_id)

    def presence(self) -> np.ndarray:
        """Read-only bool (num_frames, len(CLASSES)): class k visible in frame i."""
        return self._presence

    def counts(self) -> np.ndarray:
        """Read-only int32 (num_frames, len(CLASSES)): visible objects of class k in frame i."""
        return self._counts

    def scene_ids(self) -> np.ndarray:
        """int (num_frames,): scene type of every frame."""
        out = np.empty(self.num_frames, np.int64)
        for seg in self.segments:
            out[seg.start : seg.stop] = seg.scene_id
        return out

    def events(self, cls: int | str) -> list[Event]:
        """Events of one class on this camera (runs of frames where it is present)."""
        k = CLASSES.index(cls) if isinstance(cls, str) else int(cls)
        return extract_events(self._presence[:, k])


class World:
    """A seeded multi-camera world sharing one scene pool; cameras are built lazily and cached."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        self.scene_pool: tuple[SceneType, ...] = make_scene_pool(self.config)
        self._renderer = FrameRenderer(self.config, self.scene_pool)
        self._cameras: dict[int, CameraTimeline] = {}

    @property
    def num_cameras(self) -> int:
        return self.config.num_cameras

    def camera(self, index: int) -> CameraTimeline:
        if not 0 <= index < self.config.num_cameras:
            raise IndexError(f"camera {index} outside [0, {self.config.num_cameras})")
        if index not in self._cameras:
            self._cameras[index] = CameraTimeline(self.config, index, self.scene_pool, self._renderer)
        return self._cameras[index]

    def cameras(self) -> list[CameraTimeline]:
        return [self.camera(i) for i in range(self.config.num_cameras)]
