"""Merging layers whose weights differ (Gemel-style joint retraining), and swapping what still does not fit.

Workload: per-camera apps ("is a car / a person present", one model per camera and app: 8 models
from 4 cameras in full mode, 6 from 3 with --quick), each fine-tuned end to end (no frozen stem, so
no two layers stay byte-identical) from one of two bases
(tiny_cnn pretrained on the synthetic world with two seeds: same structure, different weights).
Today's merger (identical layers only) saves almost nothing on them; the joint-retraining merge
(`stemcell.sharing.joint_merge`) ties matching segments greedily by bytes saved, retrains jointly,
and keeps a merge only if every model stays within 1 point of its unmerged held-out accuracy.
Accuracy is checked on a validation split during the merge and *reported* on a separate test split:
three quarters of each camera's frames are held out (whole 20 s chunks), and each held-out chunk gives
its first 10 s to validation and its last 10 s to test, so both splits cover the same scenes and a
decision taken on validation carries over to test. Drops are reported with a 95% interval from a
bootstrap over the test split's 10 s chunks (neighbouring frames are near-duplicates: resampling
frames one by one would understate the noise). Full mode samples 2400 frames over a 2400 s timeline
per camera (~900 test frames per model in ~90 chunks of 10 s) to narrow the interval; it takes ~15 min
on a shared 2-core box (`phase_s` says where the time went). Torch runs on one thread there
(`--threads`): two OpenMP threads at nice 19 on a loaded box trained ~10x slower.

Swapping: under a memory cap of half the merged bytes, layer swapping (most-used layers resident,
the rest copied per batch in execution order, prefetching) against whole-model swapping (the seed's
baseline) and everything resident.

    python benchmarks/merging_joint.py --quick --out /tmp/mj.json
    python benchmarks/merging_joint.py --out results/merging_joint.json
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.models import AppModel, SegmentedNet, make_app_model, to_input
from stemcell.sharing import module_bytes
from stemcell.sharing.joint_merge import JointMerger, MergeConfig, MergeResult, ModelData, accuracy_points
from stemcell.sharing.matching import match_report
from stemcell.sharing.merge_jobs import store_bytes
from stemcell.training import LabelledFrames, pretrain_base, world_frames
from stemcell.training.loop import batched, fit_bce
from stemcell.world import CLASSES, World, WorldConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable

from benchmarks.merge_swap import swap_figures  # noqa: E402  (the swap measurement)

APPS = ("car", "person")
HELD_OUT = 0.75  # of each camera's frames: half of it validation (merge decisions), half test (reported)


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="64px, fewer frames and epochs (minutes on 2 cores)")
    p.add_argument("--out", required=True, help="JSON output (PNG written beside it)")
    p.add_argument("--cameras", type=int, help="cameras, one model per camera and app (default 4: 8 models; 3 quick)")
    p.add_argument("--frames", type=int, help="frames per camera, a quarter for training (default 2400, 600 quick)")
    p.add_argument("--duration-s", type=float, help="each camera's timeline (default 2400, 600 quick): more "
                   "independent 10 s test chunks, a narrower CI")
    p.add_argument("--size", type=int, default=64, help="input resolution")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs per model (default 8, 6 with --quick)")
    p.add_argument("--merge-epochs", type=int, help="joint-retraining epochs per merge step (default 5, 2 quick)")
    p.add_argument("--tolerance", type=float, default=1.0, help="accuracy target: unmerged validation - this (points)")
    p.add_argument("--init", choices=("mean", "medoid", "most_data"), default="mean",
                   help="where a tied segment starts")
    p.add_argument("--presplit", type=float, default=2.0,
                   help="split groups whose members form two clusters (across > this x within) before trying; 0: off")
    p.add_argument("--budget-s", type=float, help="merge time budget (default 360, 90 quick)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads: on a shared 2-core box one thread "
                   "trained ~10x faster than two (spinning OpenMP threads at nice 19)")
    p.add_argument("--swap-iters", type=int, help="timed batches per swapping mode (default 50, 20 quick)")
    return p.parse_args()


def _split(frames: LabelledFrames, chunk: int) -> tuple[LabelledFrames, LabelledFrames]:
    """Held-out frames into validation (merge decisions) and test (reported), by alternate time chunks."""
    even = (frames.indices // chunk) % 2 == 0
    return frames.subset(even), frames.subset(~even)


def _drop_ci(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor], chunks: Sequence[np.ndarray],
             draws: int = 2000) -> list[tuple[float, float]]:
    """95% interval of each model's test accuracy drop (points), resampling whole test chunks."""
    rng = np.random.default_rng(0)
    out = []
    for b, a, ch in zip(before, after, chunks):
        diff = (b.float() - a.float()).numpy()
        ids, inverse = np.unique(ch, return_inverse=True)
        sums, counts = np.bincount(inverse, diff), np.bincount(inverse)
        pick = rng.integers(0, len(ids), size=(draws, len(ids)))
        drops = 100.0 * sums[pick].sum(1) / counts[pick].sum(1)
        out.append((float(np.percentile(drops, 2.5)), float(np.percentile(drops, 97.5))))
    return out


