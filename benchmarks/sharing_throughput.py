"""Frames/s of N apps on one base: one model alone vs max stem sharing vs no sharing, side by side.

Mainstream's premise: with max sharing, N apps cost about one model (the shared stem runs once per
frame, each app adds only its head), while N separate models cost N times one. Measured on the same
device in one run, configurations interleaved so load changes hit all of them alike.

    python benchmarks/sharing_throughput.py --out results/sharing_throughput.json
    python benchmarks/sharing_throughput.py --quick --out /tmp/st.json

App weights are the base's perturbed (a stand-in for fine-tuning: what matters for speed is that
every app's own segments are distinct tensors). `fps_*` are each configuration's best round (other
processes only ever slow a run down); `*_paired_median` ratios are the median over rounds of each
round's ratio to the same round's single-model run. A frame counts once when every app analysed it.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.models import build_base
from stemcell.sharing import StemTree, perturbed_app_model


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny_cnn at 64x64, fewer repetitions (< 60 s on 2 cores)")
    p.add_argument("--out", type=Path, required=True, help="JSON output (Parquet and PNG are written beside it)")
    p.add_argument("--base", help="base model (default: mobilenet_v3_small, tiny_cnn with --quick)")
    p.add_argument("--size", type=int, help="input resolution (default 128, 64 with --quick)")
    p.add_argument("--apps", type=int, default=10, help="number of apps (default 10)")
    p.add_argument("--batch", type=int, default=32, help="frames per forward (default 32)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, fixed for all runs (default 1: one "
                   "thread does not stall waiting for a second core that other processes hold)")
    p.add_argument("--rounds", type=int, help="at most this many rounds, each timing every configuration once "
                   "(default 300, 100 with --quick)")
    p.add_argument("--budget-s", type=float, help="stop starting rounds after this many seconds, with at least 3 "
                   "rounds done (default 120, 10 with --quick)")
    return p.parse_args()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    started = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - started


def _interleaved(
    configs: dict[str, Callable[[], object]], repeats: dict[str, int], batch: int, device: torch.device,
    max_rounds: int, budget_s: float,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Frames/s samples of every configuration, call by call interleaved in a rotating order, so load
    from other processes falls on all of them alike. Returns all samples and per-round medians."""
    names = list(configs)
    samples: dict[str, list[float]] = {name: [] for name in names}
    per_round: dict[str, list[float]] = {name: [] for name in names}
    started = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < 3 or time.perf_counter() - started < budget_s):
        order = names[rounds % len(names):] + names[: rounds % len(names)]
        this_round: dict[str, list[float]] = {name: [] for name in names}
        for i in range(max(repeats.values())):
            for name in order:
                if i < repeats[name]:
                    this_round[name].append(batch / _seconds(configs[name], device))
        for name, v in this_round.items():
            samples[name].extend(v)
            per_round[name].append(statistics.median(v))
        rounds += 1
    return samples, per_round


