"""Matching rules, greedy order, joint-retraining merge with rollback, tied tensors, incremental undo."""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from stemcell.models import build_base, make_app_model
from stemcell.package import load_package
from stemcell.sharing import StemTree
from stemcell.sharing.joint_merge import (
    Candidate,
    JointMerger,
    MergeConfig,
    MergeStep,
    ModelData,
    merge_candidates,
    presplit,
    retry_subsets,
    split_by_distance,
    tie,
)
from stemcell.sharing.matching import layer_signature, match_report, model_units, package_models
from stemcell.sharing.merger import module_bytes
from stemcell.sharing.remerge import LiveMerge
from tests.helpers.builders import tiny_package

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _models(n: int, seeds: tuple[int, ...] = (0,)):
    """`n` full-network (branchpoint 0) tiny_cnn apps, alternating over bases built with `seeds`."""
    bases = [build_base("tiny_cnn", seed=s) for s in seeds]
    out = []
    for i in range(n):
        torch.manual_seed(100 + i)
        out.append(make_app_model(bases[i % len(bases)], 0, num_outputs=1))
    return out


def _data(i: int, n: int = 48, size: int = 16) -> ModelData:
    """Model i detects 'channel i%3 brighter than the others' on random images: learnable, per-model."""
    g = torch.Generator().manual_seed(i)
    x = torch.randn(2 * n, 3, size, size, generator=g)
    c = i % 3
    y = (x[:, c].mean((1, 2)) > x.mean((1, 2, 3))).float()[:, None]
    return ModelData(x[:n], y[:n], x[n:], y[n:])


def test_layers_match_on_type_shape_and_hyper_parameters_not_values() -> None:
    a = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
    b = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
    assert not torch.equal(a.weight, b.weight)
    assert layer_signature(a) == layer_signature(b)  # different weights still match
    assert layer_signature(a) != layer_signature(nn.Conv2d(16, 32, 3, stride=1, padding=1, bias=False))  # stride
    assert layer_signature(a) != layer_signature(nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=True))  # bias
    assert layer_signature(a) != layer_signature(nn.Conv2d(16, 48, 3, stride=2, padding=1, bias=False))  # shape
    assert layer_signature(nn.BatchNorm2d(8)) != layer_signature(nn.BatchNorm2d(8, eps=1e-3))  # hyper-parameter
    assert layer_signature(nn.BatchNorm2d(8)) != layer_signature(nn.InstanceNorm2d(8, affine=True))  # type


def test_match_report_pairs_and_workload_against_hand_count() -> None:
    tiny = _models(2, seeds=(0, 1))
    mobile = {"m": make_app_model(build_base("mobilenet_v3_small"), 0, num_outputs=1)}
    report = match_report({"a": tiny[0], "b": tiny[1], **mobile})
    full = sum(module_bytes(s) for s in tiny[0].upper)
    ab = next(p for p in report.pairs if (p.a, p.b) == ("a", "b"))
    assert ab.matched_units == 6 and ab.shareable_bytes == full and ab.savings == pytest.approx(0.5)
    am = next(p for p in report.pairs if (p.a, p.b) == ("a", "m"))
    assert am.shareable_bytes == 0  # no segment of tiny_cnn matches mobilenet's
    m_bytes = sum(module_bytes(s) for s in mobile["m"].upper)
    assert report.workload.bytes_no_sharing == 2 * full + m_bytes
    assert report.workload.bytes_max_sharing == full + m_bytes
    # at layer granularity different architectures share some layers (e.g. a BatchNorm of equal width)
    layer = match_report({"a": tiny[0], **mobile}, "layer")
    assert layer.pairs[0].shareable_bytes > 0


