"""The global scene pool: what a camera sees when it is "in" a scene type, and its cached pixels.

A scene type fixes everything that makes a model trained on one scene fail on another: background
(sky/ground palette, ground texture, horizon height, static structures), lighting (gain, tint,
gamma), weather (rain streaks, fog, snow), sensor noise, viewpoint (object scale) and the colours
objects of each class wear there. Shapes stay class-specific in every scene, so presence stays
learnable; everything else drifts when the scene changes.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stemcell.world.datatypes import CLASSES, WorldConfig

RGB = tuple[int, int, int]
WEATHERS = ("clear", "rain", "fog", "snow")


@dataclass(frozen=True)
class _Archetype:
    name: str
    weather: str
    gain: tuple[float, float]  # range of the mean brightness multiplier
    tint: tuple[float, float, float]  # per-channel (R, G, B) colour cast of the light
    noise: tuple[float, float]  # range of sensor-noise sigma (grey levels)


# Eight recognisable looks; a pool larger than eight reuses them with fresh random palettes.
_ARCHETYPES = (
    _Archetype("sunny_street", "clear", (0.95, 1.1), (1.0, 1.0, 0.97), (2.0, 4.0)),
    _Archetype("night_street", "clear", (0.4, 0.5), (0.8, 0.9, 1.2), (9.0, 14.0)),
    _Archetype("rainy_road", "rain", (0.6, 0.75), (0.9, 0.95, 1.05), (4.0, 7.0)),
    _Archetype("foggy_highway", "fog", (0.85, 1.0), (1.0, 1.0, 1.0), (3.0, 5.0)),
    _Archetype("snowy_park", "snow", (1.0, 1.15), (0.97, 1.0, 1.08), (2.0, 4.0)),
    _Archetype("dusk_plaza", "clear", (0.6, 0.75), (1.25, 0.9, 0.7), (5.0, 8.0)),
    _Archetype("desert_lot", "clear", (1.05, 1.2), (1.1, 1.0, 0.8), (2.0, 4.0)),
    _Archetype("tunnel", "clear", (0.5, 0.65), (0.85, 1.15, 0.85), (7.0, 11.0)),
)


@dataclass(frozen=True)
class SceneType:
    """One entry of the scene pool (all parameters drawn once from the world seed)."""

    scene_id: int  # index in the pool; what FrameLabels.scene_id reports
    name: str  # archetype name, e.g. "rainy_road"
    sky: tuple[RGB, RGB]  # sky colour at the top and at the horizon
    ground: tuple[RGB, RGB]  # two ground colours mixed by the texture
    horizon: float  # horizon height as a fraction of the frame height
    texture_blur: float  # ground texture grain (Gaussian sigma, pixels at 128 px)
    structures: int  # number of static buildings/trees on the horizon
    light_gain: float  # mean brightness multiplier
    light_tint: tuple[float, float, float]  # per-channel light colour
    gamma: float  # tone curve (>1 darkens mid-tones)
    weather: str  # one of WEATHERS
    weather_strength: float  # 0..1: streak/flake density or fog opacity
    sensor_noise: float  # Gaussian sensor-noise sigma in grey levels
    object_scale: float  # viewpoint: how large objects look (camera distance / zoom)
    class_colours: tuple[RGB, ...]  # per class: the colour objects of that class wear in this scene
    class_coverage: tuple[float, ...]  # per class: target fraction of frames in which it is present


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> RGB:
    r, g, b = rng.integers(low, high, size=3)
    return int(r), int(g), int(b)


def make_scene_pool(config: WorldConfig) -> tuple[SceneType, ...]:
    """The world's scene types; scene k depends only on (seed, k), never on how many there are."""
    pool = []
    for k in range(config.num_scene_types):
        rng = np.random.default_rng([config.seed, 0x5CE7E, k])
        arch = _ARCHETYPES[k % len(_ARCHETYPES)]
        pool.append(
            SceneType(
                scene_id=k,
                name=arch.name if k < len(_ARCHETYPES) else f"{arch.name}_{k // len(_ARCHETYPES)}",
                sky=(_colour(rng, 60), _colour(rng, 100)),
                ground=(_colour(rng, 20, 200), _colour(rng, 20, 200)),
                horizon=float(rng.uniform(0.2, 0.5)),
                texture_blur=float(rng.uniform(0.6, 3.0)),
                structures=int(rng.integers(0, 7)),
                light_gain=float(rng.uniform(*arch.gain)),
                light_tint=arch.tint,
                gamma=float(rng.uniform(0.8, 1.3)),
                weather=arch.weather,
                weather_strength=float(rng.uniform(0.35, 0.6)),
                sensor_noise=float(rng.uniform(*arch.noise)),
                object_scale=float(rng.uniform(0.7, 1.25)),
                class_colours=tuple(_colour(rng, 30) for _ in CLASSES),
                class_coverage=tuple(float(c) for c in rng.uniform(*config.class_coverage, size=len(CLASSES))),
            )
        )
    return tuple(pool)


