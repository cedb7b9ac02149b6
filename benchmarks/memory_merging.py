"""Weight memory of 8 apps fine-tuned from one base: merged (identical layers stored once) vs not.

Two cases, each measured exactly (bytes of parameters + buffers actually held):
- prefix: every app fine-tunes the layers above a branchpoint that leaves ~85% of the base's
  parameters frozen (the base/branchpoint whose cumulative parameter fraction is closest to 0.85 is
  chosen and reported). The frozen stem is shared by all apps.
- middle: every app retrains one middle segment only; the segments after it stay byte-identical to
  the base's. A prefix tree cannot share them (their inputs differ, so they run per app), but
  merging stores them once (Gemel-style): memory follows *distinct* layers, not apps.
Also reported: activation bytes at batch 32 (merged tree vs each model alone), the analytic savings
bound from parameter counts, and on CUDA the measured `torch.cuda.max_memory_allocated`.

    python benchmarks/memory_merging.py --out results/memory_merging.json
    python benchmarks/memory_merging.py --quick --out /tmp/mm.json

Apps are really fine-tuned (Adam on BCE, "is class X present", frames of the synthetic world), from
the randomly initialised base: memory depends on which tensors differ, not on how well they learned.
"""
from __future__ import annotations

import argparse
import copy
import itertools
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch

from stemcell.eval import print_table, save_plot, save_results
from stemcell.eval.plotting import plt
from stemcell.models import AppModel, SegmentedNet, build_base, list_bases, make_app_model, segment_hash, to_input
from stemcell.sharing import StemTree, ideal_savings, memory_report, module_params
from stemcell.sharing.memory import cuda_peak_bytes
from stemcell.training import world_frames
from stemcell.training.loop import batched, fit_bce
from stemcell.world import CLASSES, World, WorldConfig

TARGET_FRACTION = 0.85


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="64px input, fewer frames and one epoch (< 60 s on 2 cores)")
    p.add_argument("--out", type=Path, required=True, help="JSON output (Parquet and PNG are written beside it)")
    p.add_argument("--apps", type=int, default=8, help="apps fine-tuned from the base (default 8)")
    p.add_argument("--batch", type=int, default=32, help="frames in the activation probe (default 32)")
    p.add_argument("--size", type=int, help="input resolution (default 128, 64 with --quick)")
    p.add_argument("--frames", type=int, help="training frames per app (default 256, 48 with --quick)")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (default 2, 1 with --quick)")
    return p.parse_args()


def choose_branchpoint(names: Sequence[str], target: float = TARGET_FRACTION) -> tuple[str, int, float, list[dict]]:
    """The (base, branchpoint) whose frozen share of backbone parameters is closest to `target`."""
    rows = []
    for name in names:
        params = [module_params(s) for s in build_base(name).segments]
        for b, cum in enumerate(itertools.accumulate(params), start=1):
            rows.append({"base": name, "branchpoint": b, "frozen_param_fraction": cum / sum(params)})
    best = min(rows, key=lambda r: abs(r["frozen_param_fraction"] - target))
    return best["base"], best["branchpoint"], best["frozen_param_fraction"], rows


def finetune_apps(
    base: SegmentedNet, branchpoint: int, own: Collection[int], x: torch.Tensor, presence: np.ndarray,
    apps: int, epochs: int,
) -> list[AppModel]:
    """Fine-tune `apps` binary apps: segments in `own` + a new head train, every other segment stays
    the base's (frozen, eval mode, so even BatchNorm statistics stay byte-identical)."""
    features = batched(lambda t: base.features(t, 0, branchpoint), x)  # the frozen stem runs once for all apps
    models = []
    for i in range(apps):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(i)
            model = make_app_model(base, branchpoint, num_outputs=1)
        trainable = [model.upper[s - branchpoint] for s in own]
        for segment in model.upper:
            segment.requires_grad_(any(segment is t for t in trainable))
        model.train()
        for segment in model.upper:
            if not any(segment is t for t in trainable):
                segment.eval()
        target = torch.from_numpy(presence[:, i % len(CLASSES)].astype(np.float32))[:, None]
        params = [p for t in (*trainable, model.head) for p in t.parameters()]
        fit_bce(model.upper_forward, params, features, target, epochs=epochs, lr=1e-3, batch_size=32, seed=i)
        models.append(model.eval())
    return models