def test_match_report_over_an_m_package(tmp_path: Path) -> None:
    tiny_package(tmp_path, branchpoints=(0, 3), apps=("car", "person"))
    models = package_models(load_package(tmp_path))
    assert sorted(models) == ["car@0", "car@3", "person@0", "person@3"]
    report = match_report(models)
    assert len(report.pairs) == 6 and all(p.matched_units == 6 for p in report.pairs)  # one base: all match
    one = sum(module_bytes(s) for s in models["car@0"].upper)
    assert report.workload.bytes_max_sharing == one


def test_greedy_order_is_by_bytes_saved_and_groups_one_unit_per_model() -> None:
    models = _models(3)
    units = [model_units(str(i), m) for i, m in enumerate(models)]
    candidates = merge_candidates(units)
    saved = [c.bytes_saved for c in candidates]
    assert saved == sorted(saved, reverse=True)
    assert candidates[0].members == ((0, "upper.5"), (1, "upper.5"), (2, "upper.5"))  # conv6 is the largest
    assert all(len({i for i, _ in c.members}) == len(c.members) for c in candidates)
    # a model excluded from one unit leaves the rest of that group standing (2 members save 1 copy)
    partial = merge_candidates(units, exclude=frozenset({(2, "upper.5")}))
    top = next(c for c in partial if c.signature == candidates[0].signature)
    assert top.bytes_saved == candidates[0].unit_bytes


def test_merge_ties_one_tensor_and_the_store_keeps_it_once() -> None:
    models = _models(3, seeds=(0, 1))
    data = [_data(i) for i in range(3)]
    result = JointMerger(models, data, MergeConfig(max_epochs=2, tolerance_points=100.0)).run()
    assert result.stopped == "no candidates" and len(result.groups) == 6 and not result.failed
    m = result.models
    for s in range(6):
        assert m[0].upper[s] is m[1].upper[s] is m[2].upper[s]
        w = [mm.upper[s][0].weight for mm in m]
        assert w[0] is w[1] is w[2] and w[0].data_ptr() == w[2].data_ptr()
    tree = StemTree(6)
    for i, model in enumerate(m):
        tree.add(("cam", str(i)), model)
    backbone = sum(module_bytes(s) for s in m[0].upper)
    heads = sum(module_bytes(mm.head) for mm in m)
    assert tree.store.bytes() == backbone + heads  # the merged backbone is stored once


def test_missed_target_rolls_back_to_the_checkpoint(caplog: pytest.LogCaptureFixture) -> None:
    models = _models(2)
    data = [_data(i) for i in range(2)]
    before = [copy.deepcopy(m.state_dict()) for m in models]
    targets = (0.0, 101.0)  # model 1 can never reach 101 points: every merge must be rolled back
    with caplog.at_level(logging.WARNING):
        result = JointMerger(models, data, MergeConfig(max_epochs=1), targets=targets).run()
    assert not result.groups and len(result.failed) == 6
    assert all(s.reason == "target missed" and s.epochs == 1 and len(s.accuracy) == 2 for s in result.steps)
    for model, state in zip(result.models, before):
        for k, v in model.state_dict().items():
            assert torch.equal(v, state[k]), k  # weights and BatchNorm statistics restored
    assert result.models[0].upper[5] is not result.models[1].upper[5]
    assert all(m.upper[5] is not r.upper[5] for m, r in zip(models, result.models))  # the caller's models untouched
    assert "rolled back" in caplog.text and "< target 101.0" in caplog.text


def test_split_by_distance_separates_two_weight_clusters() -> None:
    convs = [nn.Conv2d(2, 2, 1) for _ in range(5)]
    with torch.no_grad():
        for k, c in enumerate(convs):  # members 0, 2, 3 near 0; members 1, 4 near 10
            c.weight.fill_(10.0 if k in (1, 4) else 0.0).add_(0.01 * k)
            c.bias.fill_(0.0)
    cand = Candidate("sig", tuple((k, "u") for k in range(5)), 24)
    assert [c.members for c in split_by_distance(cand, convs)] == [((0, "u"), (2, "u"), (3, "u")),
                                                                  ((1, "u"), (4, "u"))]
    assert split_by_distance(Candidate("sig", cand.members[:3], 24), convs[:3]) == []  # halves too small


