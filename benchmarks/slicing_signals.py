"""Which signal says that a camera's next micro-windows pay off? A diagnosis on the RECL slicing fleet.

The fleet follows round-robin (every camera 2 micro-windows per update window, its deployed model
carried over); before each update window, for every camera, a copy of its model is trained k = 0..4
micro-windows on its samples and scored on the next window's live frames (ground truth), so the
*live* value of each window is known; beside it, every signal a scheduler could read before or
after the first window (the probe):

- `drop`: the agreement drop a RetrainWorker reports (`live_stats.Agreement`, reference - now);
- `headroom`: 1 - agreement of the deployed model with the teacher on the newest samples;
- `newest_vs_buffer`: agreement on the older buffered samples minus on the newest (a change of scene);
- `loss_newest`: the deployed model's BCE loss on the newest samples;
- `probe_gain`: held-out accuracy gain of the first window (RECL's in-band profile);
- `loss_descent`: training-set BCE loss before minus after the first window;
- `update_gain`: what the last update window's training did on *fresh* samples: agreement of the
  deployed model on the newest samples minus that of the model it replaced (paired, all samples).

`python benchmarks/slicing_signals.py --quick --static-cameras 4 --adapt-static 200 --static-segment-s 100000`
prints per camera type (static / drifting) the mean of every signal and of the live value of the
first window (`live_first`: k=1 minus k=0) and of the further ones (`live_extra`: k=3 minus k=1, what
gain-driven slicing moves between cameras), and the correlation of every signal with `live_extra`.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from slicing_fleet import (
    WindowData,
    accuracy,
    adam_steps,
    add_fleet_arguments,
    agreement_prior,
    finish_fleet_arguments,
    setup,
)

from stemcell.eval import print_table, save_results
from stemcell.learning.live_stats import Agreement
from stemcell.models import AppModel

SIGNALS = ("drop", "headroom", "newest_vs_buffer", "loss_newest", "probe_gain", "loss_descent", "update_gain")
MAX_K = 4


@torch.no_grad()
def _loss(model: AppModel, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float(F.binary_cross_entropy_with_logits(model.upper_forward(x)[:, 0], y))


def newest(d: WindowData, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The newest window's teacher-labelled samples (its training part and its held-out blocks)."""
    k = samples - len(d.x_val)
    return torch.cat([d.x_train[-k:], d.x_val]), torch.cat([d.y_train[-k:], d.y_val])


def camera_window(model: AppModel, opt: torch.optim.Optimizer, previous: AppModel, d: WindowData, drop: float,
                  args: argparse.Namespace, seed: int) -> dict[str, float]:
    """Signals and live accuracy after k = 0..MAX_K windows, on copies (the caller's model is untouched)."""
    xn, yn = newest(d, args.samples)
    k = args.samples - len(d.x_val)
    row = {"drop": drop, "headroom": 1 - accuracy(model, xn, yn), "loss_newest": _loss(model, xn, yn)}
    row["update_gain"] = 1 - row["headroom"] - accuracy(previous, xn, yn)
    older = len(d.x_train) - k
    row["newest_vs_buffer"] = (accuracy(model, d.x_train[:older], d.y_train[:older]) - (1 - row["headroom"])
                               if older else 0.0)
    trial = copy.deepcopy(model)
    trial_opt = torch.optim.Adam(trial.trainable_parameters(), lr=args.lr)
    trial_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    gen = torch.Generator().manual_seed(seed)
    val0, loss0 = accuracy(trial, d.x_val, d.y_val), _loss(trial, d.x_train, d.y_train)
    for step in range(MAX_K + 1):
        if step:
            adam_steps(trial, trial_opt, d.x_train, d.y_train, args.iters, args.batch, gen)
        row[f"live_k{step}"] = accuracy(trial, d.x_live, d.y_live)
        if step == 1:
            row["probe_gain"] = accuracy(trial, d.x_val, d.y_val) - val0
            row["loss_descent"] = loss0 - _loss(trial, d.x_train, d.y_train)
    row["live_first"] = row["live_k1"] - row["live_k0"]
    row["live_extra"] = row["live_k3"] - row["live_k1"]
    return row


def diagnose(args: argparse.Namespace) -> list[dict[str, object]]:
    """One row per (camera, update window) of the round-robin trajectory."""
    torch.set_num_threads(max(1, args.threads))
    data = setup(args)
    models = {c: copy.deepcopy(args.initial_models[c]) for c in range(args.cameras)}
    opts = {c: torch.optim.Adam(m.trainable_parameters(), lr=args.lr) for c, m in models.items()}
    gens = {c: torch.Generator().manual_seed(args.seed * 100 + c) for c in models}
    agreements = {c: Agreement() for c in models}
    previous = {c: copy.deepcopy(m) for c, m in models.items()}  # the model before the last update window
    per_camera = args.micro_windows // args.cameras
    rows: list[dict[str, object]] = []
    for w in range(1, args.windows + 1):
        for c, model in models.items():
            d = data[(c, w)]
            drop = agreement_prior(model, d, args, agreements[c], w, "agreement")
            row = camera_window(model, opts[c], previous[c], d, drop, args, args.seed * 1000 + w * 10 + c)
            previous[c] = copy.deepcopy(model)
            rows.append({"seed": args.seed, "camera": f"cam{c}", "static": c in args.static_ids, "window": w, **row})
            for _ in range(per_camera):  # the round-robin trajectory goes on
                adam_steps(model, opts[c], d.x_train, d.y_train, args.iters, args.batch, gens[c])
    return rows


def summary(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Per camera type: mean of every signal and live value; then corr(signal, live_extra) over all rows."""
    out: list[dict[str, object]] = []
    for name, sel in (("static", [r for r in rows if r["static"]]), ("drifting", [r for r in rows if not r["static"]])):
        if sel:
            out.append({"group": name, "n": len(sel), **{k: float(np.mean([float(r[k]) for r in sel]))  # type: ignore[arg-type]
                                                        for k in (*SIGNALS, "live_first", "live_extra", "live_k1")}})
    extra = np.array([float(r["live_extra"]) for r in rows])  # type: ignore[arg-type]
    first = np.array([float(r["live_first"]) for r in rows])  # type: ignore[arg-type]
    for target, values in (("corr_live_extra", extra), ("corr_live_first", first)):
        out.append({"group": target, "n": len(rows), **{k: float(np.corrcoef([float(r[k]) for r in rows], values)[0, 1])  # type: ignore[arg-type]
                                                       for k in SIGNALS}})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick fleet of recl_slicing.py")
    parser.add_argument("--seeds", type=int, default=1, help="seeds, from --seed on")
    parser.add_argument("--out", type=Path, default=Path("out/recl/signals.json"))
    add_fleet_arguments(parser)
    args = parser.parse_args(argv)
    if not args.quick:
        args.cameras, args.windows = args.cameras or 12, args.windows or 10
    finish_fleet_arguments(parser, args, args.quick)
    rows: list[dict[str, object]] = []
    first = args.seed
    for seed in range(first, first + args.seeds):
        args.seed = seed
        rows += diagnose(args)
    table = summary(rows)
    print_table(table, title="signals vs live value of micro-windows (round-robin trajectory)")
    save_results({"benchmark": "slicing_signals", "rows": table, "per_camera_window": rows}, args.out)


if __name__ == "__main__":
    main()
