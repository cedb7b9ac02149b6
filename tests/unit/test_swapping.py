"""Layer swapping under a memory cap: residency plan, swap order == execution order, equal results."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from stemcell.models import build_base
from stemcell.package import load_package
from stemcell.sharing import InferRequest, StemRuntime, StemTree, module_bytes
from stemcell.sharing.swap_plan import LayerUse, MemoryCapTooSmall, plan_residency
from stemcell.sharing.swapping import ModelSwapExecutor, SwappingStemTree, swap_view
from stemcell.sharing.synthetic import perturbed_app_model
from tests.helpers.builders import tiny_package

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _apps() -> list:
    """Four apps on tiny_cnn: two branch at 2, two at 4 (a tree with shared and private layers)."""
    base = build_base("tiny_cnn")
    return [perturbed_app_model(base, b, seed=i) for i, b in enumerate((2, 2, 4, 4))]


def _trees(cap: int) -> tuple[StemTree, SwappingStemTree]:
    plain, swapping = StemTree(6), SwappingStemTree(6, "cpu", cap)
    for i, model in enumerate(_apps()):
        key = (f"cam{i % 2}", f"app{i}")
        plain.add(key, model)
        swapping.add(key, model)
    return plain, swapping


def _copied(items: list[LayerUse], swapped: set[str] | frozenset[str]) -> int:
    return sum(i.bytes * i.uses for i in items if i.key in swapped)


def test_plan_keeps_most_used_resident_within_the_cap() -> None:
    items = [LayerUse("stem", 100, 5), LayerUse("a", 400, 1), LayerUse("b", 150, 1), LayerUse("c", 50, 3),
             LayerUse("d", 60, 2)]
    assert plan_residency(items, cap_bytes=760).swapped == frozenset()  # everything fits: nothing to stage
    same = [LayerUse("stem", 100, 5), *(LayerUse(k, 100, 1) for k in "xyz")]
    plan = plan_residency(same, cap_bytes=350)  # two slots beside the most used layer; one more would not fit
    assert plan.slots == 2 and plan.resident == {"stem"} and plan.swapped == {"x", "y", "z"}
    assert plan.peak_bytes == 100 + 2 * 100 <= 350
    # one slot when it copies less than half as much: two 150-byte slots would leave only "a" resident
    one = plan_residency(items, cap_bytes=700)
    assert one.slots == 1 and one.swapped == {"b", "d"} and one.peak_bytes == 550 + 150 <= 700
    # brute force over every resident set and slot count: nothing within the cap copies fewer bytes
    for cap in (700, 740):
        plan = plan_residency(items, cap)
        best = min(_copied(items, {i.key for i in items} - {i.key for i in chosen})
                   for r in range(len(items) + 1) for chosen in itertools.combinations(items, r)
                   for slots in (1, 2)
                   if sum(i.bytes for i in chosen) + slots * max((i.bytes for i in items if i not in chosen),
                                                                 default=0) <= cap)
        assert plan.peak_bytes <= cap and _copied(items, plan.swapped) == best == 270
    with pytest.raises(MemoryCapTooSmall):
        plan_residency(items, cap_bytes=350)  # the largest layer alone exceeds the cap


@pytest.mark.parametrize(("fraction", "slots"), [(2, 2), (4, 1)])
def test_swap_order_is_the_execution_order_and_results_equal_resident(fraction: int, slots: int) -> None:
    resident_bytes = StemTree(6)
    for i, model in enumerate(_apps()):
        resident_bytes.add(("c", str(i)), model)
    cap = resident_bytes.store.bytes() // fraction
    plain, swapping = _trees(cap)
    x = torch.randn(6, 3, 32, 32)
    rows = plain.rows_for_cameras(["cam0", "cam1", "cam0", "cam1", "cam0", "cam0"])
    executed: list = []
    got = swapping.forward(x, rows, observer=lambda node, out, s: executed.append(node))
    want = plain.forward(x, rows)
    assert swapping.plan is not None and swapping.plan.swapped and swapping.plan.resident
    assert swapping.plan.slots == slots  # a quarter of the bytes leaves room for one copy in flight only
    assert swapping.plan.peak_bytes <= cap
    assert list(swapping.swap_log) == [n for n in executed if n.digest in swapping.plan.swapped]
    assert len(executed) == sum(1 for _ in swapping.nodes())  # every node ran once
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6)
    # the plain tree runs the same nodes in the same order (its heads are fused, so compare segments)
    plain_order: list = []
    plain.forward(x, rows, observer=lambda node, out, s: plain_order.append(node.uid))
    assert [n.uid for n in executed if n.depth < 6] == [u for u in plain_order if u in
                                                        {n.uid for n in executed if n.depth < 6}]
    node_bytes = [sum(t.numel() * t.element_size() for t in (*n.module.parameters(), *n.module.buffers()))
                  for n in executed if n.digest in swapping.plan.swapped]
    assert swapping.copied_bytes == sum(node_bytes) > 0  # each swapped layer copied once per use, nothing else


def test_model_swap_baseline_equals_resident_and_copies_whole_models() -> None:
    plain, _ = _trees(10**9)
    cap = plain.store.bytes() // 2
    swap = ModelSwapExecutor(plain, "cpu", cap)
    x = torch.randn(4, 3, 32, 32)
    rows = plain.rows_for_cameras(["cam0", "cam1", "cam0", "cam1"])
    got, want = swap.forward(x, rows), plain.forward(x, rows)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6)
    assert swap.plan.peak_bytes <= cap
    per_model = {f"{k[0]}/{k[1]}": sum(
        t.numel() * t.element_size() for n in plain.path(k) for t in (*n.module.parameters(), *n.module.buffers()))
        for k in plain.keys()}
    assert swap.copied_bytes == sum(b for k, b in per_model.items() if k in swap.plan.swapped)


def _serving(package: object, cap: int | None) -> StemRuntime:
    runtime = StemRuntime(package, weight_cap_bytes=cap)  # type: ignore[arg-type]
    runtime.set_camera("c0", [{"app": "car", "branchpoint": 4, "fps": 10},
                              {"app": "person", "branchpoint": 6, "fps": 5}])
    runtime.set_camera("c1", [{"app": "car", "branchpoint": 4, "fps": 10}])
    return runtime


def test_runtime_under_a_tiny_weight_cap_serves_what_an_uncapped_one_serves(tmp_path: Path) -> None:
    tiny_package(tmp_path, branchpoints=(4, 6), apps=("car", "person"))
    package = load_package(tmp_path)
    plain = _serving(package, None)
    assert swap_view(plain.tree) is None
    largest = max(module_bytes(n.module) for n in plain.tree.nodes())
    with pytest.raises(MemoryCapTooSmall):
        swap_view(_serving(package, largest // 2).tree)  # not even one layer's slot: the Planner must refuse this
    cap = largest * 11 // 10  # one slot and little else: nearly every layer is copied in per batch
    capped = _serving(package, cap)
    view = swap_view(capped.tree)
    assert view is not None and view["slots"] == 1 and view["swapped_bytes"] > plain.tree.store.bytes() // 2
    assert view["resident_bytes"] + view["staging_bytes"] <= cap
    rng = np.random.default_rng(0)
    for step in range(3):  # app strides differ: some frames reuse the last result
        frames = [rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8) for _ in range(2)]
        want, got = ([rt.infer([InferRequest("c0", frames[0], [step] * 3), InferRequest("c1", frames[1])])
                      for rt in (plain, capped)])
        for w, g in zip(want, got):
            assert isinstance(w, list) and isinstance(g, list)
            for fw, fg in zip(w, g):
                assert [(r.app, r.label, r.fresh) for r in fw.results] == [
                    (r.app, r.label, r.fresh) for r in fg.results]
                assert [r.score for r in fw.results] == pytest.approx([r.score for r in fg.results], abs=1e-6)
    assert capped.tree.copied_bytes > 0  # it really swapped
    assert capped.memory_report(4).bytes_merged == plain.memory_report(4).bytes_merged
