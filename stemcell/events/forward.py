"""Events tracked once per camera: what result producers send to the one event hub, and the order it
feeds them to its tracker.

Pushed frames of one camera are spread over the ingress replicas, so no replica sees a camera's whole
result stream, and a tracker per replica would split one event into several (each replica seeing a
start, an end, a start...). Every producer (ingress replica, ingest actor) therefore only buffers
compact result records (`ResultBatcher`) and sends them in batches, off the request's path, to the one
`EventHubActor`; the hub holds each record `events.reorder_s` and releases a camera's records in frame
time order (`Reorderer`), so frames answered by two replicas a few ms apart are tracked in the order
they were taken. Snapshots: a producer attaches a frame only where it saw an app turn active itself (a
candidate start), so at most one frame per event and producer travels, not every frame.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_KEPT = ("app", "score", "event_active", "count")  # what the tracker reads of an app's result


@dataclass(frozen=True)
class Observed:
    """One analysed frame of one camera (its apps' results), or the camera's close (`results` None)."""

    camera_id: str
    frame_ts: float
    results: tuple[dict[str, Any], ...] | None
    frame: Any = None  # at a candidate start: the frame (producer side) or its JPEG bytes (as sent)

    def as_frame(self) -> dict[str, Any]:
        """The tracker's input form (`EventTracker.observe`)."""
        return {"frame_ts": self.frame_ts, "results": list(self.results or ())}


class ResultBatcher:
    """A producer's buffer of results for the hub (thread-safe; bounded: the oldest go first, counted)."""

    def __init__(self, keep_frames: bool, max_pending: int = 100_000) -> None:
        self.keep_frames = keep_frames
        self._lock = threading.Lock()
        self._pending: deque[Observed] = deque(maxlen=max_pending)
        self._active: dict[tuple[str, str], bool] = {}  # what this producer last saw per (camera, app)
        self.dropped = 0  # records lost because the hub did not take them in time

    def add(self, camera_id: str, frames: Sequence[Any], results: Sequence[Mapping[str, Any]]) -> None:
        """Buffer one camera's answered frames (`results[i]` is `{"frame_ts", "results": [...]}` of `frames[i]`)."""
        with self._lock:
            for frame, answered in zip(frames, results):
                apps = tuple({k: r[k] for k in _KEPT if k in r} for r in answered["results"])
                started = False
                for r in apps:
                    key = (camera_id, str(r["app"]))
                    started |= bool(r["event_active"]) and not self._active.get(key, False)
                    self._active[key] = bool(r["event_active"])
                self._append(Observed(camera_id, float(answered["frame_ts"]), apps,
                                      frame if started and self.keep_frames else None))

    def close(self, camera_id: str, ts: float) -> None:
        """The camera was removed (or stopped): its open events end."""
        with self._lock:
            self._active = {k: v for k, v in self._active.items() if k[0] != camera_id}
            self._append(Observed(camera_id, ts, None))

    def _append(self, item: Observed) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(item)

    def drain(self) -> list[Observed]:
        with self._lock:
            items = list(self._pending)
            self._pending.clear()
        return items


class Reorderer:
    """The hub's hold: records are released `hold_s` after they arrived, per camera in frame-time order.

    A record older than one already released for its camera came too late to be placed; it is dropped
    (counted in `late`) rather than fed out of order, which would make a spurious start or end."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self._held: list[tuple[float, Observed]] = []
        self._last_ts: dict[str, float] = {}
        self.late = 0

    def add(self, items: Sequence[Observed], now: float) -> None:
        self._held.extend((now, item) for item in items)

    def ready(self, now: float) -> list[Observed]:
        """Records whose hold is over: each camera's frames in time order, then its close (if any)."""
        due = [item for arrived, item in self._held if arrived <= now - self.hold_s]
        self._held = [(arrived, item) for arrived, item in self._held if arrived > now - self.hold_s]
        due.sort(key=lambda item: (item.results is None, item.frame_ts))
        out = []
        for item in due:
            if item.results is None:  # a close: the camera starts afresh if it comes back
                self._last_ts.pop(item.camera_id, None)
            elif item.frame_ts < self._last_ts.get(item.camera_id, float("-inf")):
                self.late += 1
                continue
            else:
                self._last_ts[item.camera_id] = item.frame_ts
            out.append(item)
        return out

    def held(self) -> int:
        return len(self._held)
