"""Per-segment latency on the current device: the cost model's raw data (Mainstream M-Package)."""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from stemcell.models import SegmentedNet
from stemcell.models.detection import DetectHead


@dataclass(frozen=True)
class LatencyProfile:
    device: str  # e.g. "cpu" or "cuda:0 (NVIDIA H100)"
    batch_sizes: tuple[int, ...]  # batch sizes measured
    segment_s: dict[int, tuple[float, ...]]  # batch size -> seconds per *batch* for each segment
    head_s: dict[int, float]  # batch size -> seconds per batch for a binary head
    full_model_s: dict[int, float]  # batch size -> seconds per batch for the whole model, timed in one go
    detect_head_s: dict[int, float] | None = None  # batch size -> seconds per batch for a detect app's head


def _median_time(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up (allocator, cudnn autotune, lazy init)
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


@torch.inference_mode()
def profile_latency(
    base: SegmentedNet, input_size: int, batch_sizes: Sequence[int] = (1, 8, 32), repeats: int = 10,
    device: torch.device | None = None,
) -> LatencyProfile:
    """Median wall time of each segment (fed its real input shape), the heads (a classifier's, a detect
    app's on the last feature map) and the full model."""
    device = device or torch.device("cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    base = copy.deepcopy(base).to(device).eval()  # the caller's base stays where it is (trials ship it)
    head = torch.nn.Linear(base.feature_dim, 1).to(device)
    detect_head = DetectHead(base.feature_dim, 1).to(device).eval()  # its cost hardly depends on the classes
    segment_s: dict[int, tuple[float, ...]] = {}
    head_s: dict[int, float] = {}
    full_s: dict[int, float] = {}
    detect_s: dict[int, float] = {}
    for bs in batch_sizes:
        x = torch.randn(bs, 3, input_size, input_size, device=device)
        times = []
        for segment in base.segments:
            times.append(_median_time(lambda s=segment, a=x: s(a), repeats, sync))
            x = segment(x)
        segment_s[bs] = tuple(times)
        pooled = x.mean(dim=(2, 3))
        head_s[bs] = _median_time(lambda: head(pooled), repeats, sync)
        detect_s[bs] = _median_time(lambda a=x: detect_head(a), repeats, sync)
        image = torch.randn(bs, 3, input_size, input_size, device=device)
        full_s[bs] = _median_time(lambda: base(image), repeats, sync)
    name = "cpu" if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})"
    return LatencyProfile(name, tuple(batch_sizes), segment_s, head_s, full_s, detect_s)