@torch.no_grad()
def _correct(model: AppModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-frame correctness (the mean is `accuracy_points` / 100)."""
    model.eval()
    return ((batched(model, x) > 0).float() == y).all(1)


def _model_data(train: LabelledFrames, val: LabelledFrames, test: LabelledFrames, camera: int, app: str,
                size: int, chunk: int) -> tuple[ModelData, tuple[torch.Tensor, torch.Tensor], np.ndarray]:
    """The model's train/validation data, its test (x, y) and each test frame's chunk (for the CI)."""
    c = CLASSES.index(app)

    def xy(f: LabelledFrames) -> tuple[torch.Tensor, torch.Tensor]:
        mine = f.subset(f.cameras == camera)
        return to_input(mine.frames, size), torch.from_numpy(mine.presence[:, c].astype(np.float32))[:, None]

    (tx, ty), (vx, vy) = xy(train), xy(val)
    return ModelData(tx, ty, vx, vy), xy(test), test.indices[test.cameras == camera] // chunk


def _finetune(base: SegmentedNet, data: ModelData, epochs: int, seed: int) -> AppModel:
    """Every segment and a new head train (branchpoint 0): the per-camera model shares no bytes."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_app_model(base, 0, num_outputs=1)
    model.train()
    fit_bce(model, model.parameters(), data.train_x, data.train_y, epochs=epochs, lr=1e-3, batch_size=32, seed=seed)
    return model.eval()


def _row(n: int, unmerged: Sequence[AppModel], result: MergeResult, tests: Sequence[tuple[torch.Tensor, ...]],
         chunks: Sequence[np.ndarray]) -> dict[str, object]:
    before = [_correct(m, x, y) for m, (x, y) in zip(unmerged, tests)]
    after = [_correct(m, x, y) for m, (x, y) in zip(result.models, tests)]
    drops = [100.0 * float(b.float().mean() - a.float().mean()) for b, a in zip(before, after)]
    worst = max(range(n), key=lambda k: drops[k])
    return {
        "models": n,
        "bytes_unmerged": sum(module_bytes(m) for m in unmerged),
        "bytes_identical_only": store_bytes(unmerged),
        "bytes_joint": store_bytes(result.models),
        "accuracy_drop_max": drops[worst],
        "accuracy_drop_max_ci": list(_drop_ci(before, after, chunks)[worst]),
        "accuracy_drops": drops,
        "test_frames_min": min(len(x) for x, _ in tests),
        "accuracy_drop_max_val": max(b - a for b, a in zip(result.baseline, result.accuracy)),
        "merges_accepted": len(result.groups),
        "merges_rolled_back": len(result.failed),
        "merge_s": result.seconds,
        "stopped": result.stopped,
    }


@dataclass
class Workload:
    """Per-camera app models fine-tuned end to end, their merge data and their test split."""

    names: list[str]
    models: list[AppModel]
    data: list[ModelData]  # train + validation (merge decisions)
    tests: list[tuple[torch.Tensor, torch.Tensor]]  # reported accuracy
    chunks: list[np.ndarray]  # each test frame's 10 s chunk (the CI resamples chunks)
    seconds: dict[str, float]  # where the preparation time went


def build_workload(cameras: int, frames: int, duration_s: float, size: int, epochs: int, quick: bool) -> Workload:
    """Render the world, pretrain two bases, fine-tune one model per camera and app (car models on
    one base, person models on the other)."""
    seconds, t0 = {}, time.monotonic()
    world = World(WorldConfig(seed=0, num_cameras=cameras, duration_s=duration_s))
    chunk = int(10 * world.config.fps)  # half of world_frames' 20 s split chunk
    train, held = world_frames(world, range(cameras), frames, val_fraction=HELD_OUT, seed=0)
    val, test = _split(held, chunk)
    seconds["data_s"], t0 = time.monotonic() - t0, time.monotonic()
    bases = [pretrain_base("tiny_cnn", train, input_size=size, epochs=3 if quick else 6, lr=1e-3, batch_size=32,
                           seed=s) for s in (0, 1)]
    seconds["pretrain_s"], t0 = time.monotonic() - t0, time.monotonic()
    specs = [(cam, app) for cam in range(cameras) for app in APPS]
    out = Workload([f"cam{c}/{a}" for c, a in specs], [], [], [], [], seconds)
    for k, (cam, app) in enumerate(specs):
        d, t, ch = _model_data(train, val, test, cam, app, size, chunk)
        out.data.append(d)
        out.tests.append(t)
        out.chunks.append(ch)
        out.models.append(_finetune(bases[APPS.index(app)], d, epochs, seed=k))
    seconds["finetune_s"] = time.monotonic() - t0
    return out


def _step_rows(result: MergeResult, names: Sequence[str]) -> list[dict[str, object]]:
    """Every merge step: which unit, who, kept or not, epochs, time, the accuracy reached vs target."""
    return [{"unit": s.candidate.members[0][1], "members": [names[i] for i, _ in s.candidate.members],
             "accepted": s.accepted, "epochs": s.epochs, "reason": s.reason, "accuracy": s.accuracy,
             "targets": s.targets, "bytes_saved": s.candidate.bytes_saved, "seconds": s.seconds} for s in result.steps]


def _own_copies(result: MergeResult, names: Sequence[str]) -> dict[str, list[str]]:
    """Per unit, the models that still keep their own copy after the merge (what limits the savings)."""
    units = [u for u, _ in result.models[0].named_children() if u in ("stem", "upper")]
    paths = [f"{u}.{k}" for u in units for k in range(len(getattr(result.models[0], u)))]
    shared = {(i, p) for g in result.groups for i, p in g.members}
    return {p: [n for i, n in enumerate(names) if (i, p) not in shared] for p in paths}


def main() -> None:
    args = _parse()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    q = args.quick
    size = args.size
    cameras = args.cameras or (3 if q else 4)
    frames = args.frames or (600 if q else 2400)
    duration = args.duration_s or (600.0 if q else 2400.0)
    epochs = args.epochs or (6 if q else 8)
    cfg = MergeConfig(tolerance_points=args.tolerance, max_epochs=args.merge_epochs or (2 if q else 5),
                      budget_s=args.budget_s or (90 if q else 360), init=args.init,
                      presplit_ratio=args.presplit or None)
    iters = args.swap_iters or (20 if q else 50)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    w = build_workload(cameras, frames, duration, size, epochs, q)
    names, models, data, tests, chunks = w.names, w.models, w.data, w.tests, w.chunks
    test_before = [accuracy_points(m, x, y) for m, (x, y) in zip(models, tests)]

    report = {g: match_report(dict(zip(names, models)), g) for g in ("layer", "segment")}
    print_table([{"a": p.a, "b": p.b, "matched": p.matched_units, "of": p.units_a,
                  "shareable_MiB": p.shareable_bytes / 2**20, "savings": p.savings}
                 for p in report["layer"].pairs[:8]], title="shareable layers per pair (first 8 pairs, seed Fig. 2)")

    final = JointMerger(models, data, cfg).run()  # merges its own copies
    rows = [_row(len(models), models, final, tests, chunks)]
    main_row = rows[0]
    t0 = time.monotonic()
    swap = swap_figures(final.models, [tuple(n.split("/")) for n in names], main_row["bytes_joint"] // 2, iters, size)
    ci = main_row["accuracy_drop_max_ci"]
    out = {
        "rows": rows,
        "savings_joint": 1 - main_row["bytes_joint"] / main_row["bytes_unmerged"],
        "savings_identical_only": 1 - main_row["bytes_identical_only"] / main_row["bytes_unmerged"],
        "accuracy_drop_max": main_row["accuracy_drop_max"],
        "accuracy_drop_max_ci": ci,
        "accuracy_drop_max_ci_width": ci[1] - ci[0],
        "merge_s": main_row["merge_s"],
        **swap,
        "layer_swap_speedup": swap["fps_layer_swap"] / swap["fps_model_swap"],
        "models": names,
        "accuracy_unmerged_test": test_before,
        "accuracy_merged_test": [accuracy_points(m, x, y) for m, (x, y) in zip(final.models, tests)],
        "accuracy_majority_test": [100.0 * float(max(y.mean(), 1 - y.mean())) for _, y in tests],  # "always absent"
        "accuracy_unmerged_val": final.baseline,
        "accuracy_merged_val": final.accuracy,
        "targets_val": final.targets,
        "own_copies": _own_copies(final, names),
        "steps": _step_rows(final, names),
        "phase_s": {**w.seconds, "merge_s": final.seconds, "swap_s": time.monotonic() - t0},
        "match_report": {g: {"workload": asdict(r.workload), "pairs": [asdict(p) for p in r.pairs]}
                         for g, r in report.items()},
        "config": {"quick": q, "size": size, "cameras": cameras, "frames_per_camera": frames, "duration_s": duration,
                   "held_out_fraction": HELD_OUT, "finetune_epochs": epochs, "merge": asdict(cfg), "swap_iters": iters},
    }
    print_table([{k: (v / 2**20 if k.startswith("bytes") else v) for k, v in r.items() if k != "accuracy_drops"}
                 for r in rows],
                title="joint-retraining merge (MiB; accuracy drops in points, test split)")
    print_table([{k: swap[k] for k in ("device", "fps_resident", "fps_layer_swap", "fps_model_swap")}],
                title=f"swapping under a cap of {swap['swap_cap_bytes'] / 2**20:.2f} MiB (half the merged bytes)")
    print(f"savings_joint {out['savings_joint']:.3f} (goal >= 0.6 in full mode), identical-only "
          f"{out['savings_identical_only']:.3f}; accuracy_drop_max {out['accuracy_drop_max']:.2f} points "
          f"(95% CI {out['accuracy_drop_max_ci'][0]:.2f}..{out['accuracy_drop_max_ci'][1]:.2f}; goal <= 1); "
          f"layer swap {out['layer_swap_speedup']:.2f}x whole-model swap (goal >= 2)")
    path = save_results(out, args.out, rows=rows)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    xs = np.arange(len(rows))
    for j, (key, label) in enumerate((("bytes_unmerged", "unmerged"), ("bytes_identical_only", "identical only"),
                                      ("bytes_joint", "joint retraining"))):
        ax1.bar(xs + (j - 1) * 0.27, [r[key] / 2**20 for r in rows], 0.27, label=label)
    ax1.set_xticks(xs, [f"{r['models']} models" for r in rows])
    ax1.set_ylabel("MiB")
    ax1.set_title("weights stored")
    ax1.legend()
    modes = ("fps_resident", "fps_layer_swap", "fps_model_swap")
    ax2.bar(range(3), [swap[m] for m in modes], color=("#2a7", "#37c", "#c44"))
    ax2.set_xticks(range(3), ["resident", "layer swap", "model swap"])
    ax2.set_ylabel("frames/s")
    ax2.set_title(f"cap = half the merged bytes ({swap['device']})")
    save_plot(fig, path.with_suffix(".png"))


if __name__ == "__main__":
    main()
