"""One registry of base architectures (torchvision style: register, build by name, list)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from stemcell.models.segmented import SegmentedNet

BaseFactory = Callable[..., SegmentedNet]
_REGISTRY: dict[str, BaseFactory] = {}


def register_base(name: str) -> Callable[[BaseFactory], BaseFactory]:
    """Decorator: make a factory `f(*, num_classes, torchvision_weights) -> SegmentedNet` buildable by name."""

    def wrap(factory: BaseFactory) -> BaseFactory:
        if name in _REGISTRY:
            raise ValueError(f"base model {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def list_bases() -> list[str]:
    """Names accepted by `build_base`."""
    _load_builtin()
    return sorted(_REGISTRY)


def build_base(
    name: str, *, num_classes: int = 5, seed: int = 0, torchvision_weights: str | Path | None = None
) -> SegmentedNet:
    """Build base `name` with deterministic random init (seeded), or from a user's local checkpoint.

    Nothing is ever downloaded: `torchvision_weights` is a local torchvision state_dict file, loaded
    with `weights_only=True`; its classifier is dropped (the head is ours).
    """
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown base model {name!r}; choose one of {sorted(_REGISTRY)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _REGISTRY[name](num_classes=num_classes, torchvision_weights=torchvision_weights)
    return net.eval()


def _load_builtin() -> None:
    """Import the architecture modules so their @register_base decorators run (once)."""
    from stemcell.models import architectures  # noqa: F401