def main() -> None:
    args = _parse()
    base_name = args.base or ("tiny_cnn" if args.quick else "mobilenet_v3_small")
    size = args.size or (64 if args.quick else 128)
    max_rounds = args.rounds or (100 if args.quick else 300)
    budget_s = args.budget_s or (10.0 if args.quick else 120.0)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    base = build_base(base_name)
    s = base.num_segments
    x = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    single = copy.deepcopy(base).to(device).eval()  # the base itself stays on the CPU for the app copies

    def tree_of(branchpoint: int, apps: int = args.apps) -> StemTree:
        tree = StemTree(s, device)
        for i in range(apps):
            tree.add(("cam", f"app{i}"), perturbed_app_model(base, branchpoint, seed=i + 1))
        return tree

    max_tree, mid_tree, one_app_tree = tree_of(s), tree_of(s // 2), tree_of(s, apps=1)
    all_rows = {key: torch.arange(args.batch) for key in max_tree.keys()}
    one_row = {key: torch.arange(args.batch) for key in one_app_tree.keys()}
    separate = [perturbed_app_model(base, 0, seed=100 + i).to(device).eval() for i in range(args.apps)]

    def run_single() -> object:
        with torch.inference_mode():
            return single(x)

    def run_separate() -> object:
        with torch.inference_mode():
            return [m(x) for m in separate]

    configs: dict[str, Callable[[], object]] = {
        "single_model": run_single,
        "tree_one_app": lambda: one_app_tree.forward(x, one_row),
        "max_sharing": lambda: max_tree.forward(x, all_rows),
        f"half_sharing_b{s // 2}": lambda: mid_tree.forward(x, all_rows),
        "no_sharing": run_separate,
    }
    cost = {name: min(_seconds(fn, device) for _ in range(2)) for name, fn in configs.items()}  # + warm-up
    # Cheap configurations are timed several times per round so that each gets about the same wall
    # time as the slowest (no sharing): otherwise the cheap ones would have few samples.
    repeats = {name: max(1, min(10, round(max(cost.values()) / c))) for name, c in cost.items()}
    samples, per_round = _interleaved(configs, repeats, args.batch, device, max_rounds, budget_s)
    rounds = len(per_round["single_model"])

    # Other processes only ever slow a run down, so the fastest run of each configuration is the best
    # estimate of its own cost (timeit's rule); ratios use those. The median over rounds of each
    # round's ratio to the same round's single-model median is reported beside it.
    fps = {name: max(v) for name, v in samples.items()}
    ratio = {name: fps[name] / fps["single_model"] for name in samples}
    paired = {
        name: statistics.median(a / b for a, b in zip(v, per_round["single_model"])) for name, v in per_round.items()
    }
    rows = [
        {"config": name, "apps": 1 if name in ("single_model", "tree_one_app") else args.apps, "fps_best": fps[name],
         "fps_median": statistics.median(v), "ratio_to_single": ratio[name], "ratio_paired_median": paired[name]}
        for name, v in samples.items()
    ]
    result = {
        "base": base_name,
        "input_size": size,
        "batch": args.batch,
        "apps": args.apps,
        "threads": args.threads,
        "device": str(device),
        "rounds": rounds,
        "calls_per_round": repeats,
        "fps_single_model": fps["single_model"],
        "fps_max_sharing": fps["max_sharing"],
        "fps_half_sharing": fps[f"half_sharing_b{s // 2}"],
        "fps_no_sharing": fps["no_sharing"],
        "ratio_max_sharing_to_single": ratio["max_sharing"],
        "ratio_no_sharing_to_single": ratio["no_sharing"],
        "ratio_max_sharing_to_single_paired_median": paired["max_sharing"],
        "ratio_no_sharing_to_single_paired_median": paired["no_sharing"],
        # The same stem-tree executor with one app: isolates the cost of sharing among N apps from the
        # difference between the tree's execution path and a plain nn.Module call.
        "ratio_max_sharing_to_tree_one_app": fps["max_sharing"] / fps["tree_one_app"],
        "samples": samples,
        "rows": rows,
    }
    title = f"{args.apps} apps on {base_name} @{size}px, batch {args.batch}, {args.threads} threads, {device}"
    print_table(rows, title=title)
    print(f"max sharing / single = {ratio['max_sharing']:.3f} (goal >= 0.8; paired median "
          f"{paired['max_sharing']:.3f}); no sharing / single = {ratio['no_sharing']:.3f} (about 1/{args.apps}; "
          f"paired median {paired['no_sharing']:.3f}); {rounds} rounds; max sharing / the same tree with one app = "
          f"{result['ratio_max_sharing_to_tree_one_app']:.3f}")
    out = save_results(result, args.out, rows=rows)

    fig, ax = plt.subplots(figsize=(7, 3.8))
    names = [r["config"] for r in rows]
    bars = ax.bar(names, [r["fps_best"] for r in rows], color=["#777", "#999", "#2a7", "#7b5", "#c44"], label="best run")
    ax.scatter(names, [r["fps_median"] for r in rows], color="black", marker="_", s=300, zorder=3, label="median run")
    ax.legend()
    for bar, r in zip(bars, rows):
        ax.annotate(f"{r['ratio_to_single']:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("frames / s (every app analyses every frame)")
    ax.set_title(f"{args.apps} apps, {base_name} {size}px, batch {args.batch} ({device})")
    save_plot(fig, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
