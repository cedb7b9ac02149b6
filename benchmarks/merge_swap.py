"""Swapping merged models under a memory cap: layer swapping against whole-model swapping (the seed's baseline).

`swap_figures` is what `merging_joint.py` reports for its jointly merged models (keys `fps_layer_swap`,
`fps_model_swap`, `fps_resident`, `*_bytes_per_batch`). Run alone, this script measures a workload
built in seconds: 6 per-camera apps (3 cameras x car/person) on tiny_cnn whose two largest segments
(conv5, conv6: 78% of a model's bytes) are merged, i.e. one tensor for all six, as the joint merge
ties them, and whose conv1-conv4 and heads are each model's own (seeded perturbations: only which
bytes are shared matters for swapping, see `stemcell.sharing.synthetic`).

Under a cap of half the merged bytes, whole-model swapping treats each model as its own unit and
copies its full weights (merged layers included) before running it; layer swapping keeps the merged
layers resident and copies each model's own layers in the tree's execution order, prefetching the
next. Both use the same copy path (one flat buffer per unit, preallocated device slots; pinned
memory and a copy stream on CUDA), and results are checked equal to everything resident before
timing. The three modes are timed interleaved batch by batch, in several rounds, on one batch of
`--frames-per-camera` frames per camera.

    python benchmarks/merge_swap.py --quick --out /tmp/swap.json
"""
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from stemcell.eval import print_table, save_results
from stemcell.models import AppModel, build_base
from stemcell.sharing import StemTree, module_bytes, perturbed_app_model
from stemcell.sharing.swap_plan import MemoryCapTooSmall, flat_bytes
from stemcell.sharing.swapping import ModelSwapExecutor, SwappingStemTree

MODES = ("fps_resident", "fps_layer_swap", "fps_model_swap")


