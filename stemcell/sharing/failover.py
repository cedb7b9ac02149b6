"""Failover routing: which executor slot serves a camera while its home slot's actor is down.

Why: a StemExecutor that dies (a crash, `ray.kill`, its node lost) is restarted by Ray, but a
restart is a new process that imports torch and reloads the package: 4-6 s on an idle 2-core
machine, 10-15 s under load, plus Ray's node-failure detection when a node is lost. Waiting for it
means every frame of that executor's cameras is answered 503 for that long. Any other executor
already holds the package's stem and heads in memory, so it can take a camera over in the time of
one `add_camera` (the camera's apps come from durable state): service recovers in about a request's
time, not a process restart's.

Rules (pure bookkeeping; `app.executors.ExecutorPool` does the Ray calls):
- a camera goes to its home slot (stable hash) unless that slot is marked down;
- a down slot's cameras go each to its own next-ranked slot that is up (rendezvous order,
  `stemcell.scheduling.shares.rendezvous_rank`), so they spread over all the others instead of
  doubling one neighbour's load (without a camera id: the next slot, cyclically); none up -> no host;
- a camera registered on a host that is not its home is a *guest* there;
- a slot marked up again hands back its cameras: the guests whose home it is are returned so the
  caller removes them from their hosts (the executor's memory and the Planner's cost view should
  not keep a camera twice);
- a host marked down loses its guests (they went with its process); they fail over again on demand.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from stemcell.scheduling.shares import rendezvous_rank


@dataclass
class FailoverRoutes:
    """Which slots are down, and which cameras are guests on which host."""

    slots: int
    _down: set[int] = field(default_factory=set)
    _guests: dict[str, tuple[int, int]] = field(default_factory=dict)  # camera -> (home, host)

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"need at least one executor slot, got {self.slots}")

    def is_down(self, slot: int) -> bool:
        return slot in self._down

    def host_for(self, home: int, camera: str | None = None) -> int | None:
        """The slot that should serve `camera` (home slot `home`); None when every slot is down."""
        if home not in self._down:
            return home
        order = rendezvous_rank(camera, self.slots) if camera is not None else \
            [(home + step) % self.slots for step in range(self.slots)]
        return next((slot for slot in order if slot not in self._down), None)

    def mark_down(self, slot: int) -> bool:
        """Record `slot` as down; True if it was up (the caller then starts watching for its return)."""
        if slot in self._down:
            return False
        self._down.add(slot)
        self._guests = {cam: hh for cam, hh in self._guests.items() if hh[1] != slot}
        return True

    def add_guest(self, camera: str, home: int, host: int) -> None:
        """`camera` (home slot `home`) is now registered on `host`; nothing to record when host is home."""
        if host != home:
            self._guests[camera] = (home, host)

    def forget(self, camera: str) -> int | None:
        """The camera was removed: stop tracking it; returns the host it was a guest on, if any."""
        found = self._guests.pop(camera, None)
        return None if found is None else found[1]

    def mark_up(self, slot: int) -> list[tuple[str, int]]:
        """`slot` answers again: its cameras go home. Returns (camera, host) pairs to remove from hosts."""
        self._down.discard(slot)
        back = [(cam, host) for cam, (home, host) in self._guests.items() if home == slot]
        for cam, _ in back:
            del self._guests[cam]
        return back

    def guests(self) -> dict[str, tuple[int, int]]:
        """camera -> (home, host) for every camera served away from home now."""
        return dict(self._guests)