def test_a_failed_group_is_retried_without_the_models_that_missed() -> None:
    models, data = _models(4, seeds=(0, 1)), [_data(i, n=16) for i in range(4)]
    result = JointMerger(models, data, MergeConfig(max_epochs=1), targets=(0.0, 0.0, 0.0, 101.0)).run()
    assert result.groups and all({i for i, _ in g.members} == {0, 1, 2} for g in result.groups)  # never model 3
    first = result.steps[0]
    assert first.candidate.members == tuple((k, "upper.5") for k in range(4)) and not first.accepted
    assert first.epochs == 1 and first.accuracy[3] < first.targets[3]  # checked, retrained, still missed
    assert result.steps[1].candidate.members == ((0, "upper.5"), (1, "upper.5"), (2, "upper.5"))
    assert result.steps[1].accepted
    assert result.models[0].upper[5] is result.models[2].upper[5] is not result.models[3].upper[5]


def _step(candidate: Candidate, accuracy: tuple[float, ...], targets: tuple[float, ...],
          models: tuple[int, ...] | None = None) -> MergeStep:
    ids = models or tuple(i for i, _ in candidate.members)
    return MergeStep(candidate, False, 1, ids, accuracy, targets, 0.0, "target missed")


def test_retry_subsets_drops_misfits_keeps_them_together_or_splits_by_distance() -> None:
    cand = Candidate("sig", tuple((k, "u") for k in range(5)), 24)
    convs = [nn.Conv2d(2, 2, 1) for _ in range(5)]
    fits, misfits = retry_subsets(cand, _step(cand, (90, 50, 90, 90, 50), (80,) * 5), convs)
    assert fits.members == ((0, "u"), (2, "u"), (3, "u")) and misfits.members == ((1, "u"), (4, "u"))
    one_misfit = retry_subsets(cand, _step(cand, (90, 50, 90, 90, 90), (80,) * 5), convs)
    assert [c.members for c in one_misfit] == [((0, "u"), (2, "u"), (3, "u"), (4, "u"))]  # a lone misfit stays out
    # only a model outside the group missed (it shares another unit with a member): split by distance
    with torch.no_grad():
        for k, c in enumerate(convs):
            c.weight.fill_(10.0 if k in (1, 4) else 0.0)
    outside = retry_subsets(cand, _step(cand, (90,) * 5 + (10,), (80,) * 6, models=(0, 1, 2, 3, 4, 5)), convs)
    assert [c.members for c in outside] == [((0, "u"), (2, "u"), (3, "u")), ((1, "u"), (4, "u"))]
    # too few would be left: split as well
    pair = Candidate("sig", cand.members[:2], 24)
    assert retry_subsets(pair, _step(pair, (90, 50), (80, 80)), convs[:2]) == []


def test_budget_stops_the_merge_and_reports_it() -> None:
    ticks = iter(range(0, 1000, 10))
    result = JointMerger(_models(2), [_data(i) for i in range(2)], MergeConfig(budget_s=25.0, max_epochs=5),
                         targets=(101.0, 101.0), clock=lambda: float(next(ticks))).run()
    assert result.stopped == "budget"
    assert result.steps[-1].reason == "budget" and not result.groups


def test_models_without_matching_layers_are_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    tiny = _models(1)[0]
    mobile = make_app_model(build_base("mobilenet_v3_small"), 0, num_outputs=1)
    data = [_data(0, size=32), _data(1, size=32)]
    with caplog.at_level(logging.INFO):
        result = JointMerger([tiny, mobile], data).run()
    assert not result.steps and result.accuracy == result.baseline
    assert "no matching layers" in caplog.text


