"""AMS on the drifting synthetic world: accuracy vs downlink/uplink bandwidth, side by side.

For each evaluation camera, a small student (tiny_cnn, cut at branchpoint b = 4 for the binary app
"car present"; 166,465 trainable coordinates above the cut) is customised online:

- No customization: the pretrained student, never updated.
- One-time: fine-tuned (full Adam) on the first 60 s of teacher-labelled samples, then frozen.
- AMS: the edge samples frames at the ASR rate and uploads them (JPEG); every T_update seconds
  (ATR) the server labels them with the oracle teacher, retrains K = 20 Adam iterations (one
  Algorithm 2 phase) on the last T_horizon = 240 s, and ships a sparse update: full-model (γ = 1,
  plain Adam) and gradient-guided coordinate descent with γ = 20/10/5/1 % (cumulative |u| ranking,
  one joint ranking over all tensors; see coordinate_descent.py for why).

The edge really decodes and applies every update to its own copy (the stem is shared and never
sent) and is checked bit-equal to the server; accuracy and F1 are those of the edge model on every
`eval_stride`-th frame vs ground truth. Downlink = update bytes / video time; uplink = JPEG bytes of
the sampled frames / video time. All AMS variants see the same samples, update times and
mini-batches (the oracle's labels do not depend on the student), so their differences are due to
γ alone. Runs are deterministic (same seed, same numbers to the last digit); the noise that matters
is seed to seed and camera to camera, so figures are means over `--seeds`.

Student pretraining (`--pretrain-source`). Default "world": every camera of a source world with
seed + 1000, exactly as M-Trainer builds the product's base (stemcell/training/mtrainer.py), so
the evaluation cameras are a new domain -- the setting of the AMS paper, whose student is
pretrained on Cityscapes / PASCAL VOC, not on the target videos. This replaced the earlier default
("cameras": early frames of cameras 3 and 4 of the *target* world, which share its scene pool),
because that was inconsistent with the product, not because of its numbers; both are reported.

Results (full mode, 3 cameras x 600 s, commands below; accuracy mean over seeds, per-seed spread):

  source-world student (default), seeds 0-4, 15 camera runs, 1105 s on 2 shared cores:
    scheme              accuracy (per seed)                    F1     downlink kbps
    No customization    0.656 (.615 .723 .671 .597 .676)       0.340     0
    One-time            0.588 (.636 .576 .611 .600 .516)       0.250     3.8
    AMS full model      0.730 (.766 .706 .712 .741 .724)       0.480   225.6
    AMS γ = 20 %        0.723 (.756 .711 .703 .748 .699)       0.464    53.8
    AMS γ = 10 %        0.710 (.748 .696 .683 .743 .680)       0.446    28.3
    AMS γ = 5 %         0.709 (.761 .715 .672 .729 .669)       0.423    15.0
    AMS γ = 1 %         0.697 (.722 .727 .652 .693 .689)       0.373     3.8
  Paired per camera (mean ± standard error over the 15 runs, points of accuracy):
    γ 5 % - full: -2.1 ± 0.9 (seed means -0.5 +0.9 -4.0 -1.3 -5.5; better on 4/15 cameras) at 15.0x
    less downlink; γ 20 % - full: -0.6 ± 0.6 (4.2x less); γ 10 % - full: -2.0 ± 0.7.
    γ 5 % - none: +5.3 ± 2.5 (seed means +14.6 -0.8 +0.0 +13.2 -0.6); full - none: +7.4 ± 2.4.
  Near-domain student ("cameras", seeds 0-1, 6 runs): none 0.664, full 0.747, γ 5 % 0.701 (15.0x
    less downlink): γ 5 % - full -4.6 ± 1.2 (both seeds -4.6), γ 20 % - full -1.6 ± 0.8.
  Longer-pretrained student (`--pretrain-frames 2400 --pretrain-epochs 10`, seeds 0-1, 6 runs, 612 s):
    none 0.541, one-time 0.658, full 0.773 @225.6 kbps, γ 20 % 0.746, γ 10 % 0.734, γ 5 % 0.724 @15.6 kbps,
    γ 1 % 0.714: γ 5 % - none +18.2 (seed means +24.2, +12.3: AMS now clearly beats No customization on
    both seeds), but γ 5 % - full -4.9 (-5.1, -4.7): the better the student fits its source domain,
    the more the new domain needs re-fitting, and sparse updates re-fit more slowly.
  Issue 6 goals: (a) γ 5 % at >= 10x less downlink: met (15x); within 1 point of full: NOT met
  (-2.1 ± 0.9; only γ 20 % is within a point). (b) AMS beats No customization: on average yes
  (+5.3 ± 2.5 at γ 5 %, +7.4 at full), but only on 2 of 5 seeds clearly; on the others the
  uncustomised student is already at the level AMS reaches (see the diagnosis).

Diagnosis (why sparse updates and customisation gain less here than in the paper):
- The student barely generalises beyond the label prior of its scene. Full-model AMS fits its
  240 s buffer to 94-95 % accuracy but scores 71-77 % on the next T_update of video, about what
  predicting the buffer's majority label scores (70-74 %). Most of AMS's gain over No
  customization is recalibrating a student whose prior is wrong for the new domain, so it is large
  where the uncustomised student is miscalibrated and absent where it is not; F1 shows the gain
  more steadily than accuracy.
- γ-sparse updates move 5 % of the coordinates per update, so they recalibrate more slowly; the cost
  grows as γ shrinks, and is larger for the near-domain student (about 4.6 points at γ = 5 %, on
  both seeds) than for the source-world one.
- A bigger student does not help here: `--arch mobilenet_v3_small --branchpoint 6` (351,121
  coordinates above the cut), pretrained from scratch on the same source world at 64 px, does not
  learn the app at all (seed 0: F1 ~0 for every scheme, accuracy = the label prior), so it says
  nothing about the γ gap; without downloadable ImageNet weights a MobileNet cannot be the student.
- Measured and rejected: ranking by the last step's update (paper line 15) instead of the
  cumulative one (-0.6 to -0.9 points in each of 3 settings), and ranking per tensor (-0.8; one
  near-domain seed). Not settled: the fp16 values the codec ships. A float32 server model (one
  near-domain seed, outside this script) scored -0.5 (full) and +1.3 (γ 5 %) points vs the fp16 one;
  one seed cannot separate that from trajectory noise (per-camera sd of paired differences is 2-3
  points), and the edge is bit-equal to the server, so the edge side itself loses nothing.

    python benchmarks/ams_bandwidth.py --seeds 0 1 2 3 4 --out out/ams/bw_final.json
    python benchmarks/ams_bandwidth.py --seeds 0 1 --pretrain-source cameras --out out/ams/bw_cameras.json
    python benchmarks/ams_bandwidth.py --quick --out out/ams/quick.json  # < 60 s on 2 cores
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from ams_edge import QUICK, BenchConfig, CameraData, prepare, run_scheme, schemes

from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.models import SegmentedNet, list_bases

log = logging.getLogger("ams_bandwidth")


def evaluate(base: SegmentedNet, cams: list[CameraData], cfg: BenchConfig) -> tuple[list[dict], list[dict]]:
    """Every scheme on every camera: (mean rows per scheme, per-camera rows)."""
    kbps = lambda b: 8.0 * b / 1000.0 / cfg.duration_s  # noqa: E731
    per_camera: list[dict] = []
    for cam in cams:
        for scheme, gamma in schemes(cfg):
            out = run_scheme(base, cam, cfg, gamma, scheme)
            per_camera.append({"camera": cam.camera, "scheme": scheme, "gamma": gamma, "accuracy": out["accuracy"],
                               "f1": out["f1"], "downlink_kbps": kbps(out["down_bytes"]),
                               "uplink_kbps": kbps(out["up_bytes"]), "updates": out["updates"],
                               "train_s": out["train_s"], "sample_fps": cam.mean_rate_fps})
            log.info("camera %d %-18s acc %.3f f1 %.3f down %.2f kbps (%.1fs)", cam.camera, scheme, out["accuracy"],
                     out["f1"], kbps(out["down_bytes"]), out["train_s"])
    rows = []
    for scheme, gamma in schemes(cfg):
        sel = [r for r in per_camera if r["scheme"] == scheme]
        rows.append({"scheme": scheme, "gamma": gamma,
                     **{k: float(np.mean([r[k] for r in sel])) for k in
                        ("accuracy", "f1", "downlink_kbps", "uplink_kbps", "updates", "train_s")}})
    return rows, per_camera


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for r in rows:
        x = max(r["downlink_kbps"], 1e-3)
        ax.scatter(x, 100 * r["accuracy"], s=40)
        ax.annotate(r["scheme"], (x, 100 * r["accuracy"]), textcoords="offset points", xytext=(5, 3), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("downlink (kbps, log; 'no update' schemes drawn at 0.001)")
    ax.set_ylabel("edge accuracy (%)")
    ax.set_title("AMS: accuracy vs model-update bandwidth")
    ax.grid(True, alpha=0.3)
    save_plot(fig, path)


def seed_summary(rows: list[dict]) -> dict[str, float]:
    """The acceptance figures of one seed: gamma 5 % vs full-model updates and vs no customisation."""
    by = {r["scheme"]: r for r in rows}
    five, full, none = by.get("AMS gamma=5%"), by.get("AMS full model"), by.get("No customization")
    out: dict[str, float] = {}
    if five and full:
        out["g5_minus_full_points"] = 100 * (five["accuracy"] - full["accuracy"])
        out["full_over_g5_downlink"] = full["downlink_kbps"] / max(five["downlink_kbps"], 1e-9)
    if five and none:
        out["g5_minus_none_points"] = 100 * (five["accuracy"] - none["accuracy"])
    if full and none:
        out["full_minus_none_points"] = 100 * (full["accuracy"] - none["accuracy"])
    return out


def mean_over_seeds(per_seed: list[list[dict]]) -> list[dict]:
    """Scheme rows averaged over seeds, with the per-seed accuracies and their spread kept."""
    rows = []
    for i, first in enumerate(per_seed[0]):
        sel = [rows_[i] for rows_ in per_seed]
        accs = [r["accuracy"] for r in sel]
        rows.append({"scheme": first["scheme"], "gamma": first["gamma"],
                     **{k: float(np.mean([r[k] for r in sel])) for k in
                        ("accuracy", "f1", "downlink_kbps", "uplink_kbps", "updates", "train_s")},
                     "accuracy_std": float(np.std(accs)), "accuracy_per_seed": [round(a, 4) for a in accs]})
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller world and shorter videos (< 60 s on 2 cores)")
    parser.add_argument("--out", type=Path, required=True, help="results JSON (Parquet and PNG are written beside it)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="world, pretraining and sampling seeds; figures are means over them (default 0)")
    parser.add_argument("--duration", type=float, default=None, help="simulated seconds per camera (override)")
    parser.add_argument("--pretrain-source", choices=["world", "cameras"], default=None,
                        help="'world' (default): a source world with seed + 1000, as M-Trainer; 'cameras': early "
                             "frames of --pretrain-cameras of the target world (a near domain)")
    parser.add_argument("--pretrain-cameras", type=int, nargs="+", default=None,
                        help="target-world cameras for --pretrain-source cameras (default 3 4; quick 3)")
    parser.add_argument("--gammas", type=float, nargs="+", default=None,
                        help="AMS coordinate fractions (1 = full-model updates); default 1 0.2 0.1 0.05 0.01")
    parser.add_argument("--schemes", nargs="+", choices=["none", "one-time", "ams"], default=["none", "one-time", "ams"],
                        help="which schemes to run (to iterate faster; final figures need all)")
    parser.add_argument("--selection", choices=["cumulative", "last"], default=None,
                        help="score ranking the next phase's coordinates (see coordinate_descent.py)")
    parser.add_argument("--arch", choices=list_bases(), default=None,
                        help="the student's architecture (default tiny_cnn, cut at --branchpoint)")
    parser.add_argument("--branchpoint", type=int, default=None,
                        help="segments in the frozen shared stem; only the layers above are retrained (default 4)")
    parser.add_argument("--pretrain-frames", type=int, default=None,
                        help="frames per pretraining camera (default 600; quick 500)")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="student pretraining epochs (default 4)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1 is fastest for these tiny models, and does not spin on a busy box)")
    return parser.parse_args()


def config_from(args: argparse.Namespace) -> BenchConfig:
    cfg = QUICK if args.quick else BenchConfig()
    gammas = tuple(args.gammas) if args.gammas else cfg.gammas
    return replace(cfg, duration_s=args.duration or cfg.duration_s, arch=args.arch or cfg.arch,
                   pretrain_frames=args.pretrain_frames or cfg.pretrain_frames,
                   pretrain_epochs=args.pretrain_epochs or cfg.pretrain_epochs,
                   branchpoint=cfg.branchpoint if args.branchpoint is None else args.branchpoint,
                   pretrain_source=args.pretrain_source or ("cameras" if args.pretrain_cameras else cfg.pretrain_source),
                   pretrain_cameras=tuple(args.pretrain_cameras or cfg.pretrain_cameras),
                   gammas=gammas if "ams" in args.schemes else (), selection=args.selection or cfg.selection,
                   baselines=tuple(s for s in ("none", "one-time") if s in args.schemes))


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    cfg = config_from(args)
    start = time.perf_counter()
    per_seed, per_camera, summaries = [], [], []
    for seed in args.seeds:
        seed_cfg = replace(cfg, seed=seed)
        rows, cams = evaluate(*prepare(seed_cfg), seed_cfg)
        per_seed.append(rows)
        per_camera += [{"seed": seed, **r} for r in cams]
        summaries.append({"seed": seed, **seed_summary(rows)})
        print_table(rows, columns=["scheme", "gamma", "accuracy", "f1", "downlink_kbps", "updates"],
                    title=f"seed {seed}")
    rows = mean_over_seeds(per_seed)
    print_table(per_camera, title="Per seed and camera")
    print_table(rows, columns=["scheme", "gamma", "accuracy", "accuracy_std", "f1", "downlink_kbps", "uplink_kbps",
                               "updates", "train_s"],
                title=f"AMS on the synthetic world ({len(cfg.eval_cameras)} cameras, {cfg.duration_s:.0f} s each, "
                      f"seeds {args.seeds}), config: {asdict(cfg)}")
    print_table(summaries, title="Acceptance figures per seed (points = accuracy x 100)")
    mean = seed_summary(rows)
    if mean:
        print("mean over seeds: " + ", ".join(f"{k} {v:+.2f}" for k, v in mean.items()))
    print(f"total {time.perf_counter() - start:.1f}s")
    save_results(rows, args.out)
    save_results(per_camera, args.out.with_name(args.out.stem + "_per_camera.json"))
    plot(rows, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
