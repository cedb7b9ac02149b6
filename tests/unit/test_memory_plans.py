"""Camera changes against the executor's memory cap: kept, made to fit (deeper branchpoint, swapping), or refused."""
from __future__ import annotations

import pytest

from stemcell.control.camera_changes import CameraChange
from stemcell.control.contracts import AppRun, CameraSpec, MemoryReport
from stemcell.control.memory_plans import ExecutorMemory, fit_changes
from stemcell.control.planning import memory_floor
from stemcell.package.manifest import CandidateEntry, Manifest

GPU = 10_000_000
# candidate trainable parameters and held-out accuracy per branchpoint (4 bytes per parameter)
CANDIDATES = {"car": {0: (500_000, 0.95), 2: (200_000, 0.945), 4: (20_000, 0.90)}}
MANIFEST = Manifest.model_construct(candidates=[
    CandidateEntry.model_construct(app=app, branchpoint=b, trainable_params=n, accuracy=acc)
    for app, per in CANDIDATES.items() for b, (n, acc) in per.items()])


def _change(before_bp: int, after_bp: int, camera: str = "c1") -> CameraChange:
    return CameraChange(CameraSpec(camera, 10.0, (AppRun("car", before_bp, 5.0),)),
                        CameraSpec(camera, 10.0, (AppRun("car", after_bp, 5.0),)))


def _executor(merged: int, share: float, activations: int = 100_000) -> dict[str, ExecutorMemory]:
    return {"ex-0": ExecutorMemory(MemoryReport(merged, activations, 8, None, GPU), share)}


def test_a_change_that_fits_is_applied_unchanged() -> None:
    change = _change(4, 0)  # + 2 MB: (1 + 2 + 0.1) x 1.25 = 3.9 MB <= 5 MB
    out = fit_changes([change], MANIFEST, _executor(1_000_000, 0.5), {"c1": "ex-0"})
    assert out.apply == (change,) and out.refused == ()


def test_too_big_a_change_is_made_to_fit_by_the_cheapest_deeper_branchpoint() -> None:
    # cap 3 MB: bp 0 needs (1 + 2 + 0.1) x 1.25 = 3.9 MB; bp 2 needs (1 + 0.8 + 0.1) x 1.25 = 2.4 MB (-0.5 points)
    out = fit_changes([_change(4, 0)], MANIFEST, _executor(1_000_000, 0.3), {"c1": "ex-0"})
    assert [a.branchpoint for a in out.apply[0].after.apps] == [2] and out.refused == ()


def test_refused_when_only_a_too_costly_remedy_fits() -> None:
    out = fit_changes([_change(4, 0)], MANIFEST, _executor(1_000_000, 0.3), {"c1": "ex-0"}, max_accuracy_cost=0.2)
    assert out.apply == () and out.refused[0]["outcome"] == "refused_memory"
    assert "needs 3875000 bytes > cap 3000000" in out.refused[0]["reason"]


def test_each_accepted_change_counts_against_the_next_on_the_same_executor() -> None:
    # cap 5 MB: the first (+2 MB -> 3.9 MB) fits, the second only at bp 2 ((3 + 0.8 + 0.1) x 1.25 = 4.9 MB)
    changes = [_change(4, 0, "c1"), _change(4, 0, "c2")]
    out = fit_changes(changes, MANIFEST, _executor(1_000_000, 0.5), {"c1": "ex-0", "c2": "ex-0"})
    assert [c.after.apps[0].branchpoint for c in out.apply] == [0, 2]


def test_cpu_executors_and_unknown_reports_have_no_cap_to_protect() -> None:
    cpu = {"ex-0": ExecutorMemory(MemoryReport(10**9, 10**9, 8, None, None), 0.1),
           "ex-1": ExecutorMemory(None, 0.1)}
    changes = [_change(4, 0, "c1"), _change(4, 0, "c2")]
    out = fit_changes(changes, MANIFEST, cpu, {"c1": "ex-0", "c2": "ex-1"})
    assert out.apply == tuple(changes)


def _swapping(merged: int, share: float, weight_cap: int) -> dict[str, ExecutorMemory]:
    swap = {"cap_bytes": weight_cap, "staging_bytes": 200_000}
    return {"ex-0": ExecutorMemory(MemoryReport(merged, 100_000, 8, None, GPU, {"swap": swap}), share)}


def test_an_executor_that_swaps_takes_a_change_past_its_share_when_enough_stays_resident() -> None:
    # cap 3 MB; bp 0 needs 3.9 MB and costs no accuracy with swapping: 2.4 MB on the device
    # ((2.4 + 0.1) x 1.25 = 3.1 MB > 3 MB: no), so a 2 MB weight cap: (2 + 0.1) x 1.25 = 2.6 MB fits, and
    # 1.8 of its 3 MB of weights stay resident (0.6 >= 0.5); a deeper branchpoint is still preferred when allowed
    out = fit_changes([_change(4, 0)], MANIFEST, _swapping(1_000_000, 0.3, 2_000_000), {"c1": "ex-0"},
                      max_accuracy_cost=0.2)
    assert out.apply == (_change(4, 0),) and out.refused == () and "swap" in out.swapped["c1"]
    assert "1200000 of 3000000 weight bytes copied in per batch" in out.swapped["c1"]
    deeper = fit_changes([_change(4, 0)], MANIFEST, _swapping(1_000_000, 0.3, 2_000_000), {"c1": "ex-0"})
    assert [a.branchpoint for a in deeper.apply[0].after.apps] == [2] and deeper.swapped == {}
    # too little would stay resident (1 MB cap: 0.8 of 3 MB): refused, the reason names the swap it priced
    tight = fit_changes([_change(4, 0)], MANIFEST, _swapping(1_000_000, 0.3, 1_000_000), {"c1": "ex-0"},
                        max_accuracy_cost=0.2)
    assert tight.apply == () and "swap:" in tight.refused[0]["reason"]


def test_a_swapping_executors_memory_floor_counts_only_what_it_keeps_on_the_device() -> None:
    swap = {"cap_bytes": 2_000_000, "resident_bytes": 1_500_000, "staging_bytes": 400_000}
    swapping = MemoryReport(5_000_000, 100_000, 8, None, GPU, {"swap": swap})
    resident = MemoryReport(5_000_000, 100_000, 8, None, GPU)
    assert memory_floor(resident) == pytest.approx(1.25 * 5_100_000 / GPU)
    assert memory_floor(swapping) == pytest.approx(1.25 * 2_000_000 / GPU)  # 1.5 + 0.4 MB weights + 0.1 MB
