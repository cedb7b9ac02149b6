"""Event tracking: an event of (camera, app) starts on the first result with `event_active` true and
ends on the next one with it false; in between it keeps the peak score (and peak count for count apps).

Why results and not labels: `event_active` is the app's own debounced decision (count apps: count >=
min_count), so an event here is exactly what the app reports, not a second opinion.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

ChangeKind = Literal["start", "end"]
SnapshotFn = Callable[[str], "str | None"]  # event id -> stored snapshot path (None: none kept)


@dataclass(frozen=True)
class Event:
    """One event of one app on one camera (what the store keeps and the API returns)."""

    event_id: str  # random hex id, stable from start to end (webhook receivers match start and end on it)
    camera_id: str
    app: str
    start_ts: float  # frame timestamp (seconds) of the first active result
    end_ts: float | None  # frame timestamp of the first inactive result; None while the event lasts
    peak_score: float  # highest score seen during the event
    peak_count: int | None = None  # count apps: highest count seen; None for binary apps
    snapshot: str | None = None  # path of the JPEG taken at start (events.snapshot_dir), if any

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class EventChange:
    """An event that just started or just ended (what webhooks deliver)."""

    kind: ChangeKind
    event: Event


def _peak(old: int | None, new: Any) -> int | None:
    if new is None:
        return old
    return int(new) if old is None else max(old, int(new))


class EventTracker:
    """Open events per (camera, app); `observe` feeds one camera's frame results in time order.

    One tracker per process that produces results (an ingress replica, an ingest actor): a camera's
    frames must all reach the same tracker for its events to be whole.
    """

    def __init__(self, new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self._new_id = new_id
        self._open: dict[tuple[str, str], Event] = {}

    def observe(self, camera_id: str, frames: Iterable[Mapping[str, Any]],
                snapshot: Callable[[str, int], str | None] | None = None) -> list[EventChange]:
        """Starts and ends caused by `frames` (each `{"frame_ts", "results": [{app, score, event_active,
        count?}]}`). `snapshot(event_id, frame_index)` is called once per start and may store a JPEG."""
        changes: list[EventChange] = []
        for index, frame in enumerate(frames):
            ts = float(frame["frame_ts"])
            for result in frame["results"]:
                key = (camera_id, str(result["app"]))
                current = self._open.get(key)
                if result["event_active"]:
                    if current is None:
                        event_id = self._new_id()
                        started = Event(event_id, camera_id, key[1], ts, None, float(result["score"]),
                                        _peak(None, result.get("count")),
                                        snapshot(event_id, index) if snapshot is not None else None)
                        self._open[key] = started
                        changes.append(EventChange("start", started))
                    else:
                        self._open[key] = replace(current, peak_score=max(current.peak_score, float(result["score"])),
                                                  peak_count=_peak(current.peak_count, result.get("count")))
                elif current is not None:
                    del self._open[key]
                    changes.append(EventChange("end", replace(current, end_ts=max(ts, current.start_ts))))
        return changes

    def close_camera(self, camera_id: str, ts: float) -> list[EventChange]:
        """End every open event of a camera that stopped (removed, or its stream went offline)."""
        keys = [k for k in self._open if k[0] == camera_id]
        return [EventChange("end", replace(e, end_ts=max(ts, e.start_ts))) for e in (self._open.pop(k) for k in keys)]

    def restore(self, events: Iterable[Event]) -> int:
        """Take back events left open by an earlier tracker (a restarted hub): the next inactive result of
        their (camera, app) ends them under the same id, so receivers see the end of what they saw start.
        Events already tracked here win. Returns how many were taken."""
        taken = 0
        for event in events:
            key = (event.camera_id, event.app)
            if event.end_ts is None and key not in self._open:
                self._open[key] = event
                taken += 1
        return taken

    def open_events(self) -> list[Event]:
        return list(self._open.values())
