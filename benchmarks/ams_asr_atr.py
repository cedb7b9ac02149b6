"""ASR + ATR on vs fixed rates: uplink, teacher frames, retraining time, accuracy, side by side.

Each evaluation camera of the drifting synthetic world streams through a real `EdgeClient`
(student tiny_cnn pretrained on a source world as M-Trainer does, `ams_common.pretrained_base`;
retrained above branchpoint 4 with γ = 5 %) to an in-process AMS server (oracle teacher). Schemes,
with identical world, student and seeds:

- Fixed 1 fps: sample at r_max = 1 fps, update every T_update = 10 s (ASR/ATR off);
- Fixed 0.5 fps: the same at half the rate (is adaptation better than just sampling less?);
- ASR+ATR: AMS's adaptive sampling rate (φ-score feedback, 0.1..1 fps) and training period
  (slowdown mode while the scene is static).

Both on the default (busy) world and on a quiet one (objects in 2-6 % of frames instead of
15-45 %: long stretches of unchanged labels, where ASR throttles and ATR enters slowdown mode).

Uplink = JPEG bytes of uploaded samples / video time; teacher frames = samples the server had to
label; retrain_s = measured wall seconds of retraining phases (CPU here, standing in for the GPU).
Goal (issue 6): ASR+ATR within 1 point of Fixed 1 fps accuracy at lower uplink.

    python benchmarks/ams_asr_atr.py --quick --out out/ams/ams_asr_atr.json
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ams_common import Setup, build_world, mean_row, pretrained_base, simulate
from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.learning import AmsConfig

KEYS = ("accuracy", "f1", "uplink_kbps", "downlink_kbps", "samples", "sample_fps", "updates", "retrain_s",
        "retrain_cpu_s")
QUICK = Setup(size=48, duration_s=150.0, pretrain_frames=300, pretrain_epochs=3, eval_stride=10)
QUIET_COVERAGE = (0.02, 0.06)  # the quiet world: objects rarely present, labels mostly unchanged


def schemes(iterations: int, batch_size: int, size: int) -> list[tuple[str, AmsConfig]]:
    base = AmsConfig(input_size=size, iterations=iterations, batch_size=batch_size, gamma=0.05)
    return [("Fixed 1 fps", replace(base, adaptive=False, fixed_fps=1.0)),
            ("Fixed 0.5 fps", replace(base, adaptive=False, fixed_fps=0.5)),
            ("ASR+ATR", replace(base, adaptive=True))]


def plot(rows: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    names = [f"{r['scene']}\n{r['scheme']}" for r in rows]
    for ax, key, label in zip(axes, ("uplink_kbps", "retrain_s", "accuracy"),
                              ("uplink (kbps)", "retraining seconds", "edge accuracy")):
        ax.bar(names, [r[key] for r in rows], color=["#888", "#bbb", "#2a7"] * 2)
        ax.set_title(label)
        ax.tick_params(axis="x", labelsize=6)
    fig.suptitle("AMS: adaptive sampling and training rates vs fixed rates")
    save_plot(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 camera x 150 s per scene kind at 48 px (< 60 s on 2 cores)")
    parser.add_argument("--out", type=Path, required=True, help="results JSON (Parquet and PNG beside it)")
    parser.add_argument("--cameras", type=int, default=None, help="evaluation cameras (default 3, quick 2)")
    parser.add_argument("--duration", type=float, default=None, help="simulated seconds per camera")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for tiny models)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    setup = QUICK if args.quick else Setup()
    setup = replace(setup, seed=args.seed, duration_s=args.duration or setup.duration_s)
    cameras = list(range(args.cameras or (1 if args.quick else 3)))
    iterations, batch = (10, 8) if args.quick else (20, 16)
    started = time.perf_counter()
    rows, per_camera = [], []
    for scene, coverage in (("busy", setup.class_coverage), ("quiet", QUIET_COVERAGE)):
        scene_setup = replace(setup, class_coverage=coverage)
        world = build_world(scene_setup, len(cameras))
        base = pretrained_base(scene_setup)
        for name, ams in schemes(iterations, batch, setup.size):
            run = simulate(world, base, scene_setup, cameras, ams)
            per_camera += [{"scene": scene, "scheme": name, **r} for r in run.per_camera]
            rows.append({"scene": scene, "scheme": name, **mean_row(run.per_camera, KEYS),
                         "retrain_total_s": run.retrain_s, "teacher_frames": int(sum(r["samples"] for r in run.per_camera))})
            logging.info("%s %s: %s", scene, name, rows[-1])
    print_table(per_camera, title="Per camera")
    print_table(rows, title=f"ASR/ATR vs fixed rates ({len(cameras)} cameras x {setup.duration_s:.0f} s per scene kind, "
                f"K={iterations}, gamma 5%), setup {asdict(setup)}, quiet coverage {QUIET_COVERAGE}")
    for scene in ("busy", "quiet"):
        report(scene, [r for r in rows if r["scene"] == scene])
    print(f"total {time.perf_counter() - started:.1f}s")
    save_results({"rows": rows, "per_camera": per_camera, "setup": asdict(setup), "iterations": iterations},
                  args.out, rows=rows)
    plot(rows, args.out.with_suffix(".png"))


def report(scene: str, rows: list[dict]) -> None:
    fixed, adaptive = rows[0], rows[-1]
    print(f"\n{scene} scenes, ASR+ATR vs Fixed 1 fps: uplink {fixed['uplink_kbps'] / max(adaptive['uplink_kbps'], 1e-9):.2f}x lower, "
          f"teacher frames {fixed['teacher_frames'] / max(adaptive['teacher_frames'], 1):.2f}x fewer, retraining "
          f"{adaptive['updates']:.0f} vs {fixed['updates']:.0f} updates/camera and {adaptive['retrain_cpu_s']:.1f} vs "
          f"{fixed['retrain_cpu_s']:.1f} CPU s/camera, accuracy {100 * (adaptive['accuracy'] - fixed['accuracy']):+.2f} points")


if __name__ == "__main__":
    main()
