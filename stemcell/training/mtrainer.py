"""M-Trainer end to end: data -> base -> candidates per (app, branchpoint) -> M-Package.

The data come from any registered source (`data:` in the config: the synthetic world, labelled
video, COCO); classes come from the data. How trials are executed is injected (`TrialRunner`):
locally in this process for tests, or on Ray with fractional GPU shares (`actors.trial_runner`).
The policy of *what* to train stays here.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from stemcell.config import AppSection, ImageFolderData, PretrainSection, TrainConfig
from stemcell.data import DataError, FrameDataset, app_truth, load_dataset, request_for, split_by_chunks
from stemcell.models import SegmentedNet, build_base, load_safetensors, save_safetensors
from stemcell.package.build import TrainingInfo, app_entry, build_package
from stemcell.package.manifest import DataEntry, DataFileEntry, Manifest, NormalizationEntry
from stemcell.training.data import LabelledFrames, world_frames
from stemcell.training.finetune import CandidateResult, CandidateSpec, finetune_candidate
from stemcell.training.latency import profile_latency
from stemcell.training.loop import training_device
from stemcell.training.pretrain import pretrain_base
from stemcell.world import World

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
    return World(request_for(config, seed).world)


def obtain_base(config: TrainConfig, cache_dir: Path, num_classes: int = 1) -> SegmentedNet:
    """The base: reuse `cache_dir/pretrained_base.safetensors` when present; else `base.weights` as they
    are (`base.pretrain: none`), or trained on the source world (or the user's image folder).

    A cached base keeps its own head size (a 3-class image-folder pretrain, say): the head is only
    the pretraining objective, every app gets a new one (`num_classes` sizes it for weights used as is).
    """
    cached = cache_dir / BASE_CACHE
    base_cfg, pre = config.base, config.base.pretrain
    if cached.is_file():
        log.info("reusing pretrained base %s", cached)
        state = load_safetensors(cached)
        base = build_base(base_cfg.name, num_classes=int(state["head.fc.weight"].shape[0]))
        base.load_state_dict(state)
        return base.eval()
    if pre == "none":
        log.info("using %s weights %s as they are (base.pretrain: none)", base_cfg.name, base_cfg.weights)
        base = build_base(base_cfg.name, num_classes=num_classes, seed=config.world.seed,
                          torchvision_weights=base_cfg.weights)
    else:
        base = _pretrained(config, pre)
    save_safetensors(base.state_dict(), cached)
    return base


def _pretrained(config: TrainConfig, pre: PretrainSection) -> SegmentedNet:
    base_cfg = config.base
    if pre.image_folder is not None:
        data = load_dataset(ImageFolderData(kind="image_folder", root=pre.image_folder), request_for(config)).samples
    else:
        seed = config.world.seed + 1000 if pre.world_seed is None else pre.world_seed
        source = make_world(config, seed)
        data, _ = world_frames(source, range(source.config.num_cameras), pre.frames_per_camera, seed=seed)
    log.info("pretraining %s on %d frames for %d epochs", base_cfg.name, len(data), pre.epochs)
    n = base_cfg.normalization
    return pretrain_base(base_cfg.name, data, input_size=base_cfg.input_size, epochs=pre.epochs, lr=pre.lr,
                         batch_size=pre.batch_size, seed=config.world.seed, torchvision_weights=base_cfg.weights,
                         mean=n.mean, std=n.std)


def check_apps(apps: Sequence[AppSection], data: FrameDataset, source: str) -> None:
    """Every app's classes exist in the data and its event occurs at least once (else nothing to learn);
    detect apps need a box on every object."""
    for i, app in enumerate(apps):
        field = "class" if app.target_class is not None else "classes"
        if app.task == "detect" and data.samples.boxes is None:
            raise DataError(f"apps[{i}].task ({app.name}): a detect app learns from boxes, but {source} has objects "
                            f"without a box (x0, y0, x1, y1 in a labels table; bbox in COCO)")
        unknown = [c for c in app.app_classes if c not in data.classes]
        if unknown:
            raise DataError(f"apps[{i}].{field} ({app.name}): unknown class {unknown}; the data ({source}) has "
                            f"{list(data.classes)}")
        for cls in app.app_classes:
            if data.label_counts()[cls] == 0:
                raise DataError(f"apps[{i}].{field} ({app.name}): class {cls!r} has no positive example in {source}")
        if not any((app_truth(t.counts, data.classes, app.app_classes) >= app.min_count).any() for t in data.timelines):
            raise DataError(f"apps[{i}].min_count ({app.name}): no labelled frame has {app.min_count} or more "
                            f"{'/'.join(app.app_classes)} in {source}")


def candidate_specs(config: TrainConfig, num_segments: int, classes: Sequence[str]) -> list[CandidateSpec]:
    """One spec per (app, branchpoint); 'all' means every cut from 0 (no sharing) to S (max sharing)."""
    bps = range(num_segments + 1) if config.trainer.branchpoints == "all" else config.trainer.branchpoints
    bad = [b for b in bps if not 0 <= b <= num_segments]
    if bad:
        raise ValueError(f"trainer.branchpoints: {bad} outside [0, {num_segments}] for base {config.base.name}")
    t, n = config.trainer, config.base.normalization
    return [
        CandidateSpec(app=a.name, class_indices=tuple(list(classes).index(c) for c in a.app_classes), branchpoint=b,
                      epochs=t.epochs, lr=t.lr, batch_size=t.batch_size, input_size=config.base.input_size,
                      seed=config.world.seed, task=a.task, min_count=a.min_count, mean=n.mean, std=n.std)
        for a in config.apps
        for b in bps
    ]


def load_training_data(config: TrainConfig) -> FrameDataset:
    """The configured data source, validated against the apps (before anything is written)."""
    if isinstance(config.data, ImageFolderData):
        raise DataError("data.kind: image_folder is for pretraining a base only (base.pretrain.image_folder); "
                        "train apps on video_labels, coco or synthetic data")
    data = load_dataset(config.data, request_for(config))
    check_apps(config.apps, data, data.origin)
    return data


def training_info(config: TrainConfig, data: FrameDataset) -> TrainingInfo:
    entry = DataEntry(kind=data.kind, files=[DataFileEntry(path=f.path, sha256=f.sha256) for f in data.files],
                      classes=list(data.classes), label_counts=data.label_counts())
    n = config.base.normalization
    return TrainingInfo(input_size=config.base.input_size, fps=data.fps, data=entry,
                        world=config.world.model_dump() if data.kind == "synthetic" else None,
                        normalization=NormalizationEntry(mean=n.mean, std=n.std))


def train_package(config: TrainConfig, out_dir: str | Path, run_trials: TrialRunner = run_trials_locally) -> Manifest:
    """The whole M-Trainer. Writes the M-Package into `out_dir` and returns its manifest."""
    data = load_training_data(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = obtain_base(config, out, len(data.classes))
    train, val = split_by_chunks(data.samples, data.fps, config.trainer.val_fraction, config.trainer.val_chunk_s,
                                 seed=config.world.seed + 1)
    log.info("%s data: training frames %d, validation frames %d, classes %s", data.kind, len(train), len(val),
             list(data.classes))
    lat = config.latency
    profile = profile_latency(base, config.base.input_size, lat.batch_sizes, lat.repeats, device=training_device())
    log.info("latency table measured on %s", profile.device)  # named in manifest.json (latency.device)
    specs = candidate_specs(config, base.num_segments, data.classes)
    log.info("training %d candidates (%d apps x %d branchpoints)", len(specs), len(config.apps),
             len(specs) // len(config.apps))
    results = run_trials(base, specs, train, val)
    apps = [
        app_entry(a.name, a.app_classes,
                  [app_truth(t.counts, data.classes, a.app_classes) >= a.min_count for t in data.timelines],
                  task=a.task, min_count=a.min_count, spacing=float(np.median([t.spacing() for t in data.timelines])))
        for a in config.apps
    ]
    return build_package(out, base, training_info(config, data), profile, apps, results)
