"""Zones: polygons in a camera's frame pixels that restrict a detect app's counts and events.

An object is in a zone when its box's bottom-centre is: that is where it touches the ground, so a
person standing in a doorway counts even when their head overlaps the wall above it (the rule
Frigate and DeepStream use).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

Polygon = tuple[tuple[float, float], ...]  # (x, y) vertices in frame pixels, at least 3


def check_polygon(points: Sequence[Sequence[float]], where: str) -> Polygon:
    """A polygon from [[x, y], ...]; fewer than 3 points or a non-pair vertex is an error naming `where`."""
    polygon = tuple(tuple(float(v) for v in p) for p in points)
    if len(polygon) < 3 or any(len(p) != 2 for p in polygon):
        raise ValueError(f"{where}: a zone is a polygon of at least 3 [x, y] points, got {list(points)}")
    return polygon  # type: ignore[return-value]


def bottom_centres(boxes: torch.Tensor) -> torch.Tensor:
    """(M, 4) x0, y0, x1, y1 -> (M, 2) the middle of each box's bottom edge."""
    return torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], dim=1)


def points_in_polygon(points: torch.Tensor, polygon: Polygon) -> torch.Tensor:
    """bool (M,): even-odd rule (a ray to +x crosses the boundary an odd number of times)."""
    x, y = points[:, 0].double(), points[:, 1].double()
    inside = torch.zeros(len(points), dtype=torch.bool)
    for (xa, ya), (xb, yb) in zip(polygon, polygon[1:] + polygon[:1]):
        spans = (ya > y) != (yb > y)
        cross = xa + (y - ya) * (xb - xa) / (yb - ya if yb != ya else 1.0)
        inside ^= spans & (x < cross)
    return inside


def in_zones(boxes: torch.Tensor, zones: Sequence[Polygon]) -> torch.Tensor:
    """bool (M,): the box's bottom-centre lies in at least one zone."""
    centres = bottom_centres(boxes.cpu())
    hit = torch.zeros(len(boxes), dtype=torch.bool)
    for zone in zones:
        hit |= points_in_polygon(centres, zone)
    return hit
