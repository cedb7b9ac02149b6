"""Measure the synthetic world: how fast it renders on one core, and how strongly it drifts.

(a) Generation: frames/s of one camera rendered sequentially and in random order, with OpenCV
    and the process pinned to one core; x real time is frames/s divided by the camera's fps.
(b) Drift: for each camera, tiny_cnn with a multi-label head (one logit per class; each binary
    app "is <class> present" reads its own logit), all segments trainable, is trained on the first 10% of the camera's timeline - every 5th 4-second chunk of
    it held out as the in-distribution "first window" - then scored on
    equal windows covering the remaining 90%. Later windows show scene types the model never
    saw (accuracy drops) and, sometimes, the ones it trained on coming back (it recovers); the
    split of later accuracy into seen vs unseen scene types shows the drift is the scenes'.

    python benchmarks/world_drift.py --quick --out out/world_drift.json
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch

from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.models import build_base, to_input
from stemcell.training.loop import batched, fit_bce
from stemcell.training.metrics import binary_metrics
from stemcell.world import CLASSES, CameraTimeline, World, WorldConfig


@contextmanager
def one_core() -> Iterator[int]:
    """Pin this process to one CPU and OpenCV to one thread (restored afterwards)."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    if cores:
        os.sched_setaffinity(0, {min(cores)})
    try:
        yield 1
    finally:
        cv2.setNumThreads(threads)
        if cores:
            os.sched_setaffinity(0, cores)


def measure_generation(config: WorldConfig, frames: int, seed: int) -> dict[str, float]:
    """Render `frames` frames from a fresh world (scene caches included in the time)."""
    with one_core():
        start = time.perf_counter()
        cam = World(config).camera(0)
        presence_s = time.perf_counter() - start
        n = min(frames, cam.num_frames)
        start = time.perf_counter()
        for i in range(n):
            cam.frame(i)
        sequential = n / (time.perf_counter() - start)
        order = np.random.default_rng(seed).integers(0, cam.num_frames, n)
        start = time.perf_counter()
        for i in order:
            cam.frame(int(i))
        random_access = n / (time.perf_counter() - start)
    return {
        "generation_fps": sequential,
        "generation_fps_random_access": random_access,
        "realtime_factor": sequential / config.fps,
        "timeline_build_s": presence_s,
        "frames_timed": n,
    }


def _inputs(cam: CameraTimeline, indices: np.ndarray, size: int, chunk: int = 512) -> torch.Tensor:
    return torch.cat([to_input(cam.frames(indices[i : i + chunk]), size) for i in range(0, len(indices), chunk)])


