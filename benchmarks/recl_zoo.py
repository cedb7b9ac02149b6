"""RECL model zoo vs per-camera continuous retraining, on cameras whose scenes recur.

Cameras of the drifting synthetic world cycle through "haunts" drawn from a small shared scene
pool, so a scene a camera sees now was often seen before, by itself or by another camera. Every
camera runs the same binary app ("is <class> present") on a tiny_cnn AppModel whose base was
pretrained on a *different* world (another scene pool): the generic model is weak everywhere.

Per update window (`--window-s` of video) and camera, both schemes get the same teacher (oracle)
labels and the same retraining budget (`--iters` Adam steps above the frozen stem on the samples of
the last `--buffer` windows); they differ only in which model is deployed:

- **no zoo** (Ekya/AMS-like): one model per camera, retrained only on that camera's frames; the
  model retrained during window w-1 is deployed for window w.
- **zoo** (RECL): at the start of window w the teacher labels `--probe` fresh frames of the first
  `--probe-s` seconds; `ModelZoo.select` scores the gating network's top-K experts + the camera's
  running (last retrained) model on them (safety check) and deploys the best; a tie keeps the
  running model, so a zoo expert is reused only when it is measurably better. The deployed model is retrained
  during the window; the retrained model is offered for admission (it must beat every other
  candidate by alpha on the next window's fresh frames), admitted experts grow the gating network,
  and `prune()` runs every window (eta selections in the last q).

Live accuracy of the deployed model is measured on every `--eval-stride`-th frame of the window
(ground truth). Time-to-recover after a scene change: the windows from the first window starting
after the change until a window's accuracy reaches the no-zoo model's settled accuracy on that
segment (its last full window there) minus `--recover-tol`, times `--window-s`; changes to a scene
some camera already saw before ("recurring") are where a zoo can help.

    python benchmarks/recl_zoo.py --quick --out out/recl/recl_zoo_quick.json
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from slicing_fleet import accuracy, app_model, pretrained_base, stem_features

from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.learning.zoo import ModelZoo, ZooConfig, ZooStore, expert_from_model
from stemcell.models import AppModel, SegmentedNet
from stemcell.world import CLASSES, World, WorldConfig

SCHEMES = ("no_zoo", "zoo")


@dataclass
class CameraData:
    """One camera's frames for the whole run, stem features computed once (the stem is frozen)."""

    frames: np.ndarray  # uint8 frames at the sampled indices (probe + training samples)
    index: dict[int, int]  # frame number -> row in `frames` / `feats`
    feats: torch.Tensor
    labels: np.ndarray  # float32 presence of the app's class, every frame of the timeline
    scenes: np.ndarray  # scene id of every frame


@dataclass
class Deployed:
    """What a camera runs in one scheme: a model that keeps being retrained, and its Adam state."""

    model_id: str
    model: AppModel
    optimizer: torch.optim.Optimizer
    created_from: str
    retrained: int = 0  # versions produced by retraining on this camera


def new_deployed(model_id: str, model: AppModel, created_from: str, lr: float) -> Deployed:
    return Deployed(model_id, model, torch.optim.Adam(model.trainable_parameters(), lr=lr), created_from)


