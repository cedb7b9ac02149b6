"""A seeded, drifting, multi-camera synthetic world with exact labels, plus real video IO.

Why it exists: Stemcell's claims (stem sharing, continuous learning, model-zoo reuse) only show
on video whose content *changes* and *comes back*, with ground truth for every frame. No dataset
can be downloaded here, so the world generates one, fast enough (thousands of frames/s on one
core at 128x128) to stream many cameras in real time.

The world model
- **Scene pool.** `WorldConfig.num_scene_types` (default 8) scene types shared by all cameras
  (`World.scene_pool`): sunny street, night street, rainy road, foggy highway, snowy park, dusk
  plaza, desert lot, tunnel. A scene type fixes the background (sky/ground palette, ground
  texture, horizon, static buildings/trees), lighting (gain, colour tint, tone curve), weather
  (rain streaks, fog, snow), sensor noise, viewpoint (object scale) and the colour each object
  class wears there. Shapes are class-specific everywhere, so presence stays learnable.
- **Timelines and recurrence.** Each camera has `scenes_per_camera` (default 4) "haunts" drawn
  from the pool, and its timeline is a sequence of segments (45-120 s) each showing one haunt,
  never the same twice in a row. Scene types therefore recur over time on a camera and across
  cameras (haunts overlap), which is what a model zoo can exploit. Within a segment the lighting
  drifts linearly; every visit gets its own lighting ramp and fog density.
- **Objects.** person, car, bus, bicycle, dog (`CLASSES`) enter at a frame edge, walk or drive
  (possibly stopping, possibly turning back) and leave; each `ObjectTrack` has a class, enter and
  exit frame and a piecewise-linear trajectory. Arrivals are Poisson per class with rates that
  make each class present in 15-45% of a scene's frames (scene-dependent, so label priors drift
  too); time on screen is log-uniform from 0.3 s to 30 s. A class is *present* in a frame when
  any part of one of its objects' boxes is in the frame; boxes are clipped to the frame.
- **Determinism and random access.** Everything derives from `WorldConfig.seed` through
  independent RNG streams: camera c's timeline does not depend on the number of cameras, and a
  longer world extends a shorter one. `CameraTimeline.frame(i)` is a pure function of
  (seed, camera, i): frames can be rendered alone, in any order, with identical bytes.
  `presence()`, `scene_ids()` and `labels(i)` never render a pixel.

Usage::

    world = World(WorldConfig(seed=0, num_cameras=4))
    cam = world.camera(0)
    frame = cam.frame(123)                     # uint8 RGB (128, 128, 3)
    cam.labels(123)                            # FrameLabels(presence, boxes, scene_id)
    events = extract_events(cam.presence()[:, CLASSES.index("car")])
    mp4, parquet = export_camera(cam, "out/", 0, 600)   # real video + labels
    with open_source(mp4) as src:              # or "rtsp://...", or "synthetic:0?seed=1&size=64x64"
        for rgb, ts in src: ...
"""
from stemcell.world.datatypes import CLASSES, Box, Event, FrameLabels, Segment, WorldConfig
from stemcell.world.events import extract_events
from stemcell.world.export import ExportedLabels, export_camera, read_labels
from stemcell.world.formats import export_coco, export_video_labels
from stemcell.world.objects import ObjectTrack
from stemcell.world.scenes import SceneType
from stemcell.world.timeline import CameraTimeline, World
from stemcell.world.video_io import FrameSource, SyntheticSource, VideoCaptureSource, open_source

__all__ = [
    "CLASSES",
    "Box",
    "CameraTimeline",
    "Event",
    "ExportedLabels",
    "FrameLabels",
    "FrameSource",
    "ObjectTrack",
    "SceneType",
    "Segment",
    "SyntheticSource",
    "VideoCaptureSource",
    "World",
    "WorldConfig",
    "export_camera",
    "export_coco",
    "export_video_labels",
    "extract_events",
    "open_source",
    "read_labels",
]
