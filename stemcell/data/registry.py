"""One registry of data sources: the `data:` section's `kind` picks the loader (torchvision style)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from stemcell.data.dataset import FrameDataset
from stemcell.world import WorldConfig


@dataclass(frozen=True)
class LoadRequest:
    """What the trainer asks of every source."""

    frames_per_video: int  # decode at most this many labelled frames per video, spread evenly
    input_size: int  # frames are stored resized to (input_size, input_size)
    world: WorldConfig  # the synthetic world (used by kind: synthetic only)


SourceLoader = Callable[[BaseModel, LoadRequest], FrameDataset]
_REGISTRY: dict[str, SourceLoader] = {}


def register_source(kind: str) -> Callable[[SourceLoader], SourceLoader]:
    """Decorator: make `loader(section, request) -> FrameDataset` the loader of `data.kind: <kind>`."""

    def wrap(loader: SourceLoader) -> SourceLoader:
        if kind in _REGISTRY:
            raise ValueError(f"data source {kind!r} is already registered")
        _REGISTRY[kind] = loader
        return loader

    return wrap


def list_sources() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def load_dataset(section: BaseModel, request: LoadRequest) -> FrameDataset:
    """Load the frames and labels a `data:` section describes."""
    _load_builtin()
    kind = str(getattr(section, "kind"))
    if kind not in _REGISTRY:
        raise ValueError(f"unknown data kind {kind!r}; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[kind](section, request)


def _load_builtin() -> None:
    """Import the built-in source modules so their @register_source decorators run (once)."""
    from stemcell.data import coco, image_folder, synthetic, video_labels  # noqa: F401
