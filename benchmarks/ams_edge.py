"""The edge/server simulation behind `benchmarks/ams_bandwidth.py`: its configuration, each camera's
sampled frames and teacher labels, the edge that applies (sparse) updates, and one scheme's run.

Kept apart from the benchmark's evaluation, table and plot so each module reads on its own.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
from ams_common import Setup, fresh_app, pretrained_base

from stemcell.learning import (
    ContinualLearner,
    FrameMeta,
    LabelledSample,
    OracleTeacher,
    RatesConfig,
    SampleBuffer,
    apply_update,
    decode,
    presence,
    rates_init,
    rates_step,
)
from stemcell.learning.coordinate_descent import Selection
from stemcell.models import AppModel, SegmentedNet, to_input
from stemcell.training import binary_metrics, pretrain_base, world_frames
from stemcell.world import CLASSES, World, WorldConfig

log = logging.getLogger("ams_bandwidth")
PretrainSource = Literal["world", "cameras"]


@dataclass(frozen=True)
class BenchConfig:
    seed: int = 0
    eval_cameras: tuple[int, ...] = (0, 1, 2)  # cameras the student is customised for
    # "world": the base is pretrained on a *source* world (seed + 1000, its own scene pool), as
    # M-Trainer does and as AMS pretrains its student on a generic dataset (`ams_common.pretrained_base`);
    # "cameras": on the early frames of `pretrain_cameras` of the target world (same scene pool: a near domain)
    pretrain_source: PretrainSource = "world"
    source_cameras: int = 4  # cameras of the source world (M-Trainer: all of them, whole timelines)
    pretrain_cameras: tuple[int, ...] = (3, 4)  # target-world cameras, for pretrain_source="cameras"
    duration_s: float = 600.0  # simulated video per evaluation camera
    size: int = 64  # frame height = width = model input size
    fps: float = 10.0
    app_class: str = "car"
    arch: str = "tiny_cnn"  # the student's registry architecture
    branchpoint: int = 4  # tiny_cnn has 6 segments: stem = 4 shared segments, 2 + head trained
    pretrain_frames: int = 600  # per pretraining camera, evenly over its timeline
    pretrain_fraction: float = 0.25  # "cameras" only: the part of the target timelines pretraining may see
    pretrain_epochs: int = 4
    eval_stride: int = 5  # evaluate every 5th frame (2 fps)
    iterations: int = 20  # K
    batch_size: int = 16
    lr: float = 1e-3
    horizon_s: float = 240.0
    one_time_s: float = 60.0
    one_time_iterations: int = 100
    gammas: tuple[float, ...] = (1.0, 0.2, 0.1, 0.05, 0.01)
    selection: Selection = "cumulative"
    baselines: tuple[str, ...] = ("none", "one-time")  # schemes without gradient-guided updates to run
    jpeg_quality: int = 75


QUICK = BenchConfig(
    eval_cameras=(0, 1, 2), source_cameras=2, pretrain_cameras=(3,), duration_s=120.0, size=48, pretrain_frames=500,
    pretrain_fraction=0.5, pretrain_epochs=3, eval_stride=10, batch_size=8, one_time_iterations=60,
)


@dataclass(frozen=True, eq=False)
class CameraData:
    """Everything about one evaluation camera that does not depend on the scheme."""

    camera: int
    eval_t: np.ndarray  # timestamps of evaluated frames
    eval_features: torch.Tensor  # stem activations of the evaluated frames (the stem is shared and frozen)
    eval_truth: np.ndarray  # bool ground truth of the app on those frames
    sample_t: np.ndarray  # ASR sample times (AMS schemes)
    sample_frames: np.ndarray  # uint8 frames sampled at those times
    sample_features: torch.Tensor  # their stem activations (what training starts from)
    sample_labels: np.ndarray  # oracle labels (all classes)
    sample_jpeg_bytes: np.ndarray  # size of each sampled frame as JPEG
    update_t: np.ndarray  # ATR model-update times
    mean_rate_fps: float


def jpeg_size(frame: np.ndarray, quality: int) -> int:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return len(data)


def simulate_schedule(timeline, teacher: OracleTeacher, camera: int, duration_s: float,
                      rates: RatesConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Run ASR + ATR over the camera: sample times, their frame indices, and model-update times."""
    state = rates_init(rates)
    t, next_update = 0.0, rates.atr.base_s
    sample_t, sample_idx, update_t = [], [], []
    while t < duration_s:
        if next_update <= t:
            update_t.append(next_update)
            next_update += state.atr.t_update_s
            continue
        index = min(int(round(t * timeline.fps)), timeline.num_frames - 1)
        labels = presence(teacher.label(timeline.frames([index]), FrameMeta(camera, np.array([index]))), teacher.classes)[0]
        state = rates_step(state, LabelledSample(t, tuple(float(v) for v in labels)), rates)
        sample_t.append(t)
        sample_idx.append(index)
        t += 1.0 / state.asr.rate_fps
    span = np.diff(np.concatenate([sample_t, [duration_s]]))
    mean_rate = len(sample_t) / duration_s if len(span) else 0.0
    return np.array(sample_t), np.array(sample_idx), np.array(update_t), mean_rate


