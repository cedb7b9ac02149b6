"""Stem tree: shared execution must give exactly what each app model computes on its own."""
from __future__ import annotations

import pytest
import torch

from stemcell.models import AppModel, SegmentedNet, build_base
from stemcell.sharing import LeafKey, StemTree, TreeNode, perturbed_app_model


@pytest.fixture(scope="module")
def base() -> SegmentedNet:
    return build_base("tiny_cnn")


@pytest.fixture(scope="module")
def models(base: SegmentedNet) -> dict[LeafKey, AppModel]:
    """Three cameras; apps at b=0, mid, S; one app model deployed on two cameras."""
    s = base.num_segments
    shared_car = perturbed_app_model(base, 3, seed=1)
    return {
        ("c0", "car"): shared_car,
        ("c0", "dog"): perturbed_app_model(base, s, seed=2),
        ("c0", "bus"): perturbed_app_model(base, 0, seed=3),
        ("c1", "car"): shared_car,
        ("c1", "person"): perturbed_app_model(base, 5, seed=4),
        ("c2", "dog"): perturbed_app_model(base, s, seed=5),
    }


def _tree(base: SegmentedNet, models: dict[LeafKey, AppModel]) -> StemTree:
    tree = StemTree(base.num_segments)
    for key, model in models.items():
        tree.add(key, model)
    return tree


def _reference(models: dict[LeafKey, AppModel], x: torch.Tensor, cameras: list[str]) -> dict[LeafKey, torch.Tensor]:
    out = {}
    with torch.no_grad():
        for (camera, app), model in models.items():
            rows = [i for i, c in enumerate(cameras) if c == camera]
            out[(camera, app)] = model(x[rows])
    return out


def test_mixed_camera_batch_equals_each_app_model_alone(base: SegmentedNet, models: dict[LeafKey, AppModel]) -> None:
    tree = _tree(base, models)
    cameras = ["c0", "c1", "c2", "c0", "c0", "c2", "c1"]
    x = torch.randn(len(cameras), 3, 32, 32, generator=torch.Generator().manual_seed(0))
    got = tree.forward(x, tree.rows_for_cameras(cameras))
    want = _reference(models, x, cameras)
    assert set(got) == set(want)
    for key in want:
        assert got[key].shape == want[key].shape
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=0)


def test_shared_nodes_run_once_on_the_union_of_their_rows(base: SegmentedNet, models: dict[LeafKey, AppModel]) -> None:
    tree = _tree(base, models)
    s = base.num_segments
    # base chain (S) + car's own 3 segments + c0/bus's own S + c1/person's own 1 + 5 distinct heads
    # (the car model on two cameras is one path: its head is one node).
    assert sum(1 for _ in tree.nodes()) == s + (s - 3) + s + 1 + 5
    cameras = ["c0", "c1", "c2", "c2"]
    runs: dict[TreeNode, list[int]] = {}
    tree.forward(torch.randn(4, 3, 32, 32), tree.rows_for_cameras(cameras),
                 lambda node, out, _s: runs.setdefault(node, []).append(len(out)))
    assert all(len(v) == 1 for v in runs.values())  # every node at most once per batch
    first_base = tree.path(("c0", "dog"))[0]
    assert runs[first_base] == [4]  # all cameras use the base's first segment
    assert runs[tree.path(("c1", "person"))[-2]] == [1]  # c1's own segment sees only c1's frame
    # c0/dog and c2/dog hang off the same base segment: their heads run fused, once, on its 3 rows
    assert runs[tree.path(("c2", "dog"))[-2]] == [3]
    assert runs[tree.path(("c2", "dog"))[-1]] == runs[tree.path(("c0", "dog"))[-1]] == [3]
    assert runs[tree.path(("c0", "car"))[-1]] == [2]  # car head: c0 + c1 frames, once


def test_subset_rows_skip_idle_branches_and_keep_request_order(
    base: SegmentedNet, models: dict[LeafKey, AppModel]
) -> None:
    tree = _tree(base, models)
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ran: set[TreeNode] = set()
    got = tree.forward(x, {("c0", "car"): [4, 1], ("c2", "dog"): []}, lambda n, _o, _s: ran.add(n))
    assert set(got) == {("c0", "car")}
    with torch.no_grad():
        torch.testing.assert_close(got[("c0", "car")], models[("c0", "car")](x[[4, 1]]), atol=1e-5, rtol=0)
    assert ran == set(tree.path(("c0", "car")))  # nothing else ran


def test_max_sharing_heads_are_fused_and_exact(base: SegmentedNet) -> None:
    apps = {("c0", f"app{i}"): perturbed_app_model(base, base.num_segments, seed=10 + i) for i in range(5)}
    apps[("c1", "app0")] = apps[("c0", "app0")]
    tree = _tree(base, apps)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    rows = {("c0", "app1"): [0, 2], ("c0", "app3"): [4], ("c1", "app0"): [5, 1]}  # apps due on some frames only
    calls: list[tuple[TreeNode, float]] = []
    got = tree.forward(x, rows, lambda node, _o, seconds: calls.append((node, seconds)))
    heads = [(n, t) for n, t in calls if n.depth == base.num_segments]
    assert len(calls) == base.num_segments + 3 and len(heads) == 3  # due heads only
    assert len({t for _, t in heads}) == 1  # one fused call, its time split evenly
    with torch.no_grad():
        for key, r in rows.items():
            torch.testing.assert_close(got[key], apps[key](x[r]), atol=1e-5, rtol=0)


def test_add_remove_and_replace_touch_only_their_branch(base: SegmentedNet, models: dict[LeafKey, AppModel]) -> None:
    tree = _tree(base, models)
    before = {k: [n.uid for n in tree.path(k)] for k in tree.keys()}
    stored = len(tree.store)
    assert tree.remove(("c0", "bus"))
    assert not tree.remove(("c0", "bus"))
    assert len(tree.store) == stored - (base.num_segments + 1)  # its own S segments + head freed
    after = {k: [n.uid for n in tree.path(k)] for k in tree.keys()}
    assert after == {k: v for k, v in before.items() if k != ("c0", "bus")}
    assert tree.remove(("c0", "car"))  # c1 still uses the same car path: nothing is freed
    assert [n.uid for n in tree.path(("c1", "car"))] == before[("c1", "car")]
    # replace c1/person with another model at the same branchpoint: the shared prefix is kept as is
    tree.add(("c1", "person"), perturbed_app_model(base, 5, seed=99))
    new = [n.uid for n in tree.path(("c1", "person"))]
    assert new[:5] == before[("c1", "person")][:5] and new[5:] != before[("c1", "person")][5:]
    for key in tree.keys():
        tree.remove(key)
    assert len(tree.store) == 0 and not tree.root.children


def test_bad_requests_are_refused(base: SegmentedNet, models: dict[LeafKey, AppModel]) -> None:
    tree = _tree(base, models)
    with pytest.raises(KeyError, match="no such leaves"):
        tree.forward(torch.randn(2, 3, 32, 32), {("c9", "car"): [0]})
    with pytest.raises(IndexError, match="out of range"):
        tree.forward(torch.randn(2, 3, 32, 32), {("c0", "car"): [2]})
    with pytest.raises(ValueError, match="segments"):
        StemTree(base.num_segments + 1).add(("c0", "car"), models[("c0", "car")])
