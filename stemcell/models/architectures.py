"""Built-in bases: a tiny CNN for CI speed, and torchvision's mobilenet_v3_small and resnet18.

Segment boundaries follow the networks' own stage boundaries (where activations are narrowest), so
every branchpoint is a natural place to share: Mainstream uses ~5-10 per model.
"""
from __future__ import annotations

from pathlib import Path

import torchvision
from torch import nn

from stemcell.models.registry import register_base
from stemcell.models.segmented import SegmentedNet
from stemcell.models.weights import load_torchvision_checkpoint


def _conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


@register_base("tiny_cnn")
def _tiny_cnn(*, num_classes: int, torchvision_weights: str | Path | None = None) -> SegmentedNet:
    if torchvision_weights is not None:
        raise ValueError("tiny_cnn is not a torchvision architecture; it has no torchvision checkpoint")
    widths = [(3, 16, 2), (16, 32, 2), (32, 48, 2), (48, 64, 1), (64, 96, 2), (96, 128, 1)]
    segments = [_conv_block(cin, cout, s) for cin, cout, s in widths]
    names = [f"conv{i + 1}" for i in range(len(segments))]
    return SegmentedNet("tiny_cnn", segments, names, feature_dim=128, num_classes=num_classes)


@register_base("mobilenet_v3_small")
def _mobilenet_v3_small(*, num_classes: int, torchvision_weights: str | Path | None = None) -> SegmentedNet:
    model = torchvision.models.mobilenet_v3_small(weights=None)
    if torchvision_weights is not None:
        load_torchvision_checkpoint(model, torchvision_weights)
    f = model.features
    groups = {"stem": [0], "block1": [1], "block2": [2, 3], "block3": [4, 5, 6], "block4": [7, 8],
              "block5": [9, 10], "block6": [11], "last_conv": [12]}
    segments = [nn.Sequential(*(f[i] for i in idx)) for idx in groups.values()]
    return SegmentedNet("mobilenet_v3_small", segments, list(groups), feature_dim=576, num_classes=num_classes)


@register_base("resnet18")
def _resnet18(*, num_classes: int, torchvision_weights: str | Path | None = None) -> SegmentedNet:
    model = torchvision.models.resnet18(weights=None)
    if torchvision_weights is not None:
        load_torchvision_checkpoint(model, torchvision_weights)
    segments = [
        nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool),
        model.layer1,
        model.layer2[0], model.layer2[1],
        model.layer3[0], model.layer3[1],
        model.layer4[0], model.layer4[1],
    ]
    names = ["stem", "layer1", "layer2a", "layer2b", "layer3a", "layer3b", "layer4a", "layer4b"]
    return SegmentedNet("resnet18", segments, names, feature_dim=512, num_classes=num_classes)