def _batch_seconds(runs: dict[str, Callable[[], object]], iters: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per batch of each mode, the modes interleaved batch by batch so that a busy machine
    slows them alike (2 warm-up batches each)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for it in range(iters + 2):
        for name, run in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if it >= 2:
                times[name].append(time.perf_counter() - t0)
    return times


def swap_figures(models: Sequence[AppModel], keys: Sequence[tuple[str, str]], cap: int, iters: int, size: int,
                 *, rounds: int = 3, frames_per_camera: int = 8) -> dict[str, object]:
    """Frames/s and bytes copied per batch of the merged models: all resident, layer swapping and
    whole-model swapping under `cap`; each fps is the median over `rounds` rounds of `iters` batches."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    segments = len(models[0].upper) + len(models[0].stem)
    resident, layer, host = StemTree(segments, device), SwappingStemTree(segments, device, cap), StemTree(segments)
    for key, m in zip(keys, models):
        for tree in (resident, layer, host):
            tree.add(key, m)
    cams = [c for c in sorted({k[0] for k in keys}) for _ in range(frames_per_camera)]
    x = torch.rand(len(cams), 3, size, size)
    rows = resident.rows_for_cameras(cams)
    try:
        model_swap = ModelSwapExecutor(host, device, cap)
        model_cap = cap
    except MemoryCapTooSmall:  # not one whole model fits: the baseline needs at least the largest model
        model_cap = max(sum(flat_bytes(n.module) for n in host.path(k)) for k in host.keys())
        model_swap = ModelSwapExecutor(host, device, model_cap)
    want, got_layer, got_model = resident.forward(x, rows), layer.forward(x, rows), model_swap.forward(x, rows)
    for key in want:
        torch.testing.assert_close(got_layer[key], want[key], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got_model[key], want[key], rtol=1e-4, atol=1e-5)
    runs = dict(zip(MODES, (lambda: resident.forward(x, rows), lambda: layer.forward(x, rows),
                            lambda: model_swap.forward(x, rows))))
    per_round = [{m: len(x) / float(np.median(t)) for m, t in _batch_seconds(runs, iters, device).items()}
                 for _ in range(rounds)]
    layer_before, model_before = layer.copied_bytes, model_swap.copied_bytes
    layer.forward(x, rows)
    model_swap.forward(x, rows)
    assert layer.plan is not None
    return {
        "device": str(device),
        "swap_cap_bytes": cap,
        "model_swap_cap_bytes": model_cap,
        "frames_per_batch": len(x),
        **{m: float(np.median([r[m] for r in per_round])) for m in MODES},
        "rounds": per_round,
        "layer_swap_speedup_rounds": [r["fps_layer_swap"] / r["fps_model_swap"] for r in per_round],
        "layer_swap_bytes_per_batch": layer.copied_bytes - layer_before,
        "model_swap_bytes_per_batch": model_swap.copied_bytes - model_before,
        "layer_swap_resident_bytes": layer.plan.resident_bytes,
        "layer_swap_peak_bytes": layer.plan.peak_bytes,
        "layer_swap_slots": layer.plan.slots,
        "model_swap_resident_models": len(model_swap.plan.resident),
        "model_swap_slots": model_swap.plan.slots,
    }


def merged_workload(cameras: int = 3,
                    apps: Sequence[str] = ("car", "person")) -> tuple[list[AppModel], list[tuple[str, str]]]:
    """Per-camera apps on one tiny_cnn whose conv5 and conv6 are merged (shared by all) and whose
    conv1-conv4 and heads are their own."""
    torch.manual_seed(0)
    base = build_base("tiny_cnn")
    keys = [(f"cam{c}", a) for c in range(cameras) for a in apps]
    models = [perturbed_app_model(base, 0, seed=k, own=range(4)) for k in range(len(keys))]
    return models, keys


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer batches and rounds (a minute on 2 cores)")
    p.add_argument("--out", required=True, help="JSON output")
    p.add_argument("--size", type=int, default=64, help="input resolution")
    p.add_argument("--frames-per-camera", type=int, default=8, help="frames of each camera in one batch")
    p.add_argument("--iters", type=int, help="timed batches per mode and round (default 50, 20 quick)")
    p.add_argument("--rounds", type=int, help="rounds (default 5, 3 quick)")
    return p.parse_args()


def main() -> None:
    args = _parse()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    models, keys = merged_workload()
    merged = StemTree(len(models[0].stem) + len(models[0].upper))
    for key, m in zip(keys, models):
        merged.add(key, m)
    unmerged = sum(module_bytes(m) for m in models)
    out = {"bytes_unmerged": unmerged, "bytes_merged": merged.store.bytes(),
           **swap_figures(models, keys, merged.store.bytes() // 2, args.iters or (20 if args.quick else 50),
                          args.size, rounds=args.rounds or (3 if args.quick else 5),
                          frames_per_camera=args.frames_per_camera)}
    out["layer_swap_speedup"] = out["fps_layer_swap"] / out["fps_model_swap"]
    print_table([{"mode": m.removeprefix("fps_"), "frames/s": out[m],
                  "MB copied per batch": {"fps_layer_swap": out["layer_swap_bytes_per_batch"] / 1e6,
                                          "fps_model_swap": out["model_swap_bytes_per_batch"] / 1e6}.get(m, 0.0)}
                 for m in MODES],
                title=f"{len(models)} models, {out['bytes_merged'] / 1e6:.2f} MB merged ({unmerged / 1e6:.2f} MB "
                      f"unmerged), cap {out['swap_cap_bytes'] / 1e6:.2f} MB, {out['frames_per_batch']} frames "
                      f"per batch on {out['device']}")
    print(f"layer swap {out['layer_swap_speedup']:.2f}x whole-model swap (per round "
          f"{', '.join(f'{r:.2f}' for r in out['layer_swap_speedup_rounds'])}; goal >= 2)")
    save_results(out, args.out)


if __name__ == "__main__":
    main()
