"""Frames/s of N apps on one base: one model alone vs max stem sharing vs no sharing, side by side.

Mainstream's premise: with max sharing, N apps cost about one model (the shared stem runs once per
frame, each app adds only its head), while N separate models cost N times one. Measured on the same
device in one run, configurations interleaved so load changes hit all of them alike.

    python benchmarks/sharing_throughput.py --out results/sharing_throughput.json
    python benchmarks/sharing_throughput.py --quick --out /tmp/st.json

App weights are the base's perturbed (a stand-in for fine-tuning: what matters for speed is that
every app's own segments are distinct tensors).
"""
from __future__ import annotations

import argparse
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
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads, fixed for all runs (default 2)")
    p.add_argument("--reps", type=int, help="interleaved repetitions (default 7, 3 with --quick)")
    p.add_argument("--seconds", type=float, help="target seconds per measurement (default 1.0, 0.4 with --quick)")
    return p.parse_args()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fps(fn: Callable[[], object], frames: int, seconds: float, device: torch.device) -> float:
    """Frames/s of `fn` over at least `seconds` (iterations chosen from a first timed call)."""
    _sync(device)
    started = time.perf_counter()
    fn()
    _sync(device)
    iters = max(1, round(seconds / max(time.perf_counter() - started, 1e-6)))
    started = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return iters * frames / (time.perf_counter() - started)


def main() -> None:
    args = _parse()
    base_name = args.base or ("tiny_cnn" if args.quick else "mobilenet_v3_small")
    size = args.size or (64 if args.quick else 128)
    reps = args.reps or (3 if args.quick else 7)
    seconds = args.seconds or (0.4 if args.quick else 1.0)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    base = build_base(base_name)
    s = base.num_segments
    x = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    single = base.to(device).eval()

    def tree_of(branchpoint: int) -> StemTree:
        tree = StemTree(s, device)
        for i in range(args.apps):
            tree.add(("cam", f"app{i}"), perturbed_app_model(base, branchpoint, seed=i + 1))
        return tree

    max_tree, mid_tree = tree_of(s), tree_of(s // 2)
    all_rows = {key: torch.arange(args.batch) for key in max_tree.keys()}
    separate = [perturbed_app_model(base, 0, seed=100 + i).to(device).eval() for i in range(args.apps)]

    def run_single() -> object:
        with torch.inference_mode():
            return single(x)

    def run_separate() -> object:
        with torch.inference_mode():
            return [m(x) for m in separate]

    configs: dict[str, Callable[[], object]] = {
        "single_model": run_single,
        "max_sharing": lambda: max_tree.forward(x, all_rows),
        f"half_sharing_b{s // 2}": lambda: mid_tree.forward(x, all_rows),
        "no_sharing": run_separate,
    }
    samples: dict[str, list[float]] = {name: [] for name in configs}
    for fn in configs.values():  # warm-up (allocator, kernel choice)
        fn()
    for rep in range(reps):
        names = list(configs)
        for name in names[rep % len(names):] + names[: rep % len(names)]:  # rotate the order each rep
            samples[name].append(_fps(configs[name], args.batch, seconds, device))

    fps = {name: statistics.median(v) for name, v in samples.items()}
    rows = [
        {"config": name, "apps": 1 if name == "single_model" else args.apps, "fps_median": fps[name],
         "fps_min": min(v), "fps_max": max(v), "ratio_to_single": fps[name] / fps["single_model"]}
        for name, v in samples.items()
    ]
    result = {
        "base": base_name,
        "input_size": size,
        "batch": args.batch,
        "apps": args.apps,
        "threads": args.threads,
        "device": str(device),
        "reps": reps,
        "fps_single_model": fps["single_model"],
        "fps_max_sharing": fps["max_sharing"],
        "fps_half_sharing": fps[f"half_sharing_b{s // 2}"],
        "fps_no_sharing": fps["no_sharing"],
        "ratio_max_sharing_to_single": fps["max_sharing"] / fps["single_model"],
        "ratio_no_sharing_to_single": fps["no_sharing"] / fps["single_model"],
        "samples": samples,
        "rows": rows,
    }
    print_table(rows, title=f"{args.apps} apps on {base_name} @{size}px, batch {args.batch}, {args.threads} threads, {device}")
    print(f"max sharing / single = {result['ratio_max_sharing_to_single']:.3f} (goal >= 0.8); "
          f"no sharing / single = {result['ratio_no_sharing_to_single']:.3f} (about 1/{args.apps})")
    out = save_results(result, args.out, rows=rows)

    fig, ax = plt.subplots(figsize=(7, 3.8))
    bars = ax.bar([r["config"] for r in rows], [r["fps_median"] for r in rows], color=["#777", "#2a7", "#7b5", "#c44"])
    ax.errorbar([r["config"] for r in rows], [r["fps_median"] for r in rows],
                yerr=[[r["fps_median"] - r["fps_min"] for r in rows], [r["fps_max"] - r["fps_median"] for r in rows]],
                fmt="none", color="black", capsize=3)
    for bar, r in zip(bars, rows):
        ax.annotate(f"{r['ratio_to_single']:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("frames / s (all apps analysed)")
    ax.set_title(f"{args.apps} apps, {base_name} {size}px, batch {args.batch} ({device})")
    save_plot(fig, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
