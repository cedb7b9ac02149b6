"""Camera placement: rendezvous hashing moves few cameras, spreads a failed slot's, and bounds weighted load."""
from __future__ import annotations

import random
import zlib

import pytest

from stemcell.control.contracts import AppRun, CameraSpec
from stemcell.control.placement import Placement, camera_cost
from stemcell.scheduling.shares import placement_index, rendezvous_rank

CAMERAS = [f"cam-{i}" for i in range(3000)]


def test_adding_an_executor_moves_about_one_in_n() -> None:
    moved = sum(placement_index(c, 20) != placement_index(c, 21) for c in CAMERAS) / len(CAMERAS)
    crc = sum(zlib.crc32(c.encode()) % 20 != zlib.crc32(c.encode()) % 21 for c in CAMERAS) / len(CAMERAS)
    assert moved <= 2 / 21 and crc > 0.9  # what `crc32 % count` did
    assert all(rendezvous_rank(c, 21)[0] == placement_index(c, 21) for c in CAMERAS[:100])


def test_bounded_load_with_weighted_cameras() -> None:
    rng = random.Random(0)
    placement = Placement(16)
    placement.place_many((c, float(rng.choice([1, 1, 3, 3, 10]))) for c in CAMERAS)
    assert placement.max_load_over_mean() <= 1.25 + 1e-9
    assert sum(placement.loads) == pytest.approx(placement.total)
    before = dict(placement.slots)
    moved = placement.resize(17)
    assert 0 < len(moved) <= 2 * len(CAMERAS) / 17
    assert all(slot == 16 for slot in moved.values())  # only towards the new slot
    assert {c: s for c, s in placement.slots.items() if c not in moved} == {c: s for c, s in before.items() if c not in moved}


def test_a_failed_slot_spreads_over_all_others_and_comes_back() -> None:
    placement = Placement(8)
    placement.place_many((c, 1.0) for c in CAMERAS)
    on_three = {c for c, s in placement.slots.items() if s == 3}
    moved = placement.mark_down(3)
    assert set(moved) == on_three
    assert len(set(moved.values())) == 7  # every other slot takes some, not one neighbour all
    assert placement.loads[3] == 0.0 and max(placement.loads) <= 1.25 * len(CAMERAS) / 7 + 1
    back = placement.mark_up(3)
    assert all(placement_index(c, 8) == 3 for c in back) and len(set(back) & on_three) >= 0.9 * len(on_three)


def test_placing_is_sticky_and_restorable() -> None:
    placement = Placement(4)
    slot = placement.place("cam-a", 2.0)
    assert placement.place("cam-a", 5.0) == slot and placement.loads[slot] == 5.0  # cost updated in place
    placement.remove("cam-a")
    assert placement.total == 0.0 and placement.loads == [0.0] * 4
    placement.place_many((c, 1.0) for c in CAMERAS[:200])
    restored = Placement.restore(4, {c: (s, placement.costs[c]) for c, s in placement.slots.items()})
    assert restored.slots == placement.slots and restored.loads == placement.loads
    shrunk = Placement.restore(2, {c: (s, 1.0) for c, s in placement.slots.items()})
    assert set(shrunk.slots.values()) == {0, 1} and len(shrunk.slots) == 200


def test_camera_cost_weighs_apps_and_rates() -> None:
    three = CameraSpec("c", 10.0, tuple(AppRun(a, 3, 10.0) for a in "xyz"))
    one_slow = CameraSpec("c", 10.0, (AppRun("x", 3, 2.5),))
    assert camera_cost(three) == 3.0 and camera_cost(one_slow) == 1.0
    with pytest.raises(ValueError):
        Placement(0)