@torch.no_grad()
def stem_features(app: AppModel, frames: np.ndarray, size: int, chunk: int = 256) -> torch.Tensor:
    return torch.cat([app.stem_features(to_input(frames[i : i + chunk], size)) for i in range(0, len(frames), chunk)])


def prepare_camera(world: World, teacher: OracleTeacher, camera: int, template: AppModel,
                   cfg: BenchConfig, rates: RatesConfig) -> CameraData:
    timeline = world.camera(camera)
    eval_idx = np.arange(0, int(cfg.duration_s * cfg.fps), cfg.eval_stride)
    truth = timeline.presence()[eval_idx, CLASSES.index(cfg.app_class)]
    features = stem_features(template, timeline.frames(eval_idx), cfg.size)
    sample_t, sample_idx, update_t, mean_rate = simulate_schedule(timeline, teacher, camera, cfg.duration_s, rates)
    frames = timeline.frames(sample_idx)
    labels = presence(teacher.label(frames, FrameMeta(camera, sample_idx)), teacher.classes)
    jpeg = np.array([jpeg_size(f, cfg.jpeg_quality) for f in frames])
    return CameraData(camera, eval_idx / cfg.fps, features, truth, sample_t, frames,
                      stem_features(template, frames, cfg.size), labels, jpeg, update_t, mean_rate)


