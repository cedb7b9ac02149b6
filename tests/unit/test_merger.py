"""Identical-layer merging: identical weights stored once wherever they sit, exact byte counts."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from stemcell.models import SegmentedNet, build_base, segment_hash
from stemcell.sharing import ModuleStore, StemTree, module_bytes, perturbed_app_model


@pytest.fixture(scope="module")
def base() -> SegmentedNet:
    return build_base("tiny_cnn")


def test_module_bytes_counts_parameters_and_buffers_exactly() -> None:
    block = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
    # conv 4*3*3*3 + bn weight/bias 2*4 floats; running mean/var 2*4 floats; num_batches_tracked int64
    assert module_bytes(block) == (108 + 8 + 8) * 4 + 8


def test_apps_differing_in_a_middle_segment_share_storage_of_later_ones(base: SegmentedNet) -> None:
    """Each app retrains only segment 2: its segments 3.. are byte-identical to the base's, so they
    are stored once although each app computes them on its own activations (separate nodes)."""
    s, apps = base.num_segments, 4
    tree = StemTree(s)
    for i in range(apps):
        tree.add(("cam", f"app{i}"), perturbed_app_model(base, 2, seed=i, own={2}))
    later = s - 3
    assert sum(1 for _ in tree.nodes()) == 2 + apps * (1 + later + 1)  # prefix + per app: own seg, later, head
    assert len(tree.store) == 2 + apps + later + apps  # prefix, own segs, later segs ONCE, heads
    for i in range(apps):
        path = tree.path(("cam", f"app{i}"))
        assert [n.digest for n in path[3:s]] == [segment_hash(m) for m in base.segments[3:]]
    later_bytes = sum(module_bytes(m) for m in base.segments[3:])
    # the base's own segment 2 is not held: no app runs it
    want = sum(module_bytes(m) for i, m in enumerate(base.segments) if i != 2) + apps * module_bytes(base.segments[2])
    head_bytes = sum(module_bytes(n.module) for n in tree.nodes() if n.depth == s)
    assert tree.store.bytes() == want + head_bytes
    # without global dedup the later segments would be held once per app
    assert sum(module_bytes(n.module) for n in tree.nodes()) - tree.store.bytes() == (apps - 1) * later_bytes


def test_same_weights_in_different_nodes_are_the_same_object(base: SegmentedNet) -> None:
    tree = StemTree(base.num_segments)
    tree.add(("cam", "a"), perturbed_app_model(base, 2, seed=1, own={2}))
    tree.add(("cam", "b"), perturbed_app_model(base, 2, seed=2, own={2}))
    last_a, last_b = tree.path(("cam", "a"))[-2], tree.path(("cam", "b"))[-2]
    assert last_a is not last_b and last_a.module is last_b.module
    assert tree.store.refcount(last_a.digest) == 2
    tree.remove(("cam", "a"))
    assert tree.store.refcount(last_b.digest) == 1 and last_b.digest in tree.store


def test_store_holds_its_own_converted_copy(base: SegmentedNet) -> None:
    store = ModuleStore("cpu", torch.float64)
    source = base.segments[0]
    module = store.acquire(store.prepare(source))
    assert module is not source
    assert next(module.parameters()).dtype == torch.float64
    assert next(source.parameters()).dtype == torch.float32  # the caller's module is untouched
    assert not any(p.requires_grad for p in module.parameters()) and not module.training
    again = store.acquire(store.prepare(base.segments[0]))
    assert again is module and len(store) == 1 and store.refcount(segment_hash(source)) == 2
    store.release(segment_hash(source))
    store.release(segment_hash(source))
    assert len(store) == 0 and store.bytes() == 0
