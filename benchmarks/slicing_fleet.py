"""The RECL slicing fleet, shared by benchmarks/recl_slicing.py and benchmarks/live_learning.py.

Cameras of the drifting synthetic world share one GPU's retraining time in micro-windows; every
camera runs a binary app on a tiny_cnn AppModel trained above a frozen stem, fed each update window
with teacher-labelled samples (2/3 training, every 3rd block held out to measure gains), and its
deployed model is scored on the next window's live frames. `measure(args)` runs every policy on the
same models and frames and returns per-policy summaries; recl_slicing.py documents the measurements.
The arguments (`add_fleet_arguments`) are the same for both benchmarks, so a fleet is described by
the same flags wherever it runs.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stemcell.learning.live_stats import Agreement
from stemcell.models import AppModel, SegmentedNet, make_app_model, to_input
from stemcell.scheduling.gain_curves import headroom_prior
from stemcell.scheduling.slicing import SLICING_POLICIES, run_micro_windows
from stemcell.training import pretrain_base, world_frames
from stemcell.world import CLASSES, CameraTimeline, World, WorldConfig

POLICY_LABELS = {"gain": "gain-driven, drop prior + measured gains (the Planner's)",
                 "gain_curve": "gain-driven, curve fit of measured gains (RECL)",
                 "gain_last": "gain-driven, last-gain estimator",
                 "gain_drop": "gain-driven, prior alone (--drop-from)",
                 "gain_headroom": "gain-driven, headroom prior + measured gains",
                 "gain_headroom_only": "gain-driven, headroom prior alone",
                 "round_robin": "round-robin (AMS)", "equal_share": "equal share (Ekya-like)"}
ESTIMATOR_OF = {"gain": "blend", "gain_curve": "curve", "gain_last": "last", "gain_drop": "prior",
                "gain_headroom": "blend", "gain_headroom_only": "prior"}
PRIOR_OF = {"gain_headroom": "headroom", "gain_headroom_only": "headroom"}  # other policies: --drop-from


def pretrained_base(world: World, args: argparse.Namespace) -> SegmentedNet:
    """tiny_cnn pretrained on class presence from 4 *other* cameras of the world (the generic model)."""
    cameras = range(args.cameras, args.cameras + 4)
    data, _ = world_frames(world, cameras, args.pretrain_frames, seed=args.seed)
    return pretrain_base("tiny_cnn", data, input_size=args.size, epochs=args.pretrain_epochs, lr=3e-3,
                         batch_size=64, seed=args.seed)


def app_model(base: SegmentedNet, cls: int, branchpoint: int) -> AppModel:
    """An app model whose head starts as the base's pretrained output for `cls` (the generic model)."""
    model = make_app_model(base, branchpoint, num_outputs=1)
    with torch.no_grad():
        model.head.fc.weight.copy_(base.head.fc.weight[cls : cls + 1])
        model.head.fc.bias.copy_(base.head.fc.bias[cls : cls + 1])
    return model


@torch.no_grad()
def stem_features(base: SegmentedNet, branchpoint: int, frames: np.ndarray, size: int) -> torch.Tensor:
    """The frozen stem is shared and never trained: run it once per frame, train only above it."""
    return base.features(to_input(frames, size), 0, branchpoint)