def feature_batches(buffer: SampleBuffer, features: torch.Tensor, count: int, batch_size: int,
                    rng: np.random.Generator, target: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Uniform mini-batches from the buffer, as cached stem activations (the stem is frozen and shared:
    running it again for every scheme and iteration would only burn CPU)."""
    out = []
    for _ in range(count):
        items = buffer.sample_items(batch_size, rng)
        keys = torch.tensor([it.key for it in items])
        out.append((features[keys], torch.from_numpy(np.stack([it.labels[target] for it in items]))))
    return out


class Edge:
    """The device: its own copy of the app, patched only through decoded update bytes."""

    def __init__(self, app: AppModel, learner: ContinualLearner) -> None:
        self.app = app
        self.state = learner.trainable_state()
        self.version = learner.version
        self.app.load_state_dict(self.state, strict=False)

    def receive(self, payload: bytes) -> None:
        update = decode(payload)
        self.state = apply_update(self.state, update, current_version=self.version)
        self.version = update.version
        missing, unexpected = self.app.load_state_dict(self.state, strict=False)
        assert not unexpected

    @torch.no_grad()
    def predict(self, features: torch.Tensor) -> np.ndarray:
        return (self.app.upper_forward(features)[:, 0] > 0).numpy()


def run_scheme(base: SegmentedNet, cam: CameraData, cfg: BenchConfig, gamma: float | None, scheme: str) -> dict:
    """Simulate one scheme on one camera; returns metrics and byte counts."""
    learner = ContinualLearner(fresh_app(base, cfg.branchpoint, cfg.app_class), lr=cfg.lr, gamma=gamma,
                               phase_steps=cfg.iterations, selection=cfg.selection, seed=cfg.seed,
                               from_features=True)
    edge = Edge(fresh_app(base, cfg.branchpoint, cfg.app_class), learner)
    target = [CLASSES.index(cfg.app_class)]
    rng = np.random.default_rng(cfg.seed)
    buffer = SampleBuffer(horizon_s=cfg.horizon_s)
    predictions = np.zeros(len(cam.eval_t), dtype=bool)
    down_bytes, up_bytes, updates, train_s = 0, 0, 0, 0.0
    if scheme == "No customization":
        update_t, sample_sel, iterations = np.array([]), np.zeros(len(cam.sample_t), bool), 0
    elif scheme == "One-time":
        # one frame per second over the first 60 s (the paper's One-Time fine-tunes on the first minute)
        wanted = np.arange(0.0, cfg.one_time_s, 1.0)
        sample_sel = np.zeros(len(cam.sample_t), bool)
        sample_sel[np.unique(np.searchsorted(cam.sample_t, wanted).clip(max=len(cam.sample_t) - 1))] = True
        update_t, iterations = np.array([cfg.one_time_s]), cfg.one_time_iterations
    else:
        update_t, sample_sel, iterations = cam.update_t, np.ones(len(cam.sample_t), bool), cfg.iterations
    done_eval, next_sample = 0, 0
    for t_u in [*update_t, np.inf]:
        upto = int(np.searchsorted(cam.eval_t, t_u, side="left"))
        predictions[done_eval:upto] = edge.predict(cam.eval_features[done_eval:upto])
        done_eval = upto
        if not np.isfinite(t_u):
            break
        while next_sample < len(cam.sample_t) and cam.sample_t[next_sample] <= t_u:
            if sample_sel[next_sample]:
                buffer.add(cam.sample_t[next_sample], cam.sample_frames[next_sample], cam.sample_labels[next_sample],
                           key=next_sample)
                up_bytes += int(cam.sample_jpeg_bytes[next_sample])
            next_sample += 1
        if len(buffer) < 2:
            continue
        start = time.perf_counter()
        batches = feature_batches(buffer, cam.sample_features, iterations, cfg.batch_size, rng, target)
        result = learner.retrain(batches, iterations)
        train_s += time.perf_counter() - start
        edge.receive(result.update_bytes)
        down_bytes += len(result.update_bytes)
        updates += 1
        assert all(torch.equal(edge.state[n], w) for n, w in result.new_state.items()), "edge diverged from server"
    m = binary_metrics(predictions, cam.eval_truth)
    return {"accuracy": m.accuracy, "f1": m.f1, "down_bytes": down_bytes, "up_bytes": up_bytes,
            "updates": updates, "train_s": train_s}


def schemes(cfg: BenchConfig) -> list[tuple[str, float | None]]:
    named = [(name, None) for key, name in (("none", "No customization"), ("one-time", "One-time"))
             if key in cfg.baselines]
    for g in cfg.gammas:
        named.append(("AMS full model", 1.0) if g >= 1.0 else (f"AMS gamma={g:.0%}", g))
    return named


def pretrain_student(cfg: BenchConfig) -> SegmentedNet:
    """The "No customization" student (`cfg.arch`) pretrained on data the evaluation cameras never show.

    Default (`pretrain_source="world"`): every camera of a source world with another seed, whole
    timelines, exactly as M-Trainer's `obtain_base` builds the product's base. Its scene pool differs
    from the target world's, so the evaluation cameras are a new domain -- the situation AMS is
    designed for (its student is pretrained on Cityscapes / PASCAL VOC, not on the target videos).
    `"cameras"` pretrains on early frames of other cameras of the *target* world, which share its
    scene pool: the student then already knows most scenes and customisation has little to gain.
    """
    if cfg.pretrain_source == "world":
        return pretrained_base(Setup(arch=cfg.arch, branchpoint=cfg.branchpoint, size=cfg.size, fps=cfg.fps, duration_s=cfg.duration_s, seed=cfg.seed,
                                     source_cameras=cfg.source_cameras, pretrain_frames=cfg.pretrain_frames,
                                     pretrain_epochs=cfg.pretrain_epochs))
    started = time.perf_counter()
    target = World(WorldConfig(seed=cfg.seed, num_cameras=max(cfg.pretrain_cameras) + 1, height=cfg.size,
                               width=cfg.size, fps=cfg.fps, duration_s=cfg.duration_s))
    data, _ = world_frames(target, cfg.pretrain_cameras, cfg.pretrain_frames, seed=cfg.seed,
                           end_fraction=cfg.pretrain_fraction)
    base = pretrain_base(cfg.arch, data, input_size=cfg.size, epochs=cfg.pretrain_epochs, lr=3e-3,
                         batch_size=64, seed=cfg.seed)
    log.info("pretrained %s on %d target-camera frames in %.1fs", cfg.arch, len(data), time.perf_counter() - started)
    return base


def prepare(cfg: BenchConfig) -> tuple[SegmentedNet, list[CameraData]]:
    """Pretrained student + every evaluation camera's scheme-independent data (the costly part)."""
    torch.manual_seed(cfg.seed)
    base = pretrain_student(cfg)
    world = World(WorldConfig(seed=cfg.seed, num_cameras=max(cfg.eval_cameras) + 1, height=cfg.size,
                              width=cfg.size, fps=cfg.fps, duration_s=cfg.duration_s))
    teacher, rates = OracleTeacher(world), RatesConfig()
    template = fresh_app(base, cfg.branchpoint, cfg.app_class)
    cams = []
    for camera in cfg.eval_cameras:
        cams.append(prepare_camera(world, teacher, camera, template, cfg, rates))
        log.info("camera %d: %d samples (%.2f fps), %d updates", camera, len(cams[-1].sample_t),
                 cams[-1].mean_rate_fps, len(cams[-1].update_t))
    return base, cams
