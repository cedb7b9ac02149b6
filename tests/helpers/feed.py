"""An ingress replica's control table following a StateStore's feed from a thread (tests, benchmarks)."""
from __future__ import annotations

import threading

from stemcell.state import StateStore
from stemcell.state.control import ControlTable


class Follower(threading.Thread):
    """What an ingress replica does (`app.auth.CameraTokens`), in-process: load the snapshot, then
    long-poll the feed and apply each delta, reloading the snapshot when the feed asks."""

    def __init__(self, store: StateStore, wait_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.store, self.wait_s = store, wait_s
        self.table, self.stop = ControlTable(), threading.Event()
        self.table.load(store.control_snapshot())

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.table.apply(self.store.control_changes(self.table.epoch, self.table.version, self.wait_s)):
                self.table.load(self.store.control_snapshot())
