"""Memory accounting on a case small enough to check by hand, and against independent counts."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from stemcell.models import SegmentedNet, build_base, make_app_model, segment_hash
from stemcell.sharing import StemTree, activation_bytes, ideal_savings, memory_report, module_bytes, perturbed_app_model


def _hand_base() -> SegmentedNet:
    """Two 1x1-conv segments (6 params each, no buffers) and 2 feature channels."""
    torch.manual_seed(0)
    segments = [nn.Conv2d(3, 2, 1, bias=False), nn.Conv2d(2, 2, 1)]
    return SegmentedNet("hand", segments, ["a", "b"], feature_dim=2, num_classes=1).eval()


@pytest.fixture()
def hand_tree() -> tuple[SegmentedNet, StemTree]:
    """Apps on one camera: A at b=2 (max sharing), B at b=1, C at b=0 (nothing shared)."""
    base = _hand_base()
    tree = StemTree(2)
    for name, b in (("A", 2), ("B", 1), ("C", 0)):
        tree.add(("cam", name), perturbed_app_model(base, b, seed=ord(name)))
    return base, tree


def test_weights_by_hand(hand_tree: tuple[SegmentedNet, StemTree]) -> None:
    base, tree = hand_tree
    x = torch.zeros(4, 3, 2, 2)
    report = memory_report(tree, x, tree.rows_for_cameras(["cam"] * 4),
                           [segment_hash(s) for s in base.segments], [6, 6])
    # every app alone: 2 segments (24 B each) + head Linear(2,1) (12 B) = 60 B; three apps = 180 B
    assert report.bytes_no_merge == 180 and report.params_no_merge == 45
    # merged: base a + base b (A, B use them) + B's b + C's a, b + 3 heads = 5*24 + 3*12 = 156 B
    assert report.bytes_merged == 156 and report.distinct_modules == 8 and report.tree_nodes == 8
    assert report.savings == pytest.approx(1 - 156 / 180)
    assert report.savings_ideal == pytest.approx(1 - 39 / 45)  # no buffers: bytes and params agree
    assert report.cuda_max_memory_allocated is None  # CPU


def test_activations_by_hand(hand_tree: tuple[SegmentedNet, StemTree]) -> None:
    _, tree = hand_tree
    act = activation_bytes(tree, torch.zeros(4, 3, 2, 2), tree.rows_for_cameras(["cam"] * 4))
    # per frame: input 3*2*2 floats = 48 B, a segment output 2*2*2 floats = 32 B, a head output 4 B
    # tree: 5 segment nodes + 3 heads on 4 frames = (5*32 + 3*4) * 4 = 688 B
    assert act.merged_total == 688
    # peak: input (4*48) + one full path (4*(32+32+4)) = 192 + 272
    assert act.merged_peak == 464
    assert act.no_merge_total == 3 * 272 and act.no_merge_peak == 464


def test_ideal_savings_formula() -> None:
    # backbone 85 + 15 params, 8 apps each owning the last segment, heads free
    assert ideal_savings([85, 15], [({1}, 0)] * 8) == pytest.approx(1 - (85 + 8 * 15) / 800)
    assert ideal_savings([85, 15], [({0, 1}, 0)] * 8) == pytest.approx(0.0)  # no sharing at all
    assert ideal_savings([85, 15], [(set(), 5)] * 2) == pytest.approx(1 - (100 + 10) / 210)


def test_report_matches_independent_counts_on_a_real_base() -> None:
    base = build_base("tiny_cnn")
    models = {("c0", "car"): perturbed_app_model(base, 4, seed=1),
              ("c1", "car"): perturbed_app_model(base, 4, seed=2),
              ("c1", "dog"): make_app_model(base, 6, 1)}
    tree = StemTree(base.num_segments)
    for key, model in models.items():
        tree.add(key, model)
    x = torch.zeros(6, 3, 32, 32)
    report = memory_report(tree, x, tree.rows_for_cameras(["c0", "c1"] * 3),
                           [segment_hash(s) for s in base.segments],
                           [sum(p.numel() for p in s.parameters()) for s in base.segments])
    assert report.bytes_no_merge == sum(module_bytes(m) for m in models.values())
    distinct = {segment_hash(m): module_bytes(m) for model in models.values()
                for m in (*model.stem, *model.upper, model.head)}
    assert report.bytes_merged == sum(distinct.values())
    assert 0 < report.savings < 1
    assert abs(report.savings - report.savings_ideal) < 0.05
