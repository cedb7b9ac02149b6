"""The memory-fit policy: keep, the preferred remedy that fits within limits, or refuse."""
from __future__ import annotations

import pytest

from stemcell.sharing.memory_fit import MemoryFitContext, MemoryOption, fit_memory, swap_option
from stemcell.sharing.swap_plan import LayerUse

MERGE = MemoryOption("merge_more", 500, 1.0, detail="tie 3 more segments")
DEEPER = MemoryOption("deeper_branchpoint", 400, 0.5, detail="branchpoint 4")
SWAP = MemoryOption("swap", 300, 0.0, 0.7, detail="2 layers swapped")


def test_a_plan_that_fits_is_kept() -> None:
    d = fit_memory(MemoryFitContext(weight_bytes=600, activation_bytes=200, cap_bytes=1000, options=(MERGE,)))
    assert d.action == "keep" and d.need_bytes == 1000 and d.option is None


def test_remedies_in_the_seeds_order_merge_then_deeper_then_swap() -> None:
    ctx = MemoryFitContext(weight_bytes=900, activation_bytes=100, cap_bytes=800, options=(SWAP, DEEPER, MERGE))
    assert fit_memory(ctx).action == "merge_more"  # (500 + 100) * 1.25 = 750 <= 800
    no_merge = MemoryFitContext(900, 100, 800, options=(SWAP, DEEPER))
    assert fit_memory(no_merge).action == "deeper_branchpoint"
    too_costly = MemoryFitContext(900, 100, 800, options=(SWAP, DEEPER), max_accuracy_cost=0.2)
    d = fit_memory(too_costly)
    assert d.action == "swap" and d.need_bytes == 500 and d.option is SWAP


def test_refused_when_no_remedy_fits_within_limits() -> None:
    slow = MemoryOption("swap", 100, 0.0, 0.3)
    big = MemoryOption("merge_more", 700, 1.0)
    d = fit_memory(MemoryFitContext(900, 100, 800, options=(slow, big)))
    assert d.action == "refuse" and d.need_bytes == 1250 and d.option is None
    assert "merge_more: 1000 bytes" in d.reason and "x0.30 fps" in d.reason
    assert fit_memory(MemoryFitContext(900, 100, 800)).reason.endswith("(no remedy offered)")


def test_swap_option_estimates_throughput_from_copy_and_compute() -> None:
    layers = [LayerUse("stem", 100, 4), LayerUse("a", 200, 1), LayerUse("b", 200, 1), LayerUse("c", 200, 1)]
    # room = 875 / 1.25 - 100 = 600: stem resident (100 + 2 x 200 staging); a, b, c swapped
    opt = swap_option(layers, 875, 100, compute_s=0.010, copy_bytes_per_s=30_000.0)
    assert opt is not None and opt.weight_bytes == 500 and "2 slots" in opt.detail
    assert opt.throughput_factor == pytest.approx(0.010 / 0.020)  # 600 bytes at 30 kB/s = 20 ms, overlapped
    # room 300: only one staging slot fits beside the stem, the copy no longer overlaps compute
    one = swap_option(layers, 500, 100, compute_s=0.010, copy_bytes_per_s=30_000.0)
    assert one is not None and "1 slots" in one.detail
    assert one.throughput_factor == pytest.approx(0.010 / 0.030)
    assert swap_option(layers, 250, 100, compute_s=0.01, copy_bytes_per_s=1e9) is None  # 200 > room 100