def window_indices(w: int, span: int, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probe frames (start of window w), training samples (all of window w), live frames."""
    probe = np.linspace(w * span, w * span + int(args.probe_s * args.fps) - 1, args.probe).astype(int)
    samples = np.linspace(w * span, (w + 1) * span - 1, args.samples).astype(int)
    live = np.arange(w * span, (w + 1) * span, args.eval_stride)
    return probe, samples, live


def camera_data(base: SegmentedNet, world: World, c: int, cls: int, args: argparse.Namespace) -> CameraData:
    cam = world.camera(c)
    span = int(args.window_s * cam.fps)
    wanted = sorted({int(i) for w in range(args.windows) for part in window_indices(w, span, args) for i in part})
    frames = cam.frames(np.asarray(wanted))
    feats = torch.cat([stem_features(base, args.branchpoint, frames[i : i + 512], args.size) for i in range(0, len(frames), 512)])
    return CameraData(frames, {f: r for r, f in enumerate(wanted)}, feats,
                      cam.presence()[:, cls].astype(np.float32), cam.scene_ids())


def retrain(dep: Deployed, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace, gen: torch.Generator) -> None:
    dep.model.train()
    for _ in range(args.iters):
        idx = torch.randint(len(x), (min(args.batch, len(x)),), generator=gen)
        loss = F.binary_cross_entropy_with_logits(dep.model.upper_forward(x[idx])[:, 0], y[idx])
        dep.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        dep.optimizer.step()
    dep.retrained += 1


def run_scheme(scheme: str, base: SegmentedNet, initial: AppModel, data: list[CameraData], args: argparse.Namespace,
               zoo_root: Path) -> tuple[list[dict[str, object]], dict[str, Any]]:
    """Simulate every window under `scheme`; one row per (camera, window) plus zoo statistics."""
    span = int(args.window_s * args.fps)
    cams = [f"cam{c}" for c in range(args.cameras)]
    deployed = {name: new_deployed("generic", copy.deepcopy(initial), "generic", args.lr) for name in cams}
    gens = {name: torch.Generator().manual_seed(args.seed * 100 + c) for c, name in enumerate(cams)}
    zoo = None
    if scheme == "zoo":
        cfg = ZooConfig(k=args.k, alpha=args.alpha, gamma=args.gamma, eta=args.eta, q=args.q, input_size=args.size,
                        gating_width=8, gating_steps=args.gating_steps, gating_finetune_steps=args.gating_finetune_steps,
                        seed=args.seed)
        zoo = ModelZoo(ZooStore(zoo_root), base, cfg)
    rows: list[dict[str, object]] = []
    stats: dict[str, Any] = {"selections": 0, "zoo_selections": 0, "cross_camera_reuse": 0, "admitted": 0, "pruned": 0,
             "experts_over_time": []}
    pending: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # camera -> training frames/labels of its last retraining
    for w in range(args.windows):
        for c, name in enumerate(cams):
            d = data[c]
            probe, samples, live = window_indices(w, span, args)
            dep = deployed[name]
            chosen_from = dep.created_from
            if zoo is not None:
                probe_rows = [d.index[i] for i in probe]
                # the running model was retrained in place, so it is both `current` and `last_retrained`;
                # as `current` it keeps the camera on its own model when a zoo expert only ties it
                last = (dep.model_id, dep.model)
                sel = zoo.select(name, args.app, d.frames[probe_rows], d.labels[probe][:, None], current=last,
                                 last_retrained=last)
                stats["selections"] += 1
                if name in pending:
                    frames_t, labels_t = pending.pop(name)
                    expert = expert_from_model(dep.model, expert_id=dep.model_id, app=args.app, version=dep.retrained,
                                               created_from=name, created_at=float(w))
                    if zoo.offer(sel, expert, frames_t, labels_t).admit:
                        stats["admitted"] += 1
                if sel.from_zoo:
                    meta = zoo.store.get(sel.chosen).meta
                    stats["zoo_selections"] += 1
                    stats["cross_camera_reuse"] += int(meta.created_from != name)
                    chosen_from = meta.created_from
                    if sel.chosen != dep.model_id:  # a stored expert replaces the running model
                        dep = new_deployed(sel.chosen, sel.model, meta.created_from, args.lr)  # type: ignore[arg-type]
                        deployed[name] = dep
                stats["pruned"] += len(zoo.prune())
            rows_live = [d.index[i] for i in live]
            live_acc = accuracy(dep.model, d.feats[rows_live], torch.from_numpy(d.labels[live]))
            rows.append({"scheme": scheme, "camera": name, "window": w, "t_s": w * args.window_s,
                         "scene": int(np.bincount(d.scenes[live]).argmax()), "accuracy": live_acc,
                         "model": dep.model_id, "model_from": chosen_from})
            # retrain the deployed model on the window's samples (+ the previous windows' in the buffer)
            buf = np.concatenate([window_indices(v, span, args)[1] for v in range(max(0, w - args.buffer + 1), w + 1)])
            x = d.feats[[d.index[i] for i in buf]]
            y = torch.from_numpy(d.labels[buf])
            retrain(dep, x, y, args, gens[name])
            if zoo is not None:  # every retrained version is a new model (an expert is a snapshot)
                dep.model_id, dep.created_from = f"{name}-w{w}", name
            pending[name] = (d.frames[[d.index[i] for i in samples]], d.labels[samples][:, None])
        if zoo is not None:
            stats["experts_over_time"].append(len(zoo.expert_ids(args.app)))
    stats["experts"] = len(zoo.expert_ids(args.app)) if zoo is not None else args.cameras
    return rows, stats


def scene_changes(data: list[CameraData], args: argparse.Namespace) -> list[dict[str, object]]:
    """Every scene change inside the run: camera, first window fully after it, windows until the
    next change, the new scene, and whether some camera saw that scene before (recurring)."""
    span = int(args.window_s * args.fps)
    seen: dict[int, float] = {}  # scene -> first time any camera showed it
    for d in data:
        for s in np.unique(d.scenes[: args.windows * span]):
            seen[int(s)] = min(seen.get(int(s), np.inf), float(np.argmax(d.scenes == s)))
    changes = []
    for c, d in enumerate(data):
        scenes = d.scenes[: args.windows * span]
        starts = np.flatnonzero(np.diff(scenes)) + 1
        bounds = list(starts) + [len(scenes)]
        for start, stop in zip(bounds[:-1], bounds[1:]):
            w0, w_end = -(-int(start) // span), int(stop) // span  # full windows of the segment: [w0, w_end)
            if w_end - w0 < 2:
                continue
            changes.append({"camera": f"cam{c}", "frame": int(start), "w0": w0, "w_end": w_end,
                            "scene": int(scenes[start]), "recurring": seen[int(scenes[start])] < start})
    return changes


def recovery(rows: list[dict[str, object]], changes: list[dict[str, object]], args: argparse.Namespace) -> list[dict[str, object]]:
    """Per change and scheme: seconds (whole windows) until accuracy reaches the no-zoo settled level."""
    acc = {(r["scheme"], r["camera"], r["window"]): float(r["accuracy"]) for r in rows}  # type: ignore[arg-type]
    out = []
    for ch in changes:
        cam, w0, w_end = ch["camera"], int(ch["w0"]), int(ch["w_end"])  # type: ignore[arg-type]
        target = acc[("no_zoo", cam, w_end - 1)] - args.recover_tol
        for scheme in SCHEMES:
            hit = next((w for w in range(w0, w_end) if acc[(scheme, cam, w)] >= target), w_end - 1)
            out.append({**ch, "scheme": scheme, "target": target, "recovery_s": (hit - w0 + 1) * args.window_s,
                        "first_window_accuracy": acc[(scheme, cam, w0)]})
    return out


def summarise(rows: list[dict[str, object]], rec: list[dict[str, object]], stats: dict[str, dict[str, Any]],
              args: argparse.Namespace) -> list[dict[str, object]]:
    out = []
    for scheme in SCHEMES:
        sel = [float(r["accuracy"]) for r in rows if r["scheme"] == scheme]  # type: ignore[arg-type]
        mine = [r for r in rec if r["scheme"] == scheme]
        recurring = [float(r["recovery_s"]) for r in mine if r["recurring"]]  # type: ignore[arg-type]
        st = stats[scheme]
        out.append({
            "scheme": scheme, "cameras": args.cameras, "mean_accuracy": float(np.mean(sel)),
            "experts": st["experts"], "cross_camera_reuse": st["cross_camera_reuse"],
            "zoo_selections": st["zoo_selections"], "selections": st["selections"], "admitted": st["admitted"],
            "pruned": st["pruned"], "scene_changes": len(mine), "recurring_changes": len(recurring),
            "recovery_s_mean": float(np.mean([float(r["recovery_s"]) for r in mine])) if mine else float("nan"),  # type: ignore[arg-type]
            "recovery_s_recurring": float(np.mean(recurring)) if recurring else float("nan"),
            "recovered_in_one_window": float(np.mean([float(r["recovery_s"]) <= args.window_s for r in mine])) if mine else float("nan"),  # type: ignore[arg-type]
            "first_window_accuracy": float(np.mean([float(r["first_window_accuracy"]) for r in mine])) if mine else float("nan"),  # type: ignore[arg-type]
            "windows": args.windows, "window_s": args.window_s,
        })
    return out


def plot(rows: list[dict[str, object]], summary: list[dict[str, object]], stats: dict[str, dict[str, Any]],
         args: argparse.Namespace, path: Path) -> None:
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
    times = [w * args.window_s for w in range(args.windows)]
    for s in summary:
        scheme = str(s["scheme"])
        acc = [np.mean([float(r["accuracy"]) for r in rows if r["scheme"] == scheme and r["window"] == w])  # type: ignore[arg-type]
               for w in range(args.windows)]
        ax.plot(times, acc, "-o", ms=3, label=f"{scheme}: mean {s['mean_accuracy']:.3f}, "
                f"recovery {s['recovery_s_mean']:.0f} s")
    ax.set_xlabel("video time (s)")
    ax.set_ylabel(f"mean live accuracy over {args.cameras} cameras")
    ax.set_title("deployed model accuracy per update window")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    bx.plot(times, stats["zoo"]["experts_over_time"], "-", label="experts in the zoo")
    bx.set_xlabel("video time (s)")
    bx.set_ylabel("experts")
    bx.set_title(f"zoo size (cross-camera reuse: {stats['zoo']['cross_camera_reuse']} of "
                 f"{stats['zoo']['selections']} selections)")
    bx.grid(alpha=0.3)
    fig.suptitle(f"RECL model zoo: {args.cameras} cameras, {args.scene_types} scene types, {args.window_s:.0f} s windows, "
                 f"{args.iters} Adam steps per window")
    save_plot(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer cameras and windows (< 60 s on 2 cores)")
    parser.add_argument("--out", type=Path, default=Path("out/recl/recl_zoo.json"), help="JSON path (PNG/Parquet beside)")
    parser.add_argument("--seed", type=int, default=0, help="world and training seed")
    parser.add_argument("--cameras", type=int, help="cameras (default 4 quick / 8 full)")
    parser.add_argument("--windows", type=int, help="update windows (default 16 quick / 60 full)")
    parser.add_argument("--window-s", type=float, default=10.0, help="update window length (video seconds)")
    parser.add_argument("--fps", type=float, default=10.0, help="camera frame rate")
    parser.add_argument("--scene-types", type=int, default=5, help="scene pool shared by the cameras")
    parser.add_argument("--scenes-per-camera", type=int, default=3, help="haunts per camera")
    parser.add_argument("--app", default="car", choices=CLASSES, help="the class-presence app every camera runs")
    parser.add_argument("--probe", type=int, default=12, help="fresh teacher-labelled frames for the safety check")
    parser.add_argument("--probe-s", type=float, default=2.0, help="...taken from the first seconds of the window")
    parser.add_argument("--samples", type=int, default=30, help="teacher-labelled training samples per window")
    parser.add_argument("--buffer", type=int, default=2, help="windows of samples retrained on")
    parser.add_argument("--iters", type=int, default=12, help="Adam steps per camera and window (retraining budget)")
    parser.add_argument("--batch", type=int, default=16, help="training batch size")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    parser.add_argument("--eval-stride", type=int, default=2, help="score every k-th live frame")
    parser.add_argument("--recover-tol", type=float, default=0.03, help="recovered: within this of the settled accuracy")
    parser.add_argument("--k", type=int, default=10, help="gating top-K passed to the safety check")
    parser.add_argument("--alpha", type=float, default=0.02, help="admission margin")
    parser.add_argument("--gamma", type=int, default=2, help="admission queue flush size")
    parser.add_argument("--eta", type=int, default=4, help="prune experts picked fewer than eta times...")
    parser.add_argument("--q", type=int, default=200, help="...in the last q selections")
    parser.add_argument("--gating-steps", type=int, default=100, help="gating training steps (from scratch)")
    parser.add_argument("--gating-finetune-steps", type=int, default=30, help="gating fine-tune steps after growth")
    parser.add_argument("--branchpoint", type=int, default=3, help="frozen stem segments (tiny_cnn has 6)")
    parser.add_argument("--size", type=int, default=64, help="frame and model input resolution")
    parser.add_argument("--pretrain-frames", type=int, help="pretraining frames per camera (default 300 / 600)")
    parser.add_argument("--pretrain-epochs", type=int, default=3, help="pretraining epochs of the base")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    args.cameras = args.cameras or (4 if args.quick else 8)
    args.windows = args.windows or (16 if args.quick else 60)
    args.pretrain_frames = args.pretrain_frames or (300 if args.quick else 600)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    duration = max(60.0, (args.windows + 1) * args.window_s)
    config = WorldConfig(seed=args.seed, num_cameras=args.cameras, height=args.size, width=args.size, fps=args.fps,
                         duration_s=duration, num_scene_types=args.scene_types, scenes_per_camera=args.scenes_per_camera)
    world = World(config)
    # the generic model: pretrained on another world (another scene pool), as a model shipped to new sites
    other = World(replace(config, seed=args.seed + 1000, num_cameras=args.cameras + 4, num_scene_types=8,
                          scenes_per_camera=4, duration_s=300.0))
    base = pretrained_base(other, args)
    cls = CLASSES.index(args.app)
    initial = app_model(base, cls, args.branchpoint)
    data = [camera_data(base, world, c, cls, args) for c in range(args.cameras)]
    setup_s = time.perf_counter() - start
    rows: list[dict[str, object]] = []
    stats: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in SCHEMES:
            scheme_rows, stats[scheme] = run_scheme(scheme, base, initial, data, args, Path(tmp) / scheme)
            rows += scheme_rows
    changes = scene_changes(data, args)
    rec = recovery(rows, changes, args)
    summary = summarise(rows, rec, stats, args)
    print_table(summary, columns=["scheme", "cameras", "mean_accuracy", "experts", "cross_camera_reuse", "zoo_selections",
                                  "admitted", "pruned", "recovery_s_mean", "recovery_s_recurring",
                                  "recovered_in_one_window", "first_window_accuracy"],
                title="RECL zoo vs per-camera retraining: live accuracy and recovery after scene changes")
    by = {str(s["scheme"]): s for s in summary}
    elapsed = time.perf_counter() - start
    result = {
        "benchmark": "recl_zoo", "rows": summary, "per_camera_window": rows, "recoveries": rec,
        "with_zoo_recovery_s": by["zoo"]["recovery_s_mean"], "without_zoo_recovery_s": by["no_zoo"]["recovery_s_mean"],
        "with_zoo_recovery_s_recurring": by["zoo"]["recovery_s_recurring"],
        "without_zoo_recovery_s_recurring": by["no_zoo"]["recovery_s_recurring"],
        "goal_with_zoo_within_one_window": bool(by["zoo"]["recovery_s_recurring"] <= args.window_s),
        "accuracy_gain_points": 100 * (float(by["zoo"]["mean_accuracy"]) - float(by["no_zoo"]["mean_accuracy"])),
        "experts_over_time": stats["zoo"]["experts_over_time"],
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "setup_s": setup_s, "elapsed_s": elapsed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_results(result, args.out, rows=summary)
    plot(rows, summary, stats, args, args.out.with_suffix(".png"))
    print(f"zoo vs no zoo: {result['accuracy_gain_points']:+.2f} points; recovery (recurring scenes) "
          f"{result['with_zoo_recovery_s_recurring']:.1f} s vs {result['without_zoo_recovery_s_recurring']:.1f} s; "
          f"{elapsed:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
