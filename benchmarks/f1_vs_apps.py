"""Mean event F1 as apps are added under a fixed GPU budget: Mainstream vs Max-sharing vs No-sharing.

The shape of Mainstream's Figure 9. For 1..N apps on one stream, each policy plans (branchpoint,
frame rate) per app from the M-Package's validation metrics and measured latencies; the plan is
then *measured*: each chosen candidate's real per-frame predictions on an unseen camera of the
world, sampled at the chosen rate, scored as event F1 against ground truth. The model's predicted
F1 is reported beside it.

    python benchmarks/f1_vs_apps.py --package pkg --out results/f1_vs_apps.json
    python benchmarks/f1_vs_apps.py --quick --out /tmp/f1.json   # trains configs/ci.yaml if needed
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from stemcell.config import TrainConfig, load_config
from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.candidate_predictions import candidate_predictions
from stemcell.eval.event_metrics import event_score
from stemcell.eval.plotting import plt
from stemcell.package import MPackage, load_package
from stemcell.package.planning import problem_from_manifest
from stemcell.scheduling import get_scheduler
from stemcell.training.mtrainer import train_package
from stemcell.world import CLASSES, World, WorldConfig

REPO = Path(__file__).resolve().parents[1]
POLICIES = ("mainstream", "max_sharing", "no_sharing")
FRAME_RATES = (0.5, 1.0, 2.0, 5.0, 10.0)


def ensure_package(package: Path | None, config: Path, cache: Path) -> MPackage:
    """The package given, or one trained once from `config` into `cache` (reused afterwards)."""
    if package is not None:
        return load_package(package)
    if not (cache / "manifest.json").is_file():
        logging.info("no --package given: training %s into %s", config, cache)
        train_package(load_config(config, TrainConfig), cache)
    return load_package(cache)


def test_stream(package: MPackage, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Frames + presence of a camera the package never trained on: the same world (same recurring
    scene pool), one camera past the ones it trained on."""
    w = package.manifest.world
    world = World(WorldConfig(seed=int(w["seed"]), num_cameras=int(w["num_cameras"]) + 1, height=int(w["height"]),
                              width=int(w["width"]), fps=float(w["fps"]), duration_s=seconds))
    cam = world.camera(int(w["num_cameras"]))
    return cam.frames(range(cam.num_frames)), cam.presence()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, help="M-Package folder (default: train one from --config)")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml", help="used when no --package")
    parser.add_argument("--max-apps", type=int, default=10, help="largest number of concurrent apps")
    parser.add_argument("--budget-models", type=float, default=1.0,
                        help="budget as a multiple of one full model at the stream's frame rate (default 1)")
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the unseen test stream")
    parser.add_argument("--quick", action="store_true", help="small package (configs/ci.yaml), short stream")
    parser.add_argument("--out", type=Path, required=True, help="JSON output (Parquet + PNG written beside it)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.quick:
        args.config, args.seconds = REPO / "configs" / "ci.yaml", 180.0
    package = ensure_package(args.package, args.config, REPO / "runs" / f"bench-pkg-{args.config.stem}")
    m = package.manifest
    frames, presence = test_stream(package, args.seconds)
    predictions = candidate_predictions(package, frames)
    truth = {a.name: presence[:, CLASSES.index(a.classes[0])] for a in m.apps}
    full_model_s = sum(m.latency.per_frame_segment_s(8)) + m.latency.head_s["8"] / 8
    budget = args.budget_models * full_model_s * m.fps
    rows = []
    app_cycle = [a.name for a in m.apps]
    for n in range(1, args.max_apps + 1):
        apps = [app_cycle[i % len(app_cycle)] for i in range(n)]
        problem = problem_from_manifest(m, apps, budget, frame_rates=[r for r in FRAME_RATES if r <= m.fps])
        for policy in POLICIES:
            schedule = get_scheduler(policy)(problem)
            measured = []
            for app, choice in zip(apps, schedule.choices):
                stride = max(1, round(m.fps / choice.fps))
                measured.append(event_score(predictions[(app, choice.branchpoint)], truth[app], stride).f1)
            rows.append({
                "apps": n, "policy": policy, "f1": float(np.mean(measured)), "predicted_f1": schedule.objective,
                "fps": float(np.mean([c.fps for c in schedule.choices])),
                "mean_branchpoint": float(np.mean([c.branchpoint for c in schedule.choices])),
                "feasible": schedule.feasible, "cost": schedule.cost, "budget": budget,
            })
    print_table(rows, title=f"Event F1 vs number of apps (budget = {args.budget_models:g} full model(s) at {m.fps:g} fps)")
    summary = {
        "package": str(package.root), "budget": budget, "rows": rows,
        "mainstream_ge_baselines_measured": all(
            next(r["f1"] for r in rows if r["apps"] == n and r["policy"] == "mainstream") + 1e-9
            >= max(r["f1"] for r in rows if r["apps"] == n and r["policy"] != "mainstream")
            for n in range(1, args.max_apps + 1)
        ),
    }
    save_results(rows, args.out, rows=rows)
    save_results(summary, args.out.with_name(args.out.stem + "_summary.json"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for policy in POLICIES:
        sel = [r for r in rows if r["policy"] == policy]
        axes[0].plot([r["apps"] for r in sel], [r["f1"] for r in sel], marker="o", label=policy)
        axes[1].plot([r["apps"] for r in sel], [r["fps"] for r in sel], marker="o", label=policy)
    axes[0].set(xlabel="concurrent apps", ylabel="measured mean event F1", title="Event F1")
    axes[1].set(xlabel="concurrent apps", ylabel="mean frame rate (fps)", title="Frame rate chosen")
    axes[0].legend()
    save_plot(fig, args.out.with_suffix(".png"))
    print(f"Mainstream >= both baselines at every point (measured): {summary['mainstream_ge_baselines_measured']}")


if __name__ == "__main__":
    main()
