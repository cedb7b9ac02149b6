"""Stand-ins for fine-tuned apps, for measurements where only *which* weights differ matters.

Memory merging and stem-sharing throughput depend on which segments an app holds its own copy of,
not on what those weights learned. Fine-tuning changes every trainable tensor, so adding seeded
noise to exactly those tensors reproduces the storage and compute structure of fine-tuned apps in
milliseconds. Accuracy claims must come from really trained candidates (M-Trainer), never these.
"""
from __future__ import annotations

from collections.abc import Collection

import torch

from stemcell.models import AppModel, SegmentedNet, make_app_model


def perturbed_app_model(
    base: SegmentedNet,
    branchpoint: int,
    seed: int,
    *,
    own: Collection[int] | None = None,
    scale: float = 0.01,
) -> AppModel:
    """An app model cut at `branchpoint` whose segments in `own` (default: all of [b, S)) and head
    get seeded relative noise; the other upper segments stay byte-identical to the base's."""
    own = range(branchpoint, base.num_segments) if own is None else own
    if any(not branchpoint <= s < base.num_segments for s in own):
        raise ValueError(f"own segments {sorted(own)} must lie in [{branchpoint}, {base.num_segments})")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the new head's init
        model = make_app_model(base, branchpoint, num_outputs=1)
    tensors = [p for s in own for p in model.upper[s - branchpoint].parameters()]
    with torch.no_grad():
        for p in [*tensors, *model.head.parameters()]:
            p.add_(torch.randn(p.shape, generator=generator) * scale * (p.abs().mean() + 1e-3))
    return model.eval()
