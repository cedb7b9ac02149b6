"""Compose one frame from cached scene assets, in a fixed order, with no per-frame RNG.

Everything random about a frame (which noise tile window, where the rain is) is a function of
(seed, camera, frame index), and the cached assets are functions of (seed, scene, size), so a frame
rendered alone, first or last, in any order, has the same bytes. Only OpenCV primitives and
lookup tables run per frame, which keeps generation far above real time on one core.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stemcell.world.datatypes import Segment, WorldConfig
from stemcell.world.objects import ObjectTrack, draw_object
from stemcell.world.scenes import SceneType, WeatherAssets, make_weather_assets, render_background

_MASK64 = (1 << 64) - 1


def frame_hash(seed: int, camera: int, index: int) -> int:
    """splitmix64 of (seed, camera, index): a cheap, well-mixed per-frame random number."""
    z = (seed * 0x9E3779B97F4A7C15 + camera * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


@dataclass
class _SceneCache:
    background: np.ndarray
    weather: WeatherAssets
    tone: np.ndarray  # float32 (256,): the scene's gamma curve in grey levels


class FrameRenderer:
    """Renders frames for every camera of one world; caches per-scene pixels (deterministic)."""

    def __init__(self, config: WorldConfig, pool: tuple[SceneType, ...]) -> None:
        self._config = config
        self._pool = pool
        self._cache: dict[int, _SceneCache] = {}

    def _scene(self, scene_id: int) -> _SceneCache:
        cached = self._cache.get(scene_id)
        if cached is None:
            c, scene = self._config, self._pool[scene_id]
            tone = 255.0 * (np.arange(256, dtype=np.float32) / 255.0) ** scene.gamma
            cached = _SceneCache(
                render_background(scene, c.seed, c.height, c.width),
                make_weather_assets(scene, c.seed, c.height, c.width),
                tone.astype(np.float32),
            )
            self._cache[scene_id] = cached
        return cached

    def render(self, camera: int, index: int, segment: Segment, objects: list[tuple[ObjectTrack, np.ndarray]]) -> np.ndarray:
        """RGB uint8 (H, W, 3) of frame `index`; `objects` are (track, unclipped box), far to near."""
        h, w = self._config.height, self._config.width
        scene = self._pool[segment.scene_id]
        assets = self._scene(segment.scene_id)
        img = assets.background.copy()
        for track, box in objects:
            draw_object(img, track, box)
        weather = assets.weather
        if weather.fog is not None and weather.fog_alpha is not None:
            alpha = np.minimum(weather.fog_alpha * np.float32(segment.weather_level), np.float32(0.92))
            img = cv2.blendLinear(img, weather.fog, np.float32(1.0) - alpha, alpha)
        gain = scene.light_gain * segment.light(index)
        lut = np.clip(assets.tone[:, None] * (gain * np.asarray(scene.light_tint, np.float32)), 0, 255)
        img = cv2.LUT(img, lut.astype(np.uint8).reshape(256, 1, 3))
        if weather.overlay is not None:
            px = h / 128.0
            if scene.weather == "rain":
                fall = max(1, int(9 * px))
                oy, ox = (index * fall) % h, (-(index * fall) // 3) % w
            else:
                oy, ox = (index * max(1, int(2 * px))) % h, (index // 3) % w
            img = cv2.add(img, weather.overlay[oy : oy + h, ox : ox + w])
        r = frame_hash(self._config.seed, camera, index)
        oy, ox = r % h, (r >> 24) % w
        img = cv2.add(img, weather.noise_pos[oy : oy + h, ox : ox + w])
        return cv2.subtract(img, weather.noise_neg[oy : oy + h, ox : ox + w])