def drift_rows(cam: CameraTimeline, args: argparse.Namespace) -> list[dict[str, object]]:
    """Train on the camera's first 10%, score every app on the held-out chunks and each later window.

    One multi-label tiny_cnn per camera (a logit per class) serves all its binary apps: cheaper
    than one model per app, and the shared supervision makes the in-distribution model stronger.
    """
    n = cam.num_frames
    first_stop = int(round(0.1 * n))
    # Held-out part of the training window: every 5th chunk of `chunk_s`, so it spans the window's
    # scenes and events instead of being one short tail that may hold no object at all.
    chunk = max(1, int(args.chunk_s * cam.fps))
    first = np.arange(first_stop)
    held_out = (first // chunk) % 5 == 2
    train_idx = first[~held_out][:: args.train_stride]
    windows = [(0, first[held_out])]
    edges = np.linspace(first_stop, n, args.windows + 1).astype(int)
    windows += [(w + 1, np.arange(a, b, args.eval_stride)) for w, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]
    scenes = cam.scene_ids()
    seen = set(scenes[:first_stop].tolist())
    presence = cam.presence()
    torch.manual_seed(args.seed)
    model = build_base("tiny_cnn", num_classes=len(CLASSES), seed=args.seed).train()
    y_train = torch.from_numpy(presence[train_idx].astype(np.float32))
    fit_bce(model, model.parameters(), _inputs(cam, train_idx, args.input_size), y_train, epochs=args.epochs,
            lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    model.eval()
    logits = [batched(model, _inputs(cam, idx, args.input_size)).numpy() for _, idx in windows]
    rows: list[dict[str, object]] = []
    for app in args.classes:
        k = CLASSES.index(app)
        y = presence[:, k]
        majority = bool(y[train_idx].mean() >= 0.5)
        for (w, idx), z in zip(windows, logits):
            predicted = z[:, k] > 0
            m = binary_metrics(predicted, y[idx])
            is_seen = np.isin(scenes[idx], list(seen))
            rows.append({
                "camera": cam.camera, "app": app, "window": w,
                "start_s": float(cam.ts(int(idx[0]))), "stop_s": float(cam.ts(int(idx[-1]) + 1)),
                "frames": len(idx), "accuracy": m.accuracy, "f1": m.f1,
                "majority_accuracy": float(np.mean(y[idx] == majority)),
                "positive_fraction": float(y[idx].mean()), "seen_scene_fraction": float(is_seen.mean()),
                "correct_seen": int(np.sum((predicted == y[idx]) & is_seen)), "n_seen": int(is_seen.sum()),
                "scenes": ",".join(str(s) for s in sorted(set(scenes[idx].tolist()))),
            })
    return rows


def summarise(rows: list[dict[str, object]], num_windows: int) -> tuple[dict[str, float], list[dict[str, object]]]:
    def mean(key: str, sel: list[dict[str, object]]) -> float:
        return float(np.mean([r[key] for r in sel]))

    per_window = []
    for w in range(num_windows + 1):
        sel = [r for r in rows if r["window"] == w]
        per_window.append({
            "window": w, "kind": "train window (held out)" if w == 0 else "later",
            "start_s": mean("start_s", sel), "stop_s": mean("stop_s", sel), "accuracy": mean("accuracy", sel),
            "f1": mean("f1", sel), "majority_accuracy": mean("majority_accuracy", sel),
            "seen_scene_fraction": mean("seen_scene_fraction", sel),
        })
    later = [r for r in rows if r["window"] != 0]
    n_seen = sum(int(r["n_seen"]) for r in later)
    n_all = sum(int(r["frames"]) for r in later)
    correct_seen = sum(int(r["correct_seen"]) for r in later)
    correct_all = sum(float(r["accuracy"]) * int(r["frames"]) for r in later)
    first, rest = per_window[0], per_window[1:]
    summary = {
        "accuracy_first_window": first["accuracy"],
        "accuracy_later_mean": float(np.mean([r["accuracy"] for r in rest])),
        "accuracy_later_min": float(np.min([r["accuracy"] for r in rest])),
        "f1_first_window": first["f1"],
        "f1_later_mean": float(np.mean([r["f1"] for r in rest])),
        "accuracy_later_seen_scenes": correct_seen / n_seen if n_seen else float("nan"),
        "accuracy_later_unseen_scenes": (correct_all - correct_seen) / (n_all - n_seen) if n_all > n_seen else float("nan"),
        "majority_accuracy_later_mean": float(np.mean([r["majority_accuracy"] for r in rest])),
    }
    summary["accuracy_drop"] = summary["accuracy_first_window"] - summary["accuracy_later_mean"]
    summary["f1_drop"] = summary["f1_first_window"] - summary["f1_later_mean"]
    return summary, per_window


def plot(rows: list[dict[str, object]], per_window: list[dict[str, object]], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, key in zip(axes, ("accuracy", "f1")):
        for cam, app in sorted({(r["camera"], r["app"]) for r in rows}):
            sel = [r for r in rows if r["camera"] == cam and r["app"] == app]
            ax.plot([r["window"] for r in sel], [r[key] for r in sel], alpha=0.35, lw=1, label=f"cam{cam} {app}")
        ax.plot([r["window"] for r in per_window], [r[key] for r in per_window], "k-o", lw=2.5, label="mean")
        if key == "accuracy":
            ax.plot([r["window"] for r in per_window], [r["majority_accuracy"] for r in per_window], "k--", lw=1,
                    label="majority label")
        ax.axvspan(-0.4, 0.4, color="tab:green", alpha=0.12)
        ax.set_xlabel("window (0 = held-out chunks of the training window)")
        ax.set_ylabel(key)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle("tiny_cnn trained on a camera's first 10%: accuracy on later windows (scene drift)")
    save_plot(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller run (< 60 s on 2 cores)")
    parser.add_argument("--out", type=Path, default=Path("out/world_drift.json"), help="JSON path (PNG/Parquet beside)")
    parser.add_argument("--seed", type=int, default=0, help="world and training seed")
    parser.add_argument("--cameras", type=int, help="cameras to evaluate (default 2 quick / 4 full)")
    parser.add_argument("--classes", default=",".join(CLASSES), help="comma-separated apps (classes) to score")
    parser.add_argument("--duration", type=float, default=600.0, help="timeline length in seconds")
    parser.add_argument("--windows", type=int, default=10, help="later windows to score")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size")
    parser.add_argument("--input-size", type=int, help="model input resolution (default 48 quick / 64 full)")
    parser.add_argument("--chunk-s", type=float, default=4.0, help="held-out chunk length in the training window")
    parser.add_argument("--train-stride", type=int, help="use every k-th training frame (default 2 quick / 1 full)")
    parser.add_argument("--eval-stride", type=int, help="score every k-th later frame (default 6 quick / 2 full)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for training (1: small convs gain little from more, and it is robust on a shared box)")
    parser.add_argument("--gen-frames", type=int, help="frames timed for generation speed (default 1500 / 6000)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.cameras = args.cameras or (2 if quick else 4)
    args.classes = args.classes.split(",")
    args.train_stride = args.train_stride or (2 if quick else 1)
    args.input_size = args.input_size or (48 if quick else 64)
    args.eval_stride = args.eval_stride or (6 if quick else 2)
    args.gen_frames = args.gen_frames or (1500 if quick else 6000)
    unknown = set(args.classes) - set(CLASSES)
    if unknown:
        parser.error(f"unknown classes {sorted(unknown)}; choose from {CLASSES}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    config = WorldConfig(seed=args.seed, num_cameras=args.cameras, duration_s=args.duration)
    generation = measure_generation(config, args.gen_frames, args.seed)
    print_table([{k: round(v, 4) if isinstance(v, float) else v for k, v in generation.items()}],
                title=f"(a) generation on one core, {config.height}x{config.width}")
    world = World(config)
    rows = [row for c in range(args.cameras) for row in drift_rows(world.camera(c), args)]
    summary, per_window = summarise(rows, args.windows)
    print_table(per_window, title=f"(b) drift: mean over {args.cameras} cameras x apps {args.classes}")
    print_table([{k: round(v, 4) for k, v in summary.items()}], title="summary")
    result = {
        **generation, **summary, "windows": per_window, "per_app": rows,
        "config": {"world": config.__dict__, "quick": args.quick, "classes": args.classes, "epochs": args.epochs,
                   "input_size": args.input_size, "windows": args.windows, "torch_threads": torch.get_num_threads()},
        "wall_s": time.perf_counter() - started,
    }
    out = save_results(result, args.out, rows=rows)
    plot(rows, per_window, out.with_suffix(".png"))
    print(f"\nwrote {out}, {out.with_suffix('.parquet')}, {out.with_suffix('.png')} in {result['wall_s']:.1f} s")


if __name__ == "__main__":
    main()
