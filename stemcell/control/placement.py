"""Camera -> executor slot: rendezvous hashing with a load bound weighted by each camera's cost.

Why not `crc32 % count`: going from 64 to 65 executors moved 98.4% of the cameras (each move is a
re-registration and a cold cache), and a failed executor's cameras all landed on one neighbour,
doubling its load. Rendezvous (highest-random-weight) hashing ranks the slots per camera by a hash
of (camera, slot): a camera goes to its first-ranked slot, so adding a slot moves only the cameras
that rank it first (~1/N), and a failed slot's cameras go to their own second choices, spread over
all the others. Every replica computes the ranking alone (`stemcell.scheduling.shares.rendezvous_rank`).

Cameras differ (a 10-app camera costs more than a 1-app one), and hashing alone leaves some slots
~25% above the mean at 150 cameras a slot. `Placement` adds the bound of "consistent hashing with
bounded loads" (Mirrokni et al., 2018), weighted: a camera takes the first slot in its ranking whose
load stays within `balance` x the mean load; the store keeps the result (one slot per camera) and
pushes it to the replicas, so all agree. Pure bookkeeping: no Ray.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stemcell.control.contracts import CameraSpec
from stemcell.scheduling.shares import placement_index, rendezvous_rank

_EPS = 1e-9


def camera_cost(camera: CameraSpec) -> float:
    """A camera's weight for placement: app-frames per second (each due app runs its branch and head
    on each frame), at least one app's worth so a camera without apps still counts."""
    return max(1.0, sum(a.fps for a in camera.apps) / max(camera.stream_fps, _EPS))


def camera_slot(camera_id: str, config: Mapping[str, Any], count: int) -> int:
    """A stored camera's slot: the one the store placed it on (`"slot"` in its config) while it exists,
    else its first-ranked slot. Every reader of stored configs (Planner, ingest) agrees with the
    replicas, which get the same slots pushed."""
    slot = config.get("slot")
    return slot if isinstance(slot, int) and 0 <= slot < count else placement_index(camera_id, count)


@dataclass
class Placement:
    """Bounded-load rendezvous placement of weighted cameras over `count` slots (some may be down)."""

    count: int
    balance: float = 1.25  # no slot takes a camera that would put it above balance x the mean load
    down: set[int] = field(default_factory=set)
    slots: dict[str, int] = field(default_factory=dict)  # camera -> slot
    costs: dict[str, float] = field(default_factory=dict)  # camera -> cost
    loads: list[float] = field(default_factory=list)  # slot -> total cost placed on it
    total: float = 0.0  # cost of every placed camera

    def __post_init__(self) -> None:
        if self.count < 1 or self.balance < 1.0:
            raise ValueError(f"need count >= 1 and balance >= 1, got {self.count}, {self.balance}")
        self.loads = self.loads or [0.0] * self.count

    def _live(self) -> list[int]:
        return [s for s in range(self.count) if s not in self.down]

    def _fits(self, slot: int, cost: float, live: int) -> bool:
        bound = self.balance * (self.total + cost) / live
        return self.loads[slot] == 0.0 or self.loads[slot] + cost <= bound + _EPS

    def _choose(self, camera_id: str, cost: float) -> int:
        live = len(self._live())
        if live == 0:
            raise ValueError("every executor slot is down")
        ranked = [s for s in rendezvous_rank(camera_id, self.count) if s not in self.down]
        return next((s for s in ranked if self._fits(s, cost, live)), ranked[0])

    def _put(self, camera_id: str, slot: int, cost: float) -> None:
        self.slots[camera_id], self.costs[camera_id] = slot, cost
        self.loads[slot] += cost
        self.total += cost

    def place(self, camera_id: str, cost: float) -> int:
        """The camera's slot: unchanged for a placed camera (its cost updated), else the first ranked
        live slot within the bound (O(slots), independent of the number of cameras)."""
        if cost <= 0:
            raise ValueError(f"camera cost must be > 0, got {cost}")
        old = self.slots.get(camera_id)
        if old is not None and old not in self.down:
            self.loads[old] += cost - self.costs[camera_id]
            self.total += cost - self.costs[camera_id]
            self.costs[camera_id] = cost
            return old
        self.remove(camera_id)
        slot = self._choose(camera_id, cost)
        self._put(camera_id, slot, cost)
        return slot

    def place_many(self, cameras: Iterable[tuple[str, float]]) -> dict[str, int]:
        """`place` for many (bulk registration, a restart): heaviest first, so the bound packs well."""
        return {cam: self.place(cam, cost) for cam, cost in sorted(cameras, key=lambda cc: (-cc[1], cc[0]))}

    def remove(self, camera_id: str) -> None:
        slot = self.slots.pop(camera_id, None)
        if slot is not None:
            cost = self.costs.pop(camera_id)
            self.loads[slot] -= cost
            self.total -= cost

    def _move(self, cameras: Collection[str]) -> dict[str, int]:
        """Re-place `cameras` (each by its own ranking); returns camera -> new slot for those that moved."""
        moved = {}
        for cam in sorted(cameras, key=lambda c: (-self.costs[c], c)):
            old, cost = self.slots[cam], self.costs[cam]
            self.remove(cam)
            slot = self._choose(cam, cost)
            self._put(cam, slot, cost)
            if slot != old:
                moved[cam] = slot
        return moved

    def resize(self, count: int) -> dict[str, int]:
        """Grow or shrink to `count` slots; returns the cameras that moved. Growing moves only the
        cameras that rank a new slot above their current one (~1/N of them); shrinking moves only
        the removed slots' cameras."""
        if count < 1:
            raise ValueError(f"need at least one executor slot, got {count}")
        old = self.count
        self.loads = (self.loads + [0.0] * count)[:count]
        self.count, self.down = count, {s for s in self.down if s < count}
        if count < old:
            return self._move([c for c, s in self.slots.items() if s >= count])
        prefer_new = [c for c, s in self.slots.items() if placement_index(c, count) >= old]
        return self._move(prefer_new)

    def mark_down(self, slot: int) -> dict[str, int]:
        """A failed slot's cameras move, each to its next ranked live slot: spread over all the others."""
        self.down.add(slot)
        return self._move([c for c, s in self.slots.items() if s == slot])

    def mark_up(self, slot: int) -> dict[str, int]:
        """The slot is back: the cameras that rank it first go home (within the bound)."""
        self.down.discard(slot)
        return self._move([c for c, s in self.slots.items() if placement_index(c, self.count) == slot and s != slot])

    def max_load_over_mean(self) -> float:
        live = [self.loads[s] for s in self._live()]
        mean = sum(live) / len(live) if live else 0.0
        return max(live) / mean if mean > 0 else 1.0

    @classmethod
    def restore(cls, count: int, placed: Mapping[str, tuple[int, float]], balance: float = 1.25) -> Placement:
        """Rebuild from the stored (slot, cost) per camera; slots beyond `count` are re-placed."""
        out = cls(count, balance)
        for cam, (slot, cost) in placed.items():
            if 0 <= slot < count:
                out._put(cam, slot, cost)
        for cam in sorted(set(placed) - set(out.slots)):
            out.place(cam, placed[cam][1])
        return out
