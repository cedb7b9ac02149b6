"""A backbone as an ordered list of segments, so it can be cut at any branchpoint."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ClassifierHead(nn.Module):
    """Global average pool + linear: the cheapest possible app-specific part (Max-sharing)."""

    def __init__(self, in_channels: int, num_outputs: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class SegmentedNet(nn.Module):
    """A base model whose backbone is `segments` run in order, then `head`.

    `branchpoints[b]` names the cut after `b` segments (b=0 is the raw input). Keeping segments as
    separate modules (rather than slicing a Sequential at run time) is what lets the stem tree run
    a shared prefix once and lets the merger hash each segment on its own.
    """

    def __init__(
        self,
        name: str,
        segments: Sequence[nn.Module],
        segment_names: Sequence[str],
        feature_dim: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        if len(segments) != len(segment_names):
            raise ValueError("one name per segment is required")
        self.name = name
        self.segments = nn.ModuleList(segments)
        self.branchpoints: tuple[str, ...] = ("input", *(f"after_{n}" for n in segment_names))
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.head = ClassifierHead(feature_dim, num_classes)

    @property
    def num_segments(self) -> int:
        return len(self.segments)

    def features(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run segments[start:stop] on `x` (an activation at cut `start`)."""
        for segment in self.segments[start:stop]:
            x = segment(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