@torch.no_grad()
def accuracy(model: AppModel, feats: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return float(((model.upper_forward(feats)[:, 0] > 0) == labels.bool()).float().mean())


@torch.no_grad()
def confidence(model: AppModel, feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean probability of the teacher's label: accuracy without the 1/n steps of a small set."""
    model.eval()
    prob = torch.sigmoid(model.upper_forward(feats)[:, 0])
    return float((labels * prob + (1 - labels) * (1 - prob)).mean())


GAIN_METRICS = {"accuracy": accuracy, "confidence": confidence}


def adam_steps(model: AppModel, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               iters: int, batch: int, generator: torch.Generator) -> None:
    """`iters` Adam steps above the stem on random batches of (x, y)."""
    model.train()
    for _ in range(iters):
        idx = torch.randint(len(x), (min(batch, len(x)),), generator=generator)
        loss = F.binary_cross_entropy_with_logits(model.upper_forward(x[idx])[:, 0], y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@dataclass
class WindowData:
    """One camera's teacher-labelled samples of the last window (stem features) and live frames."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_live: torch.Tensor
    y_live: torch.Tensor


@dataclass
class CameraJob:
    """A camera's continuously retrained model: weights and Adam state persist across windows."""

    name: str
    model: AppModel
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    data: WindowData | None = None

    best: tuple[dict[str, torch.Tensor], dict[str, object]] | None = None  # keep-best checkpoint

    def save_best(self) -> None:
        """Snapshot model and Adam state as this job's best checkpoint."""
        self.best = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict()))

    def restore_best(self) -> None:
        """Go back to the best checkpoint (model and Adam state)."""
        assert self.best is not None
        self.model.load_state_dict(self.best[0])
        self.optimizer.load_state_dict(copy.deepcopy(self.best[1]))

    def train_micro_window(self, iters: int, batch: int, metric: str) -> float:
        """`iters` Adam steps on this camera's training frames; returns the held-out metric after."""
        assert self.data is not None
        d = self.data
        adam_steps(self.model, self.optimizer, d.x_train, d.y_train, iters, batch, self.generator)
        return GAIN_METRICS[metric](self.model, d.x_val, d.y_val)


@dataclass
class _JobCheckpoints:
    """Routes the scheduler's keep-best save/restore calls to the camera job they name."""

    jobs: dict[str, CameraJob]

    def save(self, job_id: str) -> None:
        self.jobs[job_id].save_best()

    def restore(self, job_id: str) -> None:
        self.jobs[job_id].restore_best()


def window_data(
    base: SegmentedNet, cam: CameraTimeline, cls: int, w: int, args: argparse.Namespace
) -> WindowData:
    """Training buffer: samples of the last `--buffer` windows, minus every 3rd block of samples of
    the newest window (the held-out set that measures gains); live frames: window w."""
    span = int(args.window_s * cam.fps)
    first = max(0, w - args.buffer)
    sampled = np.concatenate([np.linspace(v * span, (v + 1) * span - 1, args.samples).astype(int) for v in range(first, w)])
    newest = np.arange(len(sampled)) - (len(sampled) - args.samples)  # position within the newest window, < 0 before
    is_val = (newest >= 0) & ((newest // args.val_block) % 3 == 2)
    live = np.arange(w * span, (w + 1) * span, args.eval_stride)
    presence = cam.presence()[:, cls].astype(np.float32)
    feats = stem_features(base, args.branchpoint, cam.frames(np.concatenate([sampled, live])), args.size)
    y = torch.from_numpy(presence[np.concatenate([sampled, live])])
    n = len(sampled)
    tr, va = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    return WindowData(feats[tr], y[tr], feats[va], y[va], feats[n:], y[n:])


@torch.no_grad()
def agreement_prior(model: AppModel, d: WindowData, args: argparse.Namespace, agreement: Agreement, w: int,
                    prior_from: str) -> float:
    """The prior a RetrainWorker reports to the Planner for the deployed model, before any training:
    `live_stats.Agreement` fed the newest window's teacher-labelled samples in batches of 8, as the
    live feed sends them; `prior_from` "agreement": its drop (reference level minus now), "headroom":
    `headroom_prior` of its agreement now."""
    k = args.samples - len(d.x_val)  # the newest window's training samples are the last k
    x, y = torch.cat([d.x_train[-k:], d.x_val]), torch.cat([d.y_train[-k:], d.y_val])
    model.eval()
    correct = ((model.upper_forward(x)[:, 0] > 0) == y.bool()).float().numpy()
    for i in range(0, len(correct), 8):
        agreement.add(w * args.window_s, float(correct[i : i + 8].mean()), version=1)
    assert agreement.reference is not None and agreement.now is not None
    if prior_from == "headroom":
        return headroom_prior(agreement.now)
    return max(0.0, agreement.reference - agreement.now)


def run_policy(policy: str, data: dict[tuple[int, int], WindowData], args: argparse.Namespace) -> list[dict[str, object]]:
    """Simulate every update window under `policy`; one row per (camera, window)."""
    estimator, prior_from = ESTIMATOR_OF.get(policy, "curve"), PRIOR_OF.get(policy, args.drop_from)
    policy_fn = SLICING_POLICIES["gain" if policy in ESTIMATOR_OF else policy]
    planning = {"estimator": estimator, "prior_rate": args.prior_rate, "prior_weight": args.prior_weight,
                "min_windows": args.min_windows}
    jobs: dict[str, CameraJob] = {}
    for c in range(args.cameras):
        model = copy.deepcopy(args.initial_models[c])  # training only runs above the stem (upper_forward)
        opt = torch.optim.Adam(model.trainable_parameters(), lr=args.lr)
        jobs[f"cam{c}"] = CameraJob(f"cam{c}", model, opt, torch.Generator().manual_seed(args.seed * 100 + c))
    rows: list[dict[str, object]] = []
    elapsed = 0
    after_update: dict[str, float] = {}  # held-out metric of each job when its last update window ended
    agreements = {name: Agreement() for name in jobs}
    for w in range(1, args.windows + 1):
        for c, job in enumerate(jobs.values()):
            job.data = data[(c, w)]
        metric = GAIN_METRICS[args.gain_metric]
        initial = {name: metric(job.model, job.data.x_val, job.data.y_val) for name, job in jobs.items()}  # type: ignore[union-attr]
        if prior_from != "heldout":
            drops = {name: agreement_prior(job.model, job.data, args, agreements[name], w, prior_from)  # type: ignore[arg-type]
                     for name, job in jobs.items()}
        else:
            drops = {name: max(0.0, after_update[name] - initial[name]) for name in after_update}
        run = run_micro_windows(
            policy_fn, initial, args.micro_windows,
            lambda name: jobs[name].train_micro_window(args.iters, args.batch, args.gain_metric),
            elapsed_windows=elapsed, checkpoints=_JobCheckpoints(jobs) if args.keep_best else None,
            prior_gains=drops, **planning,
        )
        elapsed += len(run.order)
        after_update = dict(run.final_accuracy)
        for c, (name, job) in enumerate(jobs.items()):
            d = job.data
            assert d is not None
            rows.append({
                "policy": policy, "camera": name, "app": args.apps[c], "static": c in args.static_ids, "window": w,
                "micro_windows": run.windows_for(name), "val_gain": run.final_accuracy[name] - initial[name],
                "live_accuracy": accuracy(job.model, d.x_live, d.y_live),
            })
    return rows


def group_mean(per_cam: list[float], cams: list[int]) -> float | None:
    """Mean accuracy over `cams` (None for an empty group, e.g. no static cameras)."""
    return float(np.mean([per_cam[c] for c in cams])) if cams else None


def summarise(rows: list[dict[str, object]], args: argparse.Namespace) -> list[dict[str, object]]:
    """Per policy: fleet mean (over cameras, each averaged over windows), worst camera and the
    static / drifting group means, which show where a policy's micro-windows paid off."""
    drifting = [c for c in range(args.cameras) if c not in args.static_ids]
    out = []
    for policy in args.policies:
        sel = [r for r in rows if r["policy"] == policy]
        per_cam = [float(np.mean([r["live_accuracy"] for r in sel if r["camera"] == f"cam{c}"])) for c in range(args.cameras)]
        out.append({
            "policy": policy, "cameras": args.cameras, "mean_accuracy": float(np.mean(per_cam)),
            "min_camera_accuracy": float(np.min(per_cam)),
            "static_accuracy": group_mean(per_cam, args.static_ids),
            "drifting_accuracy": group_mean(per_cam, drifting),
            "static_micro_windows": sum(int(r["micro_windows"]) for r in sel if r["static"]),
            "windows": args.windows, "micro_windows_per_window": args.micro_windows,
        })
    return out


def static_camera_ids(cameras: int, static: int) -> list[int]:
    """Which cameras are static: spread evenly over the fleet, so they get a mix of the apps
    (camera c's app is class (c + seed) mod 5), not a block of neighbouring ones."""
    return sorted({round(i * cameras / static) for i in range(static)})


def adapt_to_scene(model: AppModel, base: SegmentedNet, cam: CameraTimeline, cls: int, args: argparse.Namespace) -> None:
    """Adapt a static camera's deployed model to its scene before the run: `--adapt-static` Adam
    steps on every frame of the video before the first update window (window 0, which no policy
    trains or scores on), ground-truth labels. The camera then starts the run adapted, as one whose
    model was retrained on its stable scene earlier, and should gain little from more retraining."""
    frames = np.arange(int(args.window_s * cam.fps))
    x = stem_features(base, args.branchpoint, cam.frames(frames), args.size)
    y = torch.from_numpy(cam.presence()[frames, cls].astype(np.float32))
    opt = torch.optim.Adam(model.trainable_parameters(), lr=args.lr)
    adam_steps(model, opt, x, y, args.adapt_static, args.batch, torch.Generator().manual_seed(args.seed * 100 + 99))


def setup(args: argparse.Namespace) -> dict[tuple[int, int], WindowData]:
    """Worlds, pretrained base and every camera's window data; sets `args.apps`, `args.initial_models`
    and `args.static_ids` (the cameras taken from the one-scene world; with `--adapt-static` their
    models are adapted to their scene before the run)."""
    torch.manual_seed(args.seed)
    config = WorldConfig(seed=args.seed, num_cameras=args.cameras + 4, height=args.size, width=args.size,
                         duration_s=max(300.0, (args.windows + 1) * args.window_s))
    world = World(dataclasses.replace(config, segment_s=args.drift_segment_s) if args.drift_segment_s else config)
    stable = {"segment_s": (args.static_segment_s,) * 2} if args.static_segment_s else {}
    static_world = World(dataclasses.replace(config, scenes_per_camera=1, **stable))
    base = pretrained_base(world, args)
    args.static_ids = static_camera_ids(args.cameras, args.static_cameras)
    args.apps = [CLASSES[(c + args.seed) % len(CLASSES)] for c in range(args.cameras)]
    cams = [(static_world if c in args.static_ids else world).camera(c) for c in range(args.cameras)]
    args.initial_models = [app_model(base, CLASSES.index(a), args.branchpoint) for a in args.apps]
    for c in args.static_ids if args.adapt_static else ():
        adapt_to_scene(args.initial_models[c], base, cams[c], CLASSES.index(args.apps[c]), args)
    return {(c, w): window_data(base, cams[c], CLASSES.index(args.apps[c]), w, args)
            for c in range(args.cameras) for w in range(1, args.windows + 1)}


def add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    """The fleet's flags (world, budget, training, policies); `finish_fleet_arguments` fills defaults."""
    parser.add_argument("--seed", type=int, default=0, help="world and training seed")
    parser.add_argument("--cameras", type=int, help="cameras sharing the GPU (default 8)")
    parser.add_argument("--windows", type=int, help="update windows simulated (default 6 quick / 18 full)")
    parser.add_argument("--window-s", type=float, default=30.0, help="update window length (video seconds)")
    parser.add_argument("--micro-windows", type=int,
                        help="micro-windows per update window (GPU budget; default 2 per camera)")
    parser.add_argument("--iters", type=int, default=3, help="Adam steps per micro-window")
    parser.add_argument("--batch", type=int, default=16, help="training batch size")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    parser.add_argument("--samples", type=int, default=60, help="teacher-labelled samples per camera and window")
    parser.add_argument("--buffer", type=int, default=2, help="windows of samples kept for training")
    parser.add_argument("--static-cameras", type=int, default=0,
                        help="this many cameras (spread evenly) stay in one scene type (scenes_per_camera=1); "
                             "the rest drift through 4 as usual")
    parser.add_argument("--adapt-static", type=int, default=0,
                        help="Adam steps that adapt each static camera's model to its scene before the run "
                             "(on the frames of the video before the first window); 0: static cameras start "
                             "unadapted like the drifting ones")
    parser.add_argument("--static-segment-s", type=float, default=0.0,
                        help="static cameras show one segment this long (one lighting ramp and fog level, "
                             "e.g. 100000: a stable scene); 0: the world's segments (each visit relit)")
    parser.add_argument("--drift-segment-s", type=lambda v: tuple(float(x) for x in v.split(",")),
                        help="MIN,MAX seconds a drifting camera stays in one scene (default: the world's 45,120)")
    parser.add_argument("--drop-from", choices=("headroom", "agreement", "heldout"), default="agreement",
                        help="the slicing prior: the deployed model's disagreement with the teacher on the "
                             "newest samples (headroom_prior, as RetrainWorkers report it to the Planner), its "
                             "agreement drop (live_stats.Agreement reference - now), or its held-out metric's "
                             "drop since the last update window ended")
    parser.add_argument("--gain-metric", choices=sorted(GAIN_METRICS), default="accuracy",
                        help="what the in-band profiler measures on the held-out samples")
    parser.add_argument("--keep-best", action="store_true",
                        help="every policy's jobs keep their best checkpoint: a window that lowers the "
                             "held-out metric is rolled back (RECL's safety checker, per micro-window)")
    parser.add_argument("--prior-rate", type=float, default=0.7,
                        help="gain-driven: decay of a job's expected gain per window granted")
    parser.add_argument("--prior-weight", type=float, default=4.0,
                        help="policy gain: windows of measured gains the drop prior is worth")
    parser.add_argument("--min-windows", type=int, default=1,
                        help="gain-driven: windows every job gets first in each update window")
    parser.add_argument("--val-block", type=int, default=10,
                        help="held-out samples come in blocks of this many consecutive samples (every 3rd block)")
    parser.add_argument("--eval-stride", type=int, default=5, help="score every k-th live frame")
    parser.add_argument("--branchpoint", type=int, default=3, help="frozen stem segments (tiny_cnn has 6)")
    parser.add_argument("--size", type=int, default=64, help="frame and model input resolution")
    parser.add_argument("--pretrain-frames", type=int, help="pretraining frames per camera (default 400 / 800)")
    parser.add_argument("--pretrain-epochs", type=int, default=4, help="pretraining epochs of the base")
    parser.add_argument("--policies", default="gain,round_robin,equal_share",
                        help=f"comma-separated, from {sorted(POLICY_LABELS)}")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; tiny models train fastest on one (0: torch's default)")


def finish_fleet_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, quick: bool) -> None:
    """Quick / full defaults and validation of the flags added by `add_fleet_arguments`."""
    args.windows = args.windows or (6 if quick else 18)
    args.cameras = args.cameras or 8
    args.micro_windows = args.micro_windows or 2 * args.cameras
    args.pretrain_frames = args.pretrain_frames or (400 if quick else 800)
    args.policies = args.policies.split(",")
    if not 0 <= args.static_cameras <= args.cameras:
        parser.error(f"--static-cameras must be in [0, {args.cameras}]")
    unknown = set(args.policies) - set(POLICY_LABELS)
    if unknown:
        parser.error(f"unknown policies {sorted(unknown)}")


def measure(args: argparse.Namespace) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Every policy on the same fleet: (summary rows with `vs_round_robin_points`, per camera-window rows)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    data = setup(args)
    rows: list[dict[str, object]] = []
    for policy in args.policies:
        rows += run_policy(policy, data, args)
    summary = summarise(rows, args)
    by_policy = {str(s["policy"]): float(s["mean_accuracy"]) for s in summary}
    for s in summary:
        s["vs_round_robin_points"] = 100 * (float(s["mean_accuracy"]) - by_policy.get("round_robin", float("nan")))
    return summary, rows
