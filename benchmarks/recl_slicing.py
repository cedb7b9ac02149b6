"""RECL gain-driven micro-window slicing vs round-robin (AMS) vs equal share (Ekya-like), measured.

Eight cameras on the drifting synthetic world share one GPU's retraining time. Every camera runs a
binary app ("is <class> present") on a tiny_cnn-based AppModel: the base is pretrained on 4
*other* cameras of the world (generic over all classes; they cover all or nearly all of the 8 scene
types), so each camera's model must adapt to its own scenes, objects and label priors.

Every update window (`--window-s` of video) each camera sends `--samples` frames of the window
that just ended, labelled by the (oracle) teacher; 2/3 are training frames, 1/3 measure accuracy.
The held-out third is every third *block* of `--val-block` consecutive samples, not every third
sample: neighbouring samples (0.5 s apart) are near-duplicates, so single held-out samples between
training samples reward memorising the window, and the in-band profiler then hands the GPU to the
jobs that overfit fastest (measured: gain-driven 2.9 points *below* round-robin that way).
The GPU has `--micro-windows` micro-windows per update window; one micro-window = `--iters` Adam
steps (batch `--batch`) on one camera's training frames. The policy decides in-band, after every
micro-window, which camera trains next (`stemcell.scheduling.slicing.run_micro_windows`). The
retrained models are deployed for the next update window, and their accuracy is measured on that
window's live frames (every `--eval-stride`-th frame, ground truth). All policies start from the
same models and see the same frames; only the allocation of micro-windows differs.

`--keep-best` turns on keep-best checkpoints for *every* policy (job mechanics, see
`run_micro_windows`): a micro-window that lowers the held-out metric is rolled back (model and Adam
state), so a job never deploys a model worse than its starting one on the held-out samples.

`--static-cameras K` mixes the fleet, as RECL's premise has it (retraining pays off unequally
across cameras): K cameras, spread evenly over the fleet (`static_camera_ids`: 2 -> cam0, cam4;
4 -> cam0, 2, 4, 6), are taken from a world with the same config and seed but
`scenes_per_camera=1`: same scene pool, segment boundaries, lighting ramps and fog levels, but
every segment shows the camera's one scene type. The base is still pretrained on cameras 8-11 of
the drifting world, so static cameras also start unadapted. Apps, labelling, held-out split,
budget, policies and evaluation are unchanged; the JSON records `static_cameras` and
`static_camera_names`, and per policy `static_accuracy`, `drifting_accuracy` (group means of the
per-camera accuracies) and `static_micro_windows` (micro-windows the static group got in the run).
K=0 (the default) reproduces the homogeneous figures below exactly.

Measured (full mode, 18 windows, seeds 0-4; gain-driven minus round-robin in accuracy points;
round-robin and equal share coincide here: both give every camera 2 of the 16 micro-windows):

    default (no keep-best)          +1.76  +0.36  -0.95  +1.77  +1.12   mean +0.81
    --keep-best                     +0.54  +0.51  -0.22  +0.07  -0.88   mean +0.00
    --keep-best --gain-metric confidence  +0.41 +0.43 +2.30 -0.51 +0.68 mean +0.66

The goal (gain-driven >= round-robin + 2 points) is *not* met: no variant reaches it on more
than one seed. Keep-best lifts round-robin more than gain-driven (+0.4 vs -0.4 points, mean over
seeds). Also measured and not better (mean over seeds 0-2): keeping the best checkpoint but
rolling back only when the update window ends (-1.7), the confidence metric alone (-1.4),
keep-best plus treating expected gains within the held-out standard error as 0 (+0.1; removed),
12 or 24 micro-windows per update window (seeds 0-1: -0.6, -2.7), and the paper's budget
(`--micro-windows 30 --iters 5`, seed 0: -0.3).

Why the gain signal has little to work with here (diagnostics in out/recl/): a job's first
micro-window in an update window re-fits it to the newest samples and carries most of the live
gain (quick seed 0, round-robin: +5.5 points on average, corr. 0.68 with its held-out gain); its
second adds +2.3, later ones ~0. Round-robin already gives every job its second window, so
gain-driven can only win by moving second windows to the jobs whose second window is worth more,
and the probe does not predict that: corr(probe held-out gain, second window's live gain) = 0.03
and -0.13 (full, seeds 0 and 1, 144 pairs each); a low starting held-out accuracy predicts it
slightly better (-0.28, -0.16). Per-window live gains are dominated by SGD noise (sd ~15 points
for 3 Adam steps), measured on 20 held-out samples in 2 blocks: even with gains measured on the
*live* frames (an oracle), the gain-driven policy ended 2.6 points below round-robin (quick,
seeds 0 and 1). RECL's 7-9 points are end to end (zoo + scheduler); its scheduler alone is
reported +2.0 mAP over round-robin.

Mixed fleets (`--static-cameras K`, full mode, gain-driven minus round-robin in points; equal
share again coincides with round-robin; static cameras: K=2 cam0, cam4; K=4 cam0, 2, 4, 6;
K=6 all but cam2, cam6):

                                    seed 0 seed 1 seed 2 seed 3 seed 4  mean   static / drifting group,
                                                                               gain vs RR (mean over seeds)
    K=0 (homogeneous, as above)     +1.76  +0.36  -0.95  +1.77  +1.12   +0.81
    K=2                             -0.28  -0.72  -0.52  -1.42  -0.58   -0.70  .729/.728  .669/.678
    K=4                             +0.32  -1.42  +3.96  -0.23  -3.67   -0.21  .708/.700  .672/.684
    K=6 (seeds 0-2)                 -0.22  -1.90  +0.97                 -0.38  .729/.731  .694/.704
    K=4 --keep-best                 +0.64  -0.23  -0.43  -1.59  -2.47   -0.81  .705/.709  .676/.688

The goal is not met with a mixed fleet either: every mixed fleet's mean is below the homogeneous
fleet's +0.81, and with K=4 the spread over seeds (sd 2.8 points) dwarfs the mean difference.
Gain-driven moves some time away from the static cameras (K=4: 130 of their 144 round-robin
micro-windows, mean over seeds; 112-125 on seeds 0-2, 154 and 143 on seeds 3-4), yet the drifting
group ends *lower* than under round-robin (-1.2 points) while the static group ends higher (+0.8).

Why the mix gives the scheduler nothing to exploit: in this world a static camera is not an adapted
camera that stops gaining. With a fixed k micro-windows per camera and update window
(out/recl/hetero_group_alloc.py, K=4, full), the group means for k = 0..4 are:

    seed 0  static    .782 .822 .833 .827 .815    drifting  .741 .786 .768 .791 .763
    seed 2  static    .722 .724 .662 .704 .718    drifting  .705 .651 .653 .655 .655

On seed 0 static cameras gain as much from retraining as drifting ones (+4 to +5 points from k=0 to
k=1-2; presumably the head keeps tracking lighting, fog and each window's label prior, which vary
on a static camera too), both groups saturate at one micro-window per window, and beyond that the
curves move by +-3 points from SGD noise alone; on seed 2 retraining even hurts the drifting group
(-5 points). Handing the static group's whole budget to the drifting cameras (static 0, drifting 4)
scores .773 vs equal share's .800 on seed 0 and .689 vs .658 on seed 2: the best split differs per
seed and cannot be read from group membership, let alone from a 20-sample held-out probe.

    python benchmarks/recl_slicing.py --quick --out out/recl_slicing.json
    python benchmarks/recl_slicing.py --static-cameras 4 --seed 0 --out out/recl/hetero_full_k4_s0.json
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.models import AppModel, SegmentedNet, make_app_model, to_input
from stemcell.scheduling.slicing import SLICING_POLICIES, run_micro_windows
from stemcell.training import pretrain_base, world_frames
from stemcell.world import CLASSES, CameraTimeline, World, WorldConfig

POLICY_LABELS = {"gain": "gain-driven (RECL)", "gain_last": "gain-driven, last-gain estimator",
                 "round_robin": "round-robin (AMS)", "equal_share": "equal share (Ekya-like)"}


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
        self.model.train()
        for _ in range(iters):
            idx = torch.randint(len(d.x_train), (min(batch, len(d.x_train)),), generator=self.generator)
            loss = F.binary_cross_entropy_with_logits(self.model.upper_forward(d.x_train[idx])[:, 0], d.y_train[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
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


def run_policy(policy: str, data: dict[tuple[int, int], WindowData], args: argparse.Namespace) -> list[dict[str, object]]:
    """Simulate every update window under `policy`; one row per (camera, window)."""
    estimator = "last" if policy == "gain_last" else "curve"
    policy_fn = SLICING_POLICIES["gain" if policy == "gain_last" else policy]
    jobs: dict[str, CameraJob] = {}
    for c in range(args.cameras):
        model = copy.deepcopy(args.initial_models[c])  # training only runs above the stem (upper_forward)
        opt = torch.optim.Adam(model.trainable_parameters(), lr=args.lr)
        jobs[f"cam{c}"] = CameraJob(f"cam{c}", model, opt, torch.Generator().manual_seed(args.seed * 100 + c))
    rows: list[dict[str, object]] = []
    elapsed = 0
    for w in range(1, args.windows + 1):
        for c, job in enumerate(jobs.values()):
            job.data = data[(c, w)]
        metric = GAIN_METRICS[args.gain_metric]
        initial = {name: metric(job.model, job.data.x_val, job.data.y_val) for name, job in jobs.items()}  # type: ignore[union-attr]
        run = run_micro_windows(
            policy_fn, initial, args.micro_windows,
            lambda name: jobs[name].train_micro_window(args.iters, args.batch, args.gain_metric),
            elapsed_windows=elapsed, estimator=estimator, checkpoints=_JobCheckpoints(jobs) if args.keep_best else None,
        )
        elapsed += len(run.order)
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


def plot(rows: list[dict[str, object]], summary: list[dict[str, object]], args: argparse.Namespace, path: Path) -> None:
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
    times = [w * args.window_s for w in range(1, args.windows + 1)]
    for s in summary:
        policy = str(s["policy"])
        acc = [np.mean([r["live_accuracy"] for r in rows if r["policy"] == policy and r["window"] == w])
               for w in range(1, args.windows + 1)]
        ax.plot(times, acc, "-o", ms=3, label=f"{POLICY_LABELS[policy]}: mean {s['mean_accuracy']:.3f}")
    ax.set_xlabel("video time (s)")
    ax.set_ylabel("mean live accuracy over 8 cameras")
    ax.set_title("deployed model accuracy per update window")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    width = 0.8 / len(args.policies)
    for i, policy in enumerate(args.policies):
        grants = [sum(int(r["micro_windows"]) for r in rows if r["policy"] == policy and r["camera"] == f"cam{c}")
                  for c in range(args.cameras)]
        bx.bar(np.arange(args.cameras) + i * width, grants, width, label=POLICY_LABELS[policy])
    ticks = [f"cam{c}\n{a}" + ("\nstatic" if c in args.static_ids else "") for c, a in enumerate(args.apps)]
    bx.set_xticks(np.arange(args.cameras) + 0.4 - width / 2, ticks, fontsize=7)
    bx.set_ylabel("micro-windows granted (whole run)")
    bx.set_title("where the GPU time went")
    bx.legend(fontsize=7)
    fig.suptitle(f"RECL micro-window slicing: {args.cameras} cameras, {args.micro_windows} micro-windows "
                 f"x {args.iters} Adam steps per {args.window_s:.0f} s window")
    save_plot(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer windows (< 60 s on 2 cores)")
    parser.add_argument("--out", type=Path, default=Path("out/recl_slicing.json"), help="JSON path (PNG/Parquet beside)")
    parser.add_argument("--seed", type=int, default=0, help="world and training seed")
    parser.add_argument("--cameras", type=int, default=8, help="cameras sharing the GPU")
    parser.add_argument("--windows", type=int, help="update windows simulated (default 6 quick / 18 full)")
    parser.add_argument("--window-s", type=float, default=30.0, help="update window length (video seconds)")
    parser.add_argument("--micro-windows", type=int, default=16, help="micro-windows per update window (GPU budget)")
    parser.add_argument("--iters", type=int, default=3, help="Adam steps per micro-window")
    parser.add_argument("--batch", type=int, default=16, help="training batch size")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    parser.add_argument("--samples", type=int, default=60, help="teacher-labelled samples per camera and window")
    parser.add_argument("--buffer", type=int, default=2, help="windows of samples kept for training")
    parser.add_argument("--static-cameras", type=int, default=0,
                        help="this many cameras (spread evenly) stay in one scene type (scenes_per_camera=1); "
                             "the rest drift through 4 as usual")
    parser.add_argument("--gain-metric", choices=sorted(GAIN_METRICS), default="accuracy",
                        help="what the in-band profiler measures on the held-out samples")
    parser.add_argument("--keep-best", action="store_true",
                        help="every policy's jobs keep their best checkpoint: a window that lowers the "
                             "held-out metric is rolled back (RECL's safety checker, per micro-window)")
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
    args = parser.parse_args(argv)
    args.windows = args.windows or (6 if args.quick else 18)
    args.pretrain_frames = args.pretrain_frames or (400 if args.quick else 800)
    args.policies = args.policies.split(",")
    if not 0 <= args.static_cameras <= args.cameras:
        parser.error(f"--static-cameras must be in [0, {args.cameras}]")
    unknown = set(args.policies) - set(POLICY_LABELS)
    if unknown:
        parser.error(f"unknown policies {sorted(unknown)}")
    return args


def static_camera_ids(cameras: int, static: int) -> list[int]:
    """Which cameras are static: spread evenly over the fleet, so they get a mix of the apps
    (camera c's app is class (c + seed) mod 5), not a block of neighbouring ones."""
    return sorted({round(i * cameras / static) for i in range(static)})


def setup(args: argparse.Namespace) -> dict[tuple[int, int], WindowData]:
    """Worlds, pretrained base and every camera's window data; sets `args.apps`, `args.initial_models`
    and `args.static_ids` (the cameras taken from the one-scene world)."""
    torch.manual_seed(args.seed)
    config = WorldConfig(seed=args.seed, num_cameras=args.cameras + 4, height=args.size, width=args.size,
                         duration_s=max(300.0, (args.windows + 1) * args.window_s))
    world = World(config)
    static_world = World(dataclasses.replace(config, scenes_per_camera=1))
    base = pretrained_base(world, args)
    args.static_ids = static_camera_ids(args.cameras, args.static_cameras)
    args.apps = [CLASSES[(c + args.seed) % len(CLASSES)] for c in range(args.cameras)]
    args.initial_models = [app_model(base, CLASSES.index(a), args.branchpoint) for a in args.apps]
    cams = [(static_world if c in args.static_ids else world).camera(c) for c in range(args.cameras)]
    return {(c, w): window_data(base, cams[c], CLASSES.index(args.apps[c]), w, args)
            for c in range(args.cameras) for w in range(1, args.windows + 1)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = setup(args)
    setup_s = time.perf_counter() - start
    rows: list[dict[str, object]] = []
    for policy in args.policies:
        rows += run_policy(policy, data, args)
    summary = summarise(rows, args)
    by_policy = {str(s["policy"]): float(s["mean_accuracy"]) for s in summary}
    for s in summary:
        s["vs_round_robin_points"] = 100 * (float(s["mean_accuracy"]) - by_policy.get("round_robin", float("nan")))
    print_table(summary, title="RECL slicing: mean live accuracy over cameras and windows")
    elapsed = time.perf_counter() - start
    result = {
        "benchmark": "recl_slicing", "rows": summary, "per_camera_window": rows,
        "static_cameras": args.static_cameras, "static_camera_names": [f"cam{c}" for c in args.static_ids],
        "config": {k: v for k, v in vars(args).items() if k not in ("initial_models", "out")},
        "goal": "gain-driven >= round-robin + 2 accuracy points",
        "goal_met": by_policy.get("gain", 0.0) >= by_policy.get("round_robin", 1.0) + 0.02,
        "setup_s": setup_s, "elapsed_s": elapsed,
    }
    out = save_results(result, args.out, rows=rows)
    plot(rows, summary, args, out.with_suffix(".png"))
    print(f"\nwrote {out} (+ .parquet, .png) in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
