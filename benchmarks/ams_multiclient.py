"""Multi-client AMS: accuracy vs number of cameras sharing one retraining worker (AMS appendix E).

N edge cameras (real `EdgeClient`s, students retrained above branchpoint 4 with γ = 5 %) share
one `AmsTrainer` that serves due jobs round-robin, one phase at a time. The worker's capacity is
the one stated assumption: a phase of K Adam steps occupies it for `--phase-cost` seconds of video
time (default 2.5 s, i.e. 4 phases per T_update = 10 s; AMS's DeeplabV3 phase on a V100 is of that
order). The phases themselves really run (their CPU seconds are reported), and an update reaches
its edge only when its phase ends. The reference is every camera with an unconstrained server.

Degradation(N) = mean over the N cameras of accuracy(N clients) - accuracy(reference): AMS Fig. 10
shape. With ATR, static cameras train less often, which frees phases for busy ones.

    python benchmarks/ams_multiclient.py --quick --out out/ams/ams_multiclient.json
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from ams_common import Setup, build_world, pretrained_base, simulate
from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.learning import AmsConfig

QUICK = Setup(size=48, duration_s=90.0, pretrain_frames=400, pretrain_epochs=3, eval_stride=10)


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for scheme in dict.fromkeys(r["scheme"] for r in rows):
        sel = [r for r in rows if r["scheme"] == scheme]
        ax.plot([r["clients"] for r in sel], [100 * r["accuracy_drop"] for r in sel], marker="o", label=scheme)
    ax.axhline(-1.0, color="grey", ls=":", lw=1, label="-1 point")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("cameras sharing one retraining worker")
    ax.set_ylabel("accuracy vs unconstrained server (points)")
    ax.set_title("AMS multi-client (round-robin)")
    ax.legend()
    ax.grid(True, alpha=0.3)
    save_plot(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1/2/4 clients x 90 s at 48 px, ASR+ATR only (< 60 s)")
    parser.add_argument("--out", type=Path, required=True, help="results JSON (Parquet and PNG beside it)")
    parser.add_argument("--clients", type=int, nargs="+", default=None, help="client counts (default 1 2 4 8)")
    parser.add_argument("--phase-cost", type=float, default=2.5, help="worker seconds one retraining phase occupies")
    parser.add_argument("--duration", type=float, default=None, help="simulated seconds per camera (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    setup = QUICK if args.quick else Setup(duration_s=300.0)
    setup = replace(setup, seed=args.seed, duration_s=args.duration or setup.duration_s)
    clients = args.clients or ([1, 2, 4] if args.quick else [1, 2, 4, 8])
    iterations, batch = (10, 8) if args.quick else (20, 16)
    base_cfg = AmsConfig(input_size=setup.size, iterations=iterations, batch_size=batch, gamma=0.05)
    schemes = [("ASR+ATR", replace(base_cfg, adaptive=True))]
    if not args.quick:
        schemes.insert(0, ("Fixed rates (no ATR)", replace(base_cfg, adaptive=False, fixed_fps=1.0)))
    started = time.perf_counter()
    world = build_world(setup, max(clients))
    base = pretrained_base(setup)
    rows, per_camera = [], []
    for scheme, ams in schemes:
        reference = simulate(world, base, setup, list(range(max(clients))), ams)
        ref_acc = {r["camera"]: r["accuracy"] for r in reference.per_camera}
        per_camera += [{"scheme": scheme, "clients": "reference", **r} for r in reference.per_camera]
        for n in clients:
            run = simulate(world, base, setup, list(range(n)), ams, phase_cost_s=args.phase_cost)
            per_camera += [{"scheme": scheme, "clients": n, **r} for r in run.per_camera]
            drops = [r["accuracy"] - ref_acc[r["camera"]] for r in run.per_camera]
            rows.append({"scheme": scheme, "clients": n, "accuracy": float(np.mean([r["accuracy"] for r in run.per_camera])),
                         "reference_accuracy": float(np.mean([ref_acc[c] for c in range(n)])),
                         "accuracy_drop": float(np.mean(drops)), "worst_drop": float(np.min(drops)),
                         "updates_per_camera": run.phases / n, "phase_cpu_s": run.retrain_s / max(run.phases, 1),
                         "worker_busy": run.phases * args.phase_cost / setup.duration_s})
            logging.info("%s", rows[-1])
    print_table(per_camera, columns=["scheme", "clients", "camera", "accuracy", "f1", "updates", "sample_fps"],
                title="Per camera")
    print_table(rows, title=f"Accuracy vs clients per retraining worker (phase = {args.phase_cost:.1f} s of worker "
                f"time, K={iterations}, gamma 5%, {setup.duration_s:.0f} s per camera)")
    print(f"total {time.perf_counter() - started:.1f}s")
    save_results({"rows": rows, "per_camera": per_camera, "setup": asdict(setup), "phase_cost_s": args.phase_cost},
                 args.out, rows=rows)
    plot(rows, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
