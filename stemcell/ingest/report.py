"""What the ingest metrics export: counter increments since the last report, and one state gauge per camera.

Ray's counters only go up by an increment, while a camera's health keeps running totals (frames
read, analysed, dropped, reconnects). Incrementing a counter per frame would put Ray's metric call on
the reader thread's path; instead the actor reports every few seconds the difference between two
snapshots of the totals. A camera re-attached (its totals start again from 0) counts its new totals
as the increment, never a negative one.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from stemcell.ingest.policy import HealthSnapshot, State

STATES: tuple[State, ...] = ("streaming", "reconnecting", "offline", "stopped")  # a pulled camera's states


@dataclass(frozen=True)
class Totals:
    """A camera's running totals, as the counters export them."""

    frames_in: int = 0
    frames_analysed: int = 0
    frames_dropped: int = 0
    reconnects: int = 0

    @classmethod
    def of(cls, snap: HealthSnapshot) -> Totals:
        return cls(snap.frames_in_total, snap.frames_analysed_total, snap.frames_dropped, snap.reconnects)


class CounterDeltas:
    """Increments per camera between successive `step`s (cameras gone since the last step are forgotten)."""

    def __init__(self) -> None:
        self._last: dict[str, Totals] = {}

    def step(self, current: Mapping[str, Totals]) -> dict[str, Totals]:
        out = {}
        for camera_id, now in current.items():
            before = self._last.get(camera_id, Totals())
            out[camera_id] = Totals(*(
                getattr(now, f.name) - getattr(before, f.name) if getattr(now, f.name) >= getattr(before, f.name)
                else getattr(now, f.name) for f in fields(Totals)))
        self._last = dict(current)
        return out


def state_gauge(state: State | None) -> dict[State, float]:
    """1 for the camera's state, 0 for the others (None: the camera is gone, every state 0)."""
    return {s: float(s == state) for s in STATES}
