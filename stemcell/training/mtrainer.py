"""M-Trainer end to end: world data -> pretrained base -> candidates per (app, branchpoint) -> M-Package.

How trials are executed is injected (`TrialRunner`): locally in this process for tests, or on Ray
with fractional GPU shares (`actors.trial_runner`). The policy of *what* to train stays here.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from stemcell.config import CLASS_NAMES, TrainConfig
from stemcell.models import SegmentedNet, build_base, load_safetensors, save_safetensors
from stemcell.package.build import app_entry, build_package
from stemcell.package.manifest import Manifest
from stemcell.training.data import LabelledFrames, world_frames
from stemcell.training.finetune import CandidateResult, CandidateSpec, finetune_candidate
from stemcell.training.latency import profile_latency
from stemcell.training.loop import training_device
from stemcell.training.pretrain import image_folder_frames, pretrain_base
from stemcell.world import World, WorldConfig

log = logging.getLogger(__name__)

TrialRunner = Callable[[SegmentedNet, Sequence[CandidateSpec], LabelledFrames, LabelledFrames], list[CandidateResult]]
BASE_CACHE = "pretrained_base.safetensors"


def run_trials_locally(
    base: SegmentedNet, specs: Sequence[CandidateSpec], train: LabelledFrames, val: LabelledFrames
) -> list[CandidateResult]:
    """Sequential trials in this process (tests, or a machine without Ray)."""
    results = []
    for i, spec in enumerate(specs, 1):
        results.append(finetune_candidate(base, spec, train, val))
        log_trial(i, len(specs), results[-1])
    return results


def log_trial(done: int, total: int, result: CandidateResult) -> None:
    m = result.metrics
    log.info(
        "[%d/%d] %s @ b=%d  f1=%.3f p=%.3f r=%.3f  (%.1fs)",
        done, total, result.spec.app, result.spec.branchpoint, m.f1, m.precision, m.recall, result.train_seconds,
    )


def make_world(config: TrainConfig, seed: int | None = None) -> World:
    """The configured world, or the same world shape under another seed (a different domain)."""
    w = config.world
    return World(WorldConfig(seed=w.seed if seed is None else seed, num_cameras=w.num_cameras, height=w.height,
                             width=w.width, fps=w.fps, duration_s=w.duration_s))


def obtain_base(config: TrainConfig, cache_dir: Path) -> SegmentedNet:
    """The pretrained base: reuse `cache_dir/pretrained_base.safetensors` when present, else train it
    on the source world (or the user's image folder)."""
    cached = cache_dir / BASE_CACHE
    base_cfg, pre = config.base, config.base.pretrain
    if cached.is_file():
        log.info("reusing pretrained base %s", cached)
        base = build_base(base_cfg.name, num_classes=len(CLASS_NAMES))
        base.load_state_dict(load_safetensors(cached))
        return base.eval()
    if pre.image_folder is not None:
        data = image_folder_frames(pre.image_folder, base_cfg.input_size)
    else:
        seed = config.world.seed + 1000 if pre.world_seed is None else pre.world_seed
        source = make_world(config, seed)
        data, _ = world_frames(source, range(source.config.num_cameras), pre.frames_per_camera, seed=seed)
    log.info("pretraining %s on %d frames for %d epochs", base_cfg.name, len(data), pre.epochs)
    base = pretrain_base(base_cfg.name, data, input_size=base_cfg.input_size, epochs=pre.epochs, lr=pre.lr,
                         batch_size=pre.batch_size, seed=config.world.seed, torchvision_weights=base_cfg.weights)
    save_safetensors(base.state_dict(), cached)
    return base


def candidate_specs(config: TrainConfig, num_segments: int) -> list[CandidateSpec]:
    """One spec per (app, branchpoint); 'all' means every cut from 0 (no sharing) to S (max sharing)."""
    bps = range(num_segments + 1) if config.trainer.branchpoints == "all" else config.trainer.branchpoints
    bad = [b for b in bps if not 0 <= b <= num_segments]
    if bad:
        raise ValueError(f"trainer.branchpoints: {bad} outside [0, {num_segments}] for base {config.base.name}")
    t = config.trainer
    return [
        CandidateSpec(app=a.name, class_index=CLASS_NAMES.index(a.target_class), branchpoint=b, epochs=t.epochs,
                      lr=t.lr, batch_size=t.batch_size, input_size=config.base.input_size, seed=config.world.seed)
        for a in config.apps
        for b in bps
    ]


def train_package(config: TrainConfig, out_dir: str | Path, run_trials: TrialRunner = run_trials_locally) -> Manifest:
    """The whole M-Trainer. Writes the M-Package into `out_dir` and returns its manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = make_world(config)
    base = obtain_base(config, out)
    cameras = range(world.config.num_cameras)
    train, val = world_frames(world, cameras, config.trainer.train_frames_per_camera,
                              seed=config.world.seed + 1, val_fraction=config.trainer.val_fraction)
    log.info("training frames %d, validation frames %d", len(train), len(val))
    lat = config.latency
    profile = profile_latency(base, config.base.input_size, lat.batch_sizes, lat.repeats, device=training_device())
    log.info("latency table measured on %s", profile.device)  # named in manifest.json (latency.device)
    specs = candidate_specs(config, base.num_segments)
    log.info("training %d candidates (%d apps x %d branchpoints)", len(specs), len(config.apps),
             len(specs) // len(config.apps))
    results = run_trials(base, specs, train, val)
    presence = np.stack([world.camera(c).presence() for c in cameras])  # (cams, frames, classes)
    apps = [app_entry(a.name, a.target_class, presence[:, :, CLASS_NAMES.index(a.target_class)]) for a in config.apps]
    return build_package(out, base, config.base.input_size, world.config.fps, config.world.model_dump(), profile,
                         apps, results)