def measure(case: str, base: SegmentedNet, models: Sequence[AppModel], probe: torch.Tensor, device: torch.device,
            own: Collection[int]) -> dict:
    """Exact weight bytes, activations at the probe batch, CUDA peaks: merged tree vs separate models."""
    digests = [segment_hash(s) for s in base.segments]
    params = [module_params(s) for s in base.segments]
    tree = StemTree(base.num_segments, device)
    for i, model in enumerate(models):
        tree.add(("cam", f"app{i}"), model)
    rows = tree.rows_for_cameras(["cam"] * len(probe))
    report = memory_report(tree, probe, rows, digests, params)
    cuda_no_merge = None
    if device.type == "cuda":
        del tree
        torch.cuda.empty_cache()
        # deepcopy copies the shared stem too: each model holds all its weights, as when deployed alone
        separate = [copy.deepcopy(m).to(device) for m in models]
        x = probe.to(device)
        with torch.inference_mode():
            cuda_no_merge = cuda_peak_bytes(lambda: [s(x) for s in separate], device)
        del separate
        torch.cuda.empty_cache()
    act = report.activation
    head = module_params(models[0].head)
    return {
        "case": case,
        "apps": len(models),
        "own_segments": sorted(own),
        "bytes_no_merge": report.bytes_no_merge,
        "bytes_merged": report.bytes_merged,
        "savings": report.savings,
        "savings_ideal": report.savings_ideal,
        "gap_points": 100 * abs(report.savings - report.savings_ideal),
        "savings_prefix_only_ideal": ideal_savings(params, [(set(range(min(own), len(params))), head)] * len(models)),
        "tree_nodes": report.tree_nodes,
        "distinct_modules": report.distinct_modules,
        "activation_merged_total": act.merged_total,
        "activation_merged_peak": act.merged_peak,
        "activation_no_merge_total": act.no_merge_total,
        "activation_no_merge_peak": act.no_merge_peak,
        "cuda_peak_merged": report.cuda_max_memory_allocated,
        "cuda_peak_no_merge": cuda_no_merge,
    }


def main() -> None:
    args = _parse()
    size = args.size or (64 if args.quick else 128)
    n_frames = args.frames or (48 if args.quick else 256)
    epochs = args.epochs or (1 if args.quick else 2)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)

    base_name, b, fraction, candidates = choose_branchpoint(list_bases())
    base = build_base(base_name)
    s = base.num_segments
    middle = s // 2
    print(f"base {base_name}: branchpoint {b} ({base.branchpoints[b]}) freezes {fraction:.1%} of the backbone's "
          f"parameters (closest to {TARGET_FRACTION:.0%}); middle case retrains segment {middle} "
          f"({base.branchpoints[middle + 1].removeprefix('after_')}) only")
    train, _ = world_frames(World(WorldConfig(seed=0, num_cameras=2)), [0, 1], n_frames // 2)
    x = to_input(train.frames, size)
    probe = x[: args.batch] if len(x) >= args.batch else x.repeat(args.batch // len(x) + 1, 1, 1, 1)[: args.batch]

    prefix = finetune_apps(base, b, range(b, s), x, train.presence, args.apps, epochs)
    mid = finetune_apps(base, middle, {middle}, x, train.presence, args.apps, epochs)
    rows = [measure("prefix", base, prefix, probe, device, range(b, s)),
            measure("middle", base, mid, probe, device, {middle})]
    main_case = rows[0]
    result = {
        "base": base_name,
        "branchpoint": b,
        "branchpoint_name": base.branchpoints[b],
        "frozen_param_fraction": fraction,
        "middle_segment": middle,
        "input_size": size,
        "batch": args.batch,
        "device": str(device),
        "bytes_no_merge": main_case["bytes_no_merge"],
        "bytes_merged": main_case["bytes_merged"],
        "savings": main_case["savings"],
        "savings_ideal": main_case["savings_ideal"],
        "cases": rows,
        "branchpoint_candidates": candidates,
    }
    mb = 1 / 2**20
    print_table([{k: (v * mb if k.startswith(("bytes", "activation", "cuda")) and v is not None else v)
                  for k, v in r.items() if k != "own_segments"} for r in rows],
                title=f"{args.apps} apps on {base_name} (MiB; activations at batch {args.batch}, {device})")
    print(f"prefix case: savings {main_case['savings']:.3f} (goal >= 0.70), ideal {main_case['savings_ideal']:.3f}, "
          f"gap {main_case['gap_points']:.2f} points (goal <= 5); middle case: savings {rows[1]['savings']:.3f} "
          f"vs {rows[1]['savings_prefix_only_ideal']:.3f} if only a shared prefix were merged")
    out = save_results(result, args.out, rows=rows)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panels = (("weights", ("bytes_no_merge", "bytes_merged")),
              ("activations (sum)", ("activation_no_merge_total", "activation_merged_total")))
    for ax, (what, keys) in zip(axes, panels):
        xs = np.arange(len(rows))
        for j, (key, label, color) in enumerate(zip(keys, ("no merging", "merged"), ("#c44", "#2a7"))):
            ax.bar(xs + (j - 0.5) * 0.38, [r[key] * mb for r in rows], 0.38, label=label, color=color)
        ax.set_xticks(xs, [f"{r['case']}\nsaves {1 - r[keys[1]] / r[keys[0]]:.0%}" for r in rows])
        ax.set_ylabel("MiB")
        ax.set_title(f"{what}, {args.apps} apps, {base_name}")
        ax.legend()
    save_plot(fig, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
