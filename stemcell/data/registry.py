"""One registry of data sources: the `data:` section's `kind` picks the loader (torchvision style)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel

from stemcell.config import TrainConfig
from stemcell.data.dataset import FrameDataset, model_inputs
from stemcell.registry import Registry
from stemcell.world import WorldConfig


@dataclass(frozen=True)
class LoadRequest:
    """What the trainer asks of every source."""

    frames_per_video: int  # decode at most this many labelled frames per video, spread evenly
    input_size: int  # frames are stored resized to (input_size, input_size)
    world: WorldConfig  # the synthetic world (used by kind: synthetic only)


def request_for(config: TrainConfig, world_seed: int | None = None) -> LoadRequest:
    """What a training config asks of its data source (`world_seed` picks another synthetic world)."""
    w = config.world
    world = WorldConfig(seed=w.seed if world_seed is None else world_seed, num_cameras=w.num_cameras,
                        height=w.height, width=w.width, fps=w.fps, duration_s=w.duration_s)
    return LoadRequest(config.trainer.train_frames_per_camera, config.base.input_size, world)


SourceLoader = Callable[[BaseModel, LoadRequest], FrameDataset]


def _load_builtin() -> None:
    """Import the built-in source modules so their @register_source decorators run (once)."""
    from stemcell.data import coco, image_folder, synthetic, video_labels  # noqa: F401


_SOURCES: Registry[SourceLoader] = Registry("data kind", _load_builtin)
# Decorator: make `loader(section, request) -> FrameDataset` the loader of `data.kind: <kind>`.
register_source = _SOURCES.register
list_sources = _SOURCES.names


def load_dataset(section: BaseModel, request: LoadRequest) -> FrameDataset:
    """Load the frames and labels a `data:` section describes."""
    return _SOURCES.get(str(getattr(section, "kind")))(section, request)


def model_input_batches(config: TrainConfig, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """The configured source's frames as the model sees them, with their labels.

    Yields (float32 (B, 3, S, S) normalised with the config's mean/std at its input size, int (B, C)
    object counts in the data's class order); the same transform training and serving apply.
    """
    data = load_dataset(config.data, request_for(config))
    norm = config.base.normalization
    inputs = model_inputs(data.samples.frames, config.base.input_size, norm.mean, norm.std, batch_size)
    for start, x in zip(range(0, len(data.samples), batch_size), inputs):
        yield x, data.samples.object_counts()[start : start + batch_size]
