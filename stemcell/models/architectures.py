"""Built-in bases: a tiny CNN for CI speed, and torchvision's mobilenet_v3_small/large, resnet18/50 and
efficientnet_b0 (random init, or a local torchvision state dict used as is).

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


def _torchvision(builder: str, weights: str | Path | None) -> nn.Module:
    """A torchvision architecture with random init, or with a local state dict (never downloaded)."""
    model = getattr(torchvision.models, builder)(weights=None)
    if weights is not None:
        load_torchvision_checkpoint(model, weights, builder)
    return model


def _grouped(name: str, features: nn.Sequential, groups: dict[str, list[int]], feature_dim: int,
             num_classes: int) -> SegmentedNet:
    """Cut a torchvision `features` stack into segments at stage boundaries (`groups`: name -> indices)."""
    segments = [nn.Sequential(*(features[i] for i in idx)) for idx in groups.values()]
    return SegmentedNet(name, segments, list(groups), feature_dim=feature_dim, num_classes=num_classes)


@register_base("mobilenet_v3_small")
def _mobilenet_v3_small(*, num_classes: int, torchvision_weights: str | Path | None = None) -> SegmentedNet:
    groups = {"stem": [0], "block1": [1], "block2": [2, 3], "block3": [4, 5, 6], "block4": [7, 8],
              "block5": [9, 10], "block6": [11], "last_conv": [12]}
    features = _torchvision("mobilenet_v3_small", torchvision_weights).features
    return _grouped("mobilenet_v3_small", features, groups, 576, num_classes)


@register_base("mobilenet_v3_large")
def _mobilenet_v3_large(*, num_classes: int, torchvision_weights: str | Path | None = None) -> SegmentedNet:
    groups = {"stem": [0], "block1": [1], "block2": [2, 3], "block3": [4, 5, 6], "block4": [7, 8, 9, 10],
              "block5": [11, 12], "block6": [13, 14, 15], "last_conv": [16]}
    features = _torchvision("mobilenet_v3_large", torchvision_weights).features
    return _grouped("mobilenet_v3_large", features, groups, 960, num_classes)


@register_base("efficientnet_b0")
def _efficientnet_b0(*, num_classes: int, torchvision_weights: str | Path | None = None) -> SegmentedNet:
    groups = {"stem": [0], **{f"stage{i}": [i] for i in range(1, 8)}, "last_conv": [8]}
    features = _torchvision("efficientnet_b0", torchvision_weights).features
    return _grouped("efficientnet_b0", features, groups, 1280, num_classes)


def _resnet(name: str, torchvision_weights: str | Path | None, splits: dict[str, int], feature_dim: int,
            num_classes: int) -> SegmentedNet:
    """ResNet segments: the stem, then each layer cut into `splits[layer]` runs of whole blocks."""
    model = _torchvision(name, torchvision_weights)
    segments: list[nn.Module] = [nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)]
    names = ["stem"]
    for layer, parts in splits.items():
        blocks = list(getattr(model, layer))
        bounds = [round(k * len(blocks) / parts) for k in range(parts + 1)]
        for k in range(parts):
            run = blocks[bounds[k] : bounds[k + 1]]
            segments.append(getattr(model, layer) if parts == 1 else run[0] if len(run) == 1 else nn.Sequential(*run))
            names.append(layer + ("abcdefgh"[k] if parts > 1 else ""))
    return SegmentedNet(name, segments, names, feature_dim=feature_dim, num_classes=num_classes)


@register_base("resnet18")
def _resnet18(*, num_classes: int, torchvision_weights: str | Path | None = None) -> SegmentedNet:
    return _resnet("resnet18", torchvision_weights, {"layer1": 1, "layer2": 2, "layer3": 2, "layer4": 2}, 512,
                   num_classes)


@register_base("resnet50")
def _resnet50(*, num_classes: int, torchvision_weights: str | Path | None = None) -> SegmentedNet:
    return _resnet("resnet50", torchvision_weights, {"layer1": 1, "layer2": 2, "layer3": 2, "layer4": 1}, 2048,
                   num_classes)