def render_background(scene: SceneType, seed: int, height: int, width: int) -> np.ndarray:
    """Static RGB background of a scene: sky gradient, textured ground, road band, structures."""
    rng = np.random.default_rng([seed, 0xB6, scene.scene_id, height, width])
    horizon = int(scene.horizon * height)
    image = np.empty((height, width, 3), np.float32)
    t = np.linspace(0.0, 1.0, max(horizon, 1), dtype=np.float32)[:, None, None]
    image[:horizon] = (1 - t) * np.float32(scene.sky[0]) + t * np.float32(scene.sky[1])
    grain = rng.standard_normal((height - horizon, width)).astype(np.float32)
    grain = cv2.GaussianBlur(grain, (0, 0), scene.texture_blur * height / 128.0)
    mix = np.clip(0.5 + grain / (grain.std() * 5 + 1e-6), 0, 1)[..., None]
    image[horizon:] = (1 - mix) * np.float32(scene.ground[0]) + mix * np.float32(scene.ground[1])
    image = image.astype(np.uint8)
    # A road band at mid-depth: where most objects walk/drive, so the viewpoint has a ground line.
    road_top = horizon + int(0.35 * (height - horizon))
    road_colour = tuple(int(c * 0.6) for c in scene.ground[0])
    cv2.rectangle(image, (0, road_top), (width - 1, road_top + max(2, height // 10)), road_colour, -1)
    for _ in range(scene.structures):
        x = int(rng.integers(0, width))
        w = int(rng.integers(width // 16, width // 5))
        h = int(rng.integers(height // 10, max(height // 10 + 1, horizon)))
        colour = _colour(rng, 20, 230)
        if rng.random() < 0.5:  # building
            cv2.rectangle(image, (x, horizon - h), (x + w, horizon), colour, -1)
        else:  # tree: trunk + crown
            cv2.line(image, (x, horizon), (x, horizon - h // 2), (70, 50, 30), max(1, w // 6))
            cv2.circle(image, (x, horizon - h // 2), max(2, w // 2), colour, -1)
    return image


@dataclass(frozen=True)
class WeatherAssets:
    """Pre-generated noise tiles a frame takes a deterministic window of (no per-frame RNG)."""

    noise_pos: np.ndarray  # uint8 (2H, 2W, 3): positive part of Gaussian sensor noise
    noise_neg: np.ndarray  # uint8 (2H, 2W, 3): negative part
    overlay: np.ndarray | None  # uint8 (2H, 2W, 3) rain streaks / snow flakes, added to the frame
    fog: np.ndarray | None  # uint8 (H, W, 3) fog colour image
    fog_alpha: np.ndarray | None  # float32 (H, W) fog opacity map (denser far away, at the top)


def make_weather_assets(scene: SceneType, seed: int, height: int, width: int) -> WeatherAssets:
    rng = np.random.default_rng([seed, 0x3EA7, scene.scene_id, height, width])
    noise = rng.normal(0.0, scene.sensor_noise, size=(2 * height, 2 * width, 3))
    pos = np.clip(noise, 0, 255).astype(np.uint8)
    neg = np.clip(-noise, 0, 255).astype(np.uint8)
    overlay = fog = fog_alpha = None
    if scene.weather in ("rain", "snow"):
        overlay = np.zeros((2 * height, 2 * width, 3), np.uint8)
        count = int(scene.weather_strength * 0.02 * overlay.shape[0] * overlay.shape[1] / 4)
        xs = rng.integers(0, 2 * width, count)
        ys = rng.integers(0, 2 * height, count)
        scale = height / 128.0
        for x, y in zip(xs, ys):
            if scene.weather == "rain":
                length = int(rng.integers(4, 10) * scale)
                level = int(rng.integers(50, 110))
                cv2.line(overlay, (int(x), int(y)), (int(x) - length // 3, int(y) + length), (level,) * 3, 1)
            else:
                level = int(rng.integers(120, 220))
                cv2.circle(overlay, (int(x), int(y)), max(1, int(rng.integers(1, 3) * scale)), (level,) * 3, -1)
    elif scene.weather == "fog":
        grey = int(rng.integers(170, 230))
        fog = np.full((height, width, 3), grey, np.uint8)
        rows = np.linspace(1.0, 0.45, height, dtype=np.float32)[:, None]
        fog_alpha = np.ascontiguousarray(np.broadcast_to(rows * scene.weather_strength * 1.4, (height, width)))
        fog_alpha = np.clip(fog_alpha, 0.0, 0.9).astype(np.float32)
    return WeatherAssets(pos, neg, overlay, fog, fog_alpha)
