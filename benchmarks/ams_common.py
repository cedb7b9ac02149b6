"""Shared setup of the AMS streaming benchmarks (ams_asr_atr.py, ams_multiclient.py).

The real pipeline, in one process: `EdgeClient`s (students run locally, JPEG samples at the ASR
rate, sparse updates applied to a standby copy) talk through `InProcessTransport` to one
`AmsTrainer` (oracle teacher, sliding buffer, gradient-guided Adam above the branchpoint). Video
time is simulated frame by frame. With `phase_cost_s` set, the trainer is a busy server: one
retraining phase at a time, round-robin over due jobs, each occupying it for `phase_cost_s` of
video time, and an update reaches its edge when the phase ends (AMS appendix E). Without it the
server retrains everything due at each upload (unconstrained).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from stemcell.edge import EdgeClient, InProcessTransport
from stemcell.learning import AmsConfig, AmsTrainer, OracleTeacher
from stemcell.models import AppModel, SegmentedNet, make_app_model
from stemcell.training import binary_metrics, pretrain_base, world_frames
from stemcell.world import CLASSES, World, WorldConfig

log = logging.getLogger("ams")


@dataclass(frozen=True)
class Setup:
    size: int = 64  # frame side = model input
    fps: float = 10.0  # stream rate
    duration_s: float = 600.0
    app_class: str = "car"
    arch: str = "tiny_cnn"  # the student's registry architecture
    branchpoint: int = 4  # tiny_cnn: 4 shared segments, 2 + head retrained
    source_cameras: int = 4  # cameras of the source world the student is pretrained on
    pretrain_frames: int = 600
    pretrain_epochs: int = 4
    eval_stride: int = 5  # score the edge's label on every 5th frame
    seed: int = 0
    # per scene and class, fraction of frames with the class: the default world is busy; a quiet one
    # (e.g. (0.02, 0.06)) has long stretches with unchanged labels, where ASR/ATR should save most
    class_coverage: tuple[float, float] = (0.15, 0.45)


SOURCE_SEED_OFFSET = 1000  # M-Trainer's default source world is world.seed + 1000 (stemcell.training.mtrainer)


def build_world(setup: Setup, num_cameras: int, seed: int | None = None) -> World:
    return World(WorldConfig(seed=setup.seed if seed is None else seed, num_cameras=num_cameras, height=setup.size,
                             width=setup.size, fps=setup.fps, duration_s=setup.duration_s,
                             class_coverage=setup.class_coverage))


def pretrained_base(setup: Setup) -> SegmentedNet:
    """The "No customization" student (`setup.arch`) pretrained on every camera of a *source* world
    (seed + 1000, whole timelines), as M-Trainer builds the product's base. Its scene pool differs
    from the target world's, so the evaluated cameras are a new domain: the AMS setting (its student
    is pretrained on a generic dataset, never on the target videos)."""
    started = time.perf_counter()
    seed = setup.seed + SOURCE_SEED_OFFSET
    data, _ = world_frames(build_world(setup, setup.source_cameras, seed), range(setup.source_cameras),
                           setup.pretrain_frames, seed=seed)
    base = pretrain_base(setup.arch, data, input_size=setup.size, epochs=setup.pretrain_epochs, lr=3e-3,
                         batch_size=64, seed=setup.seed)
    log.info("pretrained %s on %d source-world frames in %.1fs", setup.arch, len(data), time.perf_counter() - started)
    return base


def fresh_app(base: SegmentedNet, branchpoint: int, app_class: str) -> AppModel:
    """The uncustomised app: base cut at the branchpoint, head = the base's row for the class."""
    app = make_app_model(base, branchpoint, 1)
    k = CLASSES.index(app_class)
    with torch.no_grad():
        app.head.fc.weight.copy_(base.head.fc.weight[k : k + 1])
        app.head.fc.bias.copy_(base.head.fc.bias[k : k + 1])
    return app.eval()


@dataclass(frozen=True)
class RunResult:
    per_camera: list[dict]  # one row per camera
    retrain_s: float  # measured retraining wall seconds (all jobs)
    phases: int  # retraining phases run


def simulate(world: World, base: SegmentedNet, setup: Setup, cameras: list[int], ams: AmsConfig, *,
             phase_cost_s: float | None = None) -> RunResult:
    """Stream `cameras` through edges sharing one trainer; returns per-camera accuracy and bytes."""
    trainer = AmsTrainer(ams)
    target = CLASSES.index(setup.app_class)
    ids = {f"cam{c}": c for c in cameras}
    for cid in ids:
        trainer.add_job(cid, setup.app_class, fresh_app(base, setup.branchpoint, setup.app_class), target)
    transport = InProcessTransport(trainer, OracleTeacher(world), camera_index=ids, fps=setup.fps,
                                   train_on_upload=phase_cost_s is None)
    edges = {cid: EdgeClient(cid, {setup.app_class: fresh_app(base, setup.branchpoint, setup.app_class)}, transport, input_size=setup.size,
                             sampling_fps=ams.fixed_fps if not ams.adaptive else ams.rates.asr.initial_fps,
                             t_update_s=ams.rates.atr.base_s) for cid in ids}
    for edge in edges.values():
        edge.sync()
    n = int(setup.duration_s * setup.fps)
    scored = np.arange(0, n, setup.eval_stride)
    predictions = {cid: np.zeros(len(scored), dtype=bool) for cid in ids}
    busy_until: float | None = None
    for i in range(n):
        t = i / setup.fps
        if phase_cost_s is not None:
            if busy_until is not None and t >= busy_until:
                published = trainer.run_next()  # the phase that started at busy_until - cost ends now
                if published is not None:
                    edges[published.camera].sync()
                busy_until = None
            if busy_until is None and trainer.due():
                busy_until = t + phase_cost_s
        score = i % setup.eval_stride == 0
        for cid, cam in ids.items():
            labels = edges[cid].observe(world.camera(cam).frame(i), t, infer=score)
            if score:
                predictions[cid][i // setup.eval_stride] = labels[setup.app_class]
    rows = []
    for cid, cam in ids.items():
        truth = world.camera(cam).presence()[scored, target]
        m = binary_metrics(predictions[cid], truth)
        c = edges[cid].counters
        stats = trainer.stats()[f"{cid}/{setup.app_class}"]
        rows.append({"camera": cam, "accuracy": m.accuracy, "f1": m.f1,
                     "uplink_kbps": 8 * c.uplink_bytes / 1000 / setup.duration_s,
                     "downlink_kbps": 8 * c.downlink_bytes / 1000 / setup.duration_s,
                     "samples": c.samples, "sample_fps": c.samples / setup.duration_s, "updates": stats["updates"],
                     "retrain_s": stats["wall_s"], "retrain_cpu_s": stats["cpu_s"]})
    jobs = trainer.stats().values()
    return RunResult(rows, sum(j["wall_s"] for j in jobs), sum(j["updates"] for j in jobs))


def mean_row(rows: list[dict], keys: tuple[str, ...]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}
