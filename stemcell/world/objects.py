"""Moving objects: when they are on screen, where (exact boxes), and how they are drawn.

Every trajectory starts and ends with the box overlapping the frame by one pixel column and only
interpolates between visible positions, so an object is visible on exactly the frames
[enter, exit): presence is exact ground truth and never needs a render to compute.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from stemcell.world.datatypes import CLASSES, WorldConfig
from stemcell.world.scenes import RGB, SceneType

# Class shape: height in pixels at 128 px frame height and unit scale, and width/height ratio.
_BASE_HEIGHT = (34.0, 22.0, 34.0, 22.0, 13.0)
_ASPECT = (0.42, 2.0, 2.4, 1.5, 1.5)
_DARK: RGB = (25, 25, 25)
_GLASS: RGB = (190, 215, 230)
_SKIN: RGB = (225, 185, 150)


@dataclass(frozen=True)
class ObjectTrack:
    """One object's life on one camera; positions are in pixels of that camera's frames."""

    obj_id: int  # unique within the camera
    cls: int  # index into CLASSES
    enter: int  # first frame on screen
    exit: int  # first frame off screen again (half-open)
    depth: float  # 0 = far (small, near the horizon) .. 1 = near (large, low in the frame)
    width: int  # box width in pixels
    height: int  # box height in pixels
    bottom: int  # y of the box's bottom edge (exclusive)
    times: tuple[float, ...]  # waypoint times, frames after `enter`, strictly increasing
    xs: tuple[float, ...]  # box left edge at each waypoint
    colour: RGB  # main colour (the scene's colour for the class, jittered per object)

    def raw_boxes(self, frames: np.ndarray) -> np.ndarray:
        """Unclipped int boxes (n, 4) as x0, y0, x1, y1 at absolute frame numbers `frames`."""
        x = np.interp(np.asarray(frames, np.float64) - self.enter, self.times, self.xs)
        x0 = np.floor(x + 0.5).astype(np.int64)
        out = np.empty((len(x0), 4), np.int64)
        out[:, 0], out[:, 1] = x0, self.bottom - self.height
        out[:, 2], out[:, 3] = x0 + self.width, self.bottom
        return out


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clipped to the frame and whether each still covers at least one pixel."""
    clipped = boxes.copy()
    clipped[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    clipped[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    visible = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped, visible


def _trajectory(rng: np.random.Generator, duration: int, box_w: int, width: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Waypoints: enter at one edge, maybe stop somewhere, leave by the same or the other edge."""
    left_in, right_in = float(-box_w + 1), float(width - 1)
    start = left_in if rng.random() < 0.5 else right_in
    if duration == 1:
        return (0.0,), (start,)
    end_span = float(duration - 1)
    short = duration < 20
    end = start if short or rng.random() < 0.3 else (right_in if start == left_in else left_in)
    if duration < 4:
        return (0.0, end_span), (start, end)
    if short:  # a brief peek: partly in, then back out
        middle = start + (1 if start == left_in else -1) * float(rng.uniform(0.2, 0.6) * box_w)
    else:  # stop fully inside the frame when the object fits, so a pause is a clear view
        middle = float(rng.uniform(0.0, width - box_w)) if box_w < width else float(rng.uniform(left_in, right_in))
    a, b = sorted(rng.uniform(0.15, 0.85, size=2) * end_span)
    a, b = max(a, 1.0), min(max(b, a + 1.0), end_span - 1.0)
    if not 0.0 < a < b < end_span:
        return (0.0, end_span), (start, end)
    return (0.0, a, b, end_span), (start, middle, middle, end)


def sample_segment_objects(
    rng: np.random.Generator, config: WorldConfig, scene: SceneType, start: int, stop: int, first_id: int
) -> list[ObjectTrack]:
    """Objects of every class arriving during frames [start, stop) of a segment showing `scene`.

    Arrivals are Poisson with the rate that makes the class cover `scene.class_coverage[k]` of the
    frames (coverage = 1 - exp(-rate * mean duration)); durations are log-uniform so events range
    from a few frames to tens of seconds. Objects vanish at the segment's end (a scene cut).
    """
    lo, hi = (s * config.fps for s in config.event_s)
    lo = max(lo, 1.0)
    mean_duration = (hi - lo) / math.log(hi / lo) if hi > lo else lo
    horizon = int(scene.horizon * config.height)
    px = config.height / 128.0
    tracks: list[ObjectTrack] = []
    for k in range(len(CLASSES)):
        rate = -math.log(1.0 - scene.class_coverage[k]) / mean_duration
        t = float(start) + rng.exponential(1.0 / rate)
        while t < stop:
            enter = int(t)
            duration = max(1, int(round(math.exp(rng.uniform(math.log(lo), math.log(hi))))))
            depth = float(rng.uniform(0.0, 1.0))
            scale = scene.object_scale * (0.6 + 0.6 * depth) * px
            box_h = max(3, int(round(_BASE_HEIGHT[k] * scale)))
            box_w = max(3, int(round(box_h * _ASPECT[k])))
            bottom = horizon + int(round((0.3 + 0.7 * depth) * (config.height - horizon)))
            times, xs = _trajectory(rng, duration, box_w, config.width)
            r, g, b = (int(c) for c in np.clip(np.array(scene.class_colours[k]) + rng.integers(-25, 26, size=3), 0, 255))
            tracks.append(
                ObjectTrack(first_id + len(tracks), k, enter, min(enter + duration, stop), depth,
                            box_w, box_h, bottom, times, xs, (r, g, b))
            )
            t += rng.exponential(1.0 / rate)
    return tracks


def _shade(colour: RGB, factor: float) -> RGB:
    r, g, b = (min(255, int(c * factor)) for c in colour)
    return r, g, b


def _draw_person(img: np.ndarray, x0: int, y0: int, w: int, h: int, colour: RGB) -> None:
    xc = x0 + w // 2
    cv2.circle(img, (xc, y0 + int(0.12 * h)), max(1, int(0.12 * h)), _SKIN, -1)
    cv2.rectangle(img, (x0, y0 + int(0.24 * h)), (x0 + w - 1, y0 + int(0.62 * h)), colour, -1)
    leg = _shade(colour, 0.45)
    cv2.rectangle(img, (x0 + w // 6, y0 + int(0.62 * h)), (xc - 1, y0 + h - 1), leg, -1)
    cv2.rectangle(img, (xc + 1, y0 + int(0.62 * h)), (x0 + w - 1 - w // 6, y0 + h - 1), leg, -1)


def _draw_car(img: np.ndarray, x0: int, y0: int, w: int, h: int, colour: RGB) -> None:
    cabin = np.array([[x0 + int(0.2 * w), y0 + int(0.45 * h)], [x0 + int(0.3 * w), y0],
                      [x0 + int(0.7 * w), y0], [x0 + int(0.85 * w), y0 + int(0.45 * h)]], np.int32)
    cv2.fillPoly(img, [cabin], _shade(colour, 0.8))
    cv2.rectangle(img, (x0 + int(0.33 * w), y0 + int(0.12 * h)), (x0 + int(0.67 * w), y0 + int(0.4 * h)), _GLASS, -1)
    cv2.rectangle(img, (x0, y0 + int(0.42 * h)), (x0 + w - 1, y0 + int(0.8 * h)), colour, -1)
    r = max(1, int(0.2 * h))
    for fx in (0.22, 0.78):
        cv2.circle(img, (x0 + int(fx * w), y0 + h - 1 - r), r, _DARK, -1)


def _draw_bus(img: np.ndarray, x0: int, y0: int, w: int, h: int, colour: RGB) -> None:
    cv2.rectangle(img, (x0, y0), (x0 + w - 1, y0 + int(0.85 * h)), colour, -1)
    windows = max(3, w // 12)
    pitch = w / windows
    for j in range(windows):
        wx = x0 + int(j * pitch + 0.15 * pitch)
        cv2.rectangle(img, (wx, y0 + int(0.15 * h)), (wx + max(1, int(0.7 * pitch)), y0 + int(0.45 * h)), _GLASS, -1)
    r = max(1, int(0.15 * h))
    for fx in (0.15, 0.85):
        cv2.circle(img, (x0 + int(fx * w), y0 + h - 1 - r), r, _DARK, -1)


def _draw_bicycle(img: np.ndarray, x0: int, y0: int, w: int, h: int, colour: RGB) -> None:
    r = max(1, min(int(0.25 * w), int(0.4 * h)))
    thick = max(1, h // 12)
    back, front = (x0 + r, y0 + h - 1 - r), (x0 + w - 1 - r, y0 + h - 1 - r)
    seat, bar = (x0 + int(0.4 * w), y0 + int(0.25 * h)), (x0 + w - 1 - r, y0)
    cv2.circle(img, back, r, _DARK, thick)
    cv2.circle(img, front, r, _DARK, thick)
    for p, q in ((back, seat), (seat, front), (back, (x0 + w // 2, back[1])), (seat, (x0 + w // 2, back[1])), (front, bar)):
        cv2.line(img, p, q, colour, thick)


def _draw_dog(img: np.ndarray, x0: int, y0: int, w: int, h: int, colour: RGB) -> None:
    thick = max(1, h // 8)
    body_c, axes = (x0 + int(0.45 * w), y0 + int(0.45 * h)), (max(1, int(0.32 * w)), max(1, int(0.2 * h)))
    cv2.line(img, (x0, y0 + int(0.15 * h)), body_c, colour, thick)  # tail
    for fx in (0.22, 0.35, 0.55, 0.68):
        cv2.line(img, (x0 + int(fx * w), body_c[1]), (x0 + int(fx * w), y0 + h - 1), _shade(colour, 0.6), thick)
    cv2.ellipse(img, body_c, axes, 0, 0, 360, colour, -1)
    head_r = max(1, int(0.17 * w))
    cv2.circle(img, (x0 + w - 1 - head_r, y0 + head_r), head_r, _shade(colour, 1.2), -1)


_DRAW = (_draw_person, _draw_car, _draw_bus, _draw_bicycle, _draw_dog)


def draw_object(img: np.ndarray, track: ObjectTrack, raw_box: np.ndarray) -> None:
    """Draw `track` into `img` (RGB, in place) at its unclipped box; cv2 clips at the borders."""
    x0, y0, x1, y1 = (int(v) for v in raw_box)
    _DRAW[track.cls](img, x0, y0, x1 - x0, y1 - y0, track.colour)
