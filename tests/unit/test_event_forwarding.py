"""Events tracked once per camera: results from several producers, put back in frame order by the hub."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from actors.event_hub import EventForwarder
from stemcell.events import EventTracker
from stemcell.events.forward import Observed, Reorderer, ResultBatcher
from stemcell.serve_config import ServeConfig


def _answer(ts: float, active: bool, score: float = 0.9) -> dict:
    return {"frame_ts": ts, "results": [{"app": "car", "score": score, "event_active": active, "extra": [1] * 100}]}


def _track(items: list[Observed]) -> list[tuple[str, float | None]]:
    tracker, changes = EventTracker(), []
    for item in items:
        if item.results is None:
            changes += tracker.close_camera(item.camera_id, item.frame_ts)
        else:
            changes += tracker.observe(item.camera_id, [item.as_frame()])
    return [(c.kind, c.event.end_ts if c.kind == "end" else c.event.start_ts) for c in changes]


def test_frames_spread_over_two_replicas_make_one_event_at_the_hub() -> None:
    pattern = [False, True, True, True, True, True, False, False]  # one event: frames 1..5
    replicas = [ResultBatcher(keep_frames=True), ResultBatcher(keep_frames=True)]
    for ts, active in enumerate(pattern):  # round robin, as Serve spreads requests
        replicas[ts % 2].add("cam", [f"frame{ts}"], [_answer(float(ts), active)])
    batches = [r.drain() for r in replicas]
    # a tracker per replica (the old way) splits it: replica 1 alone sees frames 1, 3, 5 active, 7 not
    assert _track(batches[1]) == [("start", 1.0), ("end", 7.0)] and _track(batches[0]) == [("start", 2.0), ("end", 6.0)]
    hub = Reorderer(hold_s=0.25)
    hub.add(batches[1], now=10.0)  # the second replica's batch arrives first
    hub.add(batches[0], now=10.1)
    assert hub.ready(now=10.2) == []  # still held
    released = hub.ready(now=10.4)
    assert [i.frame_ts for i in released] == [float(t) for t in range(8)] and hub.held() == 0
    assert _track(released) == [("start", 1.0), ("end", 6.0)]


def test_only_candidate_starts_carry_a_frame_and_results_are_compact() -> None:
    batcher = ResultBatcher(keep_frames=True)
    batcher.add("cam", ["f0", "f1", "f2", "f3", "f4"],
                [_answer(0, False), _answer(1, True), _answer(2, True), _answer(3, False), _answer(4, True)])
    items = batcher.drain()
    assert [i.frame for i in items] == [None, "f1", None, None, "f4"]
    assert items[1].results == ({"app": "car", "score": 0.9, "event_active": True},)  # no boxes, no extras
    assert batcher.drain() == []
    no_snapshots = ResultBatcher(keep_frames=False)
    no_snapshots.add("cam", ["f0"], [_answer(0, True)])
    assert no_snapshots.drain()[0].frame is None


def test_late_records_are_dropped_and_a_close_ends_the_camera_last() -> None:
    hub = Reorderer(hold_s=0.0)
    hub.add([Observed("cam", 5.0, ({"app": "car", "score": 1.0, "event_active": True},))], now=0.0)
    assert [i.frame_ts for i in hub.ready(now=0.0)] == [5.0]
    hub.add([Observed("cam", 4.0, ({"app": "car", "score": 1.0, "event_active": False},)),  # too late to place
             Observed("cam", 1.0, None), Observed("cam", 6.0, ({"app": "car", "score": 1.0, "event_active": True},))],
            now=1.0)
    released = hub.ready(now=1.0)
    assert [(i.frame_ts, i.results is None) for i in released] == [(6.0, False), (1.0, True)] and hub.late == 1
    hub.add([Observed("cam", 0.5, ({"app": "car", "score": 1.0, "event_active": True},))], now=2.0)
    assert len(hub.ready(now=2.0)) == 1  # after its close, a camera starts afresh (a re-added camera)


def test_a_batcher_the_hub_never_drains_stays_bounded() -> None:
    batcher = ResultBatcher(keep_frames=False, max_pending=3)
    batcher.add("cam", [None] * 5, [_answer(float(t), False) for t in range(5)])
    assert [i.frame_ts for i in batcher.drain()] == [2.0, 3.0, 4.0] and batcher.dropped == 2


class _Hub:
    """Stands in for the hub's actor handle: records what `observe.remote` was given."""

    def __init__(self) -> None:
        self.sent: list[list[Observed]] = []
        self.observe = self

    def remote(self, items: list[Observed]) -> str:
        self.sent.append(items)
        return "ref"


def test_forwarder_sends_one_batch_with_jpeg_snapshots_and_survives_a_bad_frame(tmp_path: Path) -> None:
    config = ServeConfig.model_validate({"package_dir": str(tmp_path), "state_path": str(tmp_path / "s.db"),
                                         "events": {"snapshot_dir": str(tmp_path / "snaps")}})
    hub = _Hub()
    forwarder = EventForwarder(config, hub=hub)
    assert forwarder.send() is None and hub.sent == []  # nothing buffered: no call
    frame = np.zeros((8, 8, 3), np.uint8)
    forwarder.on_results("a", [frame, frame], [_answer(1.0, True), _answer(2.0, True)])
    forwarder.on_results("b", [b"not an array"], [_answer(1.5, True)])
    forwarder.close_camera("a")
    assert forwarder.send() == "ref"
    (batch,) = hub.sent
    assert [(i.camera_id, i.results is None) for i in batch] == [("a", False), ("a", False), ("b", False), ("a", True)]
    assert batch[0].frame[:2] == b"\xff\xd8" and batch[1].frame is None  # JPEG at the candidate start only
    assert batch[2].frame is None  # could not be encoded: the event goes without a picture


class _AcceptingHub(_Hub):
    """As `_Hub`, answering nothing to wait for (the real hub's reference is awaited with `ray.get`)."""

    def remote(self, items: list[Observed]) -> None:
        super().remote(items)


def _sent_within(hub: _Hub, count: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while len(hub.sent) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(hub.sent) >= count


def test_an_ingest_actors_forwarder_sends_once_per_batch_and_on_a_close_not_on_a_timer(tmp_path: Path) -> None:
    config = ServeConfig.model_validate({"package_dir": str(tmp_path), "state_path": str(tmp_path / "s.db"),
                                         "events": {"forward_interval_s": 0.01}})
    hub = _AcceptingHub()
    forwarder = EventForwarder(config, hub=hub)
    forwarder.follow_batches_in_thread()
    forwarder.on_results("a", [None], [_answer(1.0, True)])
    forwarder.on_results("b", [None], [_answer(1.0, False)])
    time.sleep(0.2)  # twenty intervals: a timer would have sent by now
    assert hub.sent == []
    forwarder.due()  # the batch is complete: both cameras' records in one call
    assert _sent_within(hub, 1)
    assert [(i.camera_id, i.frame_ts) for i in hub.sent[0]] == [("a", 1.0), ("b", 1.0)]
    forwarder.close_camera("a")  # no batch follows a removed camera: its end goes by itself
    assert _sent_within(hub, 2)
    assert [(i.camera_id, i.results) for i in hub.sent[1]] == [("a", None)]
    time.sleep(0.1)
    assert len(hub.sent) == 2  # nothing buffered, nothing sent
