"""One registry of base architectures (torchvision style: register, build by name, list)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from stemcell.models.segmented import SegmentedNet
from stemcell.registry import Registry

BaseFactory = Callable[..., SegmentedNet]


def _load_builtin() -> None:
    """Import the architecture modules so their @register_base decorators run (once)."""
    from stemcell.models import architectures  # noqa: F401


_BASES: Registry[BaseFactory] = Registry("base model", _load_builtin)
# Decorator: make a factory `f(*, num_classes, torchvision_weights) -> SegmentedNet` buildable by name.
register_base = _BASES.register
list_bases = _BASES.names  # names accepted by `build_base`


def build_base(
    name: str, *, num_classes: int = 5, seed: int = 0, torchvision_weights: str | Path | None = None
) -> SegmentedNet:
    """Build base `name` with deterministic random init (seeded), or from a user's local checkpoint.

    Nothing is ever downloaded: `torchvision_weights` is a local torchvision state_dict file, loaded
    with `weights_only=True`; its classifier is dropped (the head is ours).
    """
    factory = _BASES.get(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = factory(num_classes=num_classes, torchvision_weights=torchvision_weights)
    return net.eval()
