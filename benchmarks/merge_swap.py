"""Swapping merged models under a memory cap: layer swapping against whole-model swapping.

Imported by `merging_joint.py` (keys `fps_layer_swap`, `fps_model_swap`, `fps_resident`, bytes copied
per batch); the merge itself lives there.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from stemcell.models import AppModel
from stemcell.sharing import StemTree, module_bytes
from stemcell.sharing.swapping import MemoryCapTooSmall, ModelSwapExecutor, SwappingStemTree


def _fps(runs: dict[str, Callable[[], object]], frames: int, iters: int, device: torch.device) -> dict[str, float]:
    """Frames/s of each mode from the median batch time, the modes interleaved batch by batch so that
    a busy machine slows them alike (2 warm-up batches each)."""
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
    return {name: frames / float(np.median(t)) for name, t in times.items()}


def swap_figures(models: Sequence[AppModel], keys: Sequence[tuple[str, str]], cap: int, iters: int,
              size: int) -> dict[str, object]:
    """Frames/s of the merged models: all resident, layer swapping and whole-model swapping under `cap`."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    segments = len(models[0].upper)
    resident, layer, host = StemTree(segments, device), SwappingStemTree(segments, device, cap), StemTree(segments)
    for key, m in zip(keys, models):
        for tree in (resident, layer, host):
            tree.add(key, m)
    per_camera = 8
    cams = [c for c in sorted({k[0] for k in keys}) for _ in range(per_camera)]
    x = torch.rand(len(cams), 3, size, size)
    rows = resident.rows_for_cameras(cams)
    try:
        model_swap = ModelSwapExecutor(host, device, cap)
        model_cap = cap
    except MemoryCapTooSmall:  # not one whole model fits: the baseline needs at least the largest model
        model_cap = max(sum(module_bytes(n.module) for n in host.path(k)) for k in host.keys())
        model_swap = ModelSwapExecutor(host, device, model_cap)
    want, got_layer, got_model = resident.forward(x, rows), layer.forward(x, rows), model_swap.forward(x, rows)
    for key in want:
        torch.testing.assert_close(got_layer[key], want[key], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got_model[key], want[key], rtol=1e-4, atol=1e-5)
    out = {
        "device": str(device),
        "swap_cap_bytes": cap,
        "model_swap_cap_bytes": model_cap,
        **_fps({"fps_resident": lambda: resident.forward(x, rows), "fps_layer_swap": lambda: layer.forward(x, rows),
                "fps_model_swap": lambda: model_swap.forward(x, rows)}, len(x), iters, device),
        "layer_swap_resident_bytes": layer.plan.resident_bytes if layer.plan else 0,
        "layer_swap_peak_bytes": layer.plan.peak_bytes if layer.plan else 0,
        "model_swap_slots": model_swap.plan.slots,
    }
    layer_before, model_before = layer.copied_bytes, model_swap.copied_bytes
    layer.forward(x, rows)
    model_swap.forward(x, rows)
    out["layer_swap_bytes_per_batch"] = layer.copied_bytes - layer_before
    out["model_swap_bytes_per_batch"] = model_swap.copied_bytes - model_before
    return out