def test_incremental_update_keeps_shared_units_and_undo_gives_own_copies() -> None:
    models = _models(3)
    data = [_data(i) for i in range(3)]
    result = JointMerger(models, data, MergeConfig(max_epochs=1, tolerance_points=100.0)).run()
    live = LiveMerge.from_result(result)
    shared = copy.deepcopy(live.models[0].upper.state_dict())
    own_head = live.models[0].head.fc.weight.detach().clone()
    live.update(0, _data(10), epochs=1)
    for k, v in live.models[0].upper.state_dict().items():
        assert torch.equal(v, shared[k]), k  # shared weights and BN statistics untouched
    assert not torch.equal(live.models[0].head.fc.weight, own_head)  # its own layers did train
    # fresh samples on which model 2 is wrong everywhere: its merges are undone, nothing else restarts
    x, y = data[2].val_x, data[2].val_y
    live.targets = (0.0, 0.0, 50.0)
    wrong = 1.0 - (live.models[2](x) > 0).float().detach()
    undone = live.check({0: (x, y), 2: (x, wrong)})
    assert len(undone) == 6 and live.counts().undone == 6 and live.counts().groups == 6
    assert live.models[2].upper[5] is not live.models[0].upper[5]  # model 2 got its own copy back
    assert live.models[0].upper[5] is live.models[1].upper[5]  # the others still share: no restart
    assert torch.equal(live.models[2].upper[5][0].weight, live.models[0].upper[5][0].weight)
    assert all(len(g.members) == 2 for g in live.groups)
    assert live.counts().updates == 1 and live.counts().checks == 1


def test_mean_init_starts_a_tied_unit_from_the_members_average() -> None:
    models = _models(3, seeds=(0, 1))
    units = [m.upper[2] for m in models]
    want = {k: torch.stack([u.state_dict()[k] for u in units]).mean(0) for k, t in units[0].state_dict().items()
            if t.is_floating_point()}
    counters = {k: t.clone() for k, t in units[0].state_dict().items() if not t.is_floating_point()}
    candidate = next(c for c in merge_candidates([model_units(str(i), m) for i, m in enumerate(models)])
                     if c.members[0][1] == "upper.2")
    shared = tie(models, candidate, "mean")
    assert models[0].upper[2] is models[1].upper[2] is models[2].upper[2] is shared
    for k, t in shared.state_dict().items():
        torch.testing.assert_close(t, want[k] if k in want else counters[k])


def test_most_data_init_keeps_the_best_fed_members_weights() -> None:
    models = _models(3, seeds=(0, 1))
    want = copy.deepcopy(models[1].upper[4].state_dict())
    candidate = next(c for c in merge_candidates([model_units(str(i), m) for i, m in enumerate(models)])
                     if c.members[0][1] == "upper.4")
    shared = tie(models, candidate, "most_data", frames=[10, 50, 20])
    assert shared is models[0].upper[4] is models[2].upper[4]
    for k, t in shared.state_dict().items():
        assert torch.equal(t, want[k]), k
    with pytest.raises(ValueError, match="training frames"):
        tie(_models(3), candidate, "most_data")


def test_presplit_separates_models_of_two_bases_before_trying_them() -> None:
    models = _models(4, seeds=(0, 1))  # bases alternate: models 0, 2 on one, 1, 3 on the other
    with torch.no_grad():  # fine-tuning moves each model a little from its base
        for k, m in enumerate(models):
            for p in m.parameters():
                p.add_(1e-3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(k)))
    candidate = next(c for c in merge_candidates([model_units(str(i), m) for i, m in enumerate(models)])
                     if c.members[0][1] == "upper.5")
    units = [m.upper[5] for m in models]
    halves = presplit(candidate, units, ratio=2.0)
    assert sorted(tuple(i for i, _ in h.members) for h in halves) == [(0, 2), (1, 3)]
    same_base = _models(4)
    one = next(c for c in merge_candidates([model_units(str(i), m) for i, m in enumerate(same_base)])
               if c.members[0][1] == "upper.5")
    assert presplit(one, [m.upper[5] for m in same_base], ratio=2.0) == [one]  # one cluster: tried whole
