"""What the store serves the ingress replicas: token checks, the change feed, executor slots.

A mixin of `StateStore` (like `sections.PlanSections`). Tokens and routes: `stemcell.state.control`.
Slots: the camera -> executor slot assignment (`stemcell.control.placement.Placement`: rendezvous
hashing with a load bound weighted by each camera's cost) is kept here, the one writer, because a
bounded assignment depends on what was placed before, so replicas cannot compute it alone. Each
camera's slot is stored in its config (`"slot"`, restored on restart) and pushed to the replicas by
the feed; until the ingress tells the store how many executors there are (`set_executor_count`),
nothing is placed and everyone uses the camera's first-ranked slot (`placement_index`).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stemcell.control.contracts import CameraSpec
from stemcell.control.placement import Placement, camera_cost, camera_slot
from stemcell.state import tokens
from stemcell.state.control import (
    SLOT,
    TOKEN,
    Change,
    ControlDelta,
    ControlSnapshot,
    check_mac,
)
from stemcell.state.records import validate_id

if TYPE_CHECKING:
    from stemcell.state.store import StateStore

log = logging.getLogger(__name__)

MAX_WAIT_S = 30.0  # longest long-poll of `control_changes` (a replica re-asks after it)


def config_cost(camera_id: str, config: Mapping[str, Any]) -> float:
    """A stored camera's placement weight (1 when its config names no apps, e.g. a bare test row)."""
    try:
        return camera_cost(CameraSpec.from_config(camera_id, config))
    except (KeyError, TypeError, ValueError):
        return 1.0


class ReplicaState:
    """Token checks, the replicas' snapshot and long-poll, and slot placement; a base of `StateStore`."""

    # ------------------------------------------------------------------ tokens
    def revoke_camera_token(self: StateStore, camera_id: str) -> bool:
        """Remove the camera's token (its requests are refused until a new one is set); every replica
        learns it through the feed. False if the camera had none or does not exist."""
        validate_id("camera_id", camera_id)
        with self._transaction() as conn:
            revoked = conn.execute("UPDATE cameras SET token_hash = NULL WHERE camera_id = ? AND token_hash IS NOT NULL",
                                   (camera_id,)).rowcount
            if revoked:
                self._feed.stage([Change(TOKEN, camera_id, None)])
        return revoked > 0

    def verify_camera_token(self: StateStore, camera_id: str, token: str) -> bool:
        """True iff the camera exists, has a token, and ``token`` matches it (constant-time; unknown
        cameras cost the same). Replicas check tokens themselves (`control_snapshot`); this answers
        legacy scrypt hashes, and rewrites one as an HMAC once its token is known to be right."""
        validate_id("camera_id", camera_id)
        with self._lock:
            row = self._conn.execute("SELECT token_hash FROM cameras WHERE camera_id = ?", (camera_id,)).fetchone()
        stored = None if row is None else row[0]
        matches = check_mac(self._key, camera_id, token, stored)
        if matches is not None:
            return matches
        if not tokens.verify_token(token, stored):
            return False
        mac = tokens.token_mac(self._key, camera_id, token)
        with self._transaction() as conn:
            if conn.execute("UPDATE cameras SET token_hash = ? WHERE camera_id = ? AND token_hash = ?",
                            (mac, camera_id, stored)).rowcount:
                self._feed.stage([Change(TOKEN, camera_id, mac)])
        return True

    # ------------------------------------------------------------------ the feed
    def control_snapshot(self: StateStore) -> ControlSnapshot:
        """A replica's whole table (token hashes, routes, slots) at the feed's current version."""
        with self._lock:
            macs = dict(self._conn.execute("SELECT camera_id, token_hash FROM cameras WHERE token_hash IS NOT NULL"))
            slots = {cam: int(slot) for cam, slot in self._conn.execute(
                "SELECT camera_id, json_extract(config_json, '$.slot') AS s FROM cameras WHERE s IS NOT NULL")}
            return ControlSnapshot(self._feed.epoch, self._feed.version, self._key, macs, self.routes().actors, slots)

    def control_changes(self: StateStore, epoch: str, version: int, timeout_s: float) -> ControlDelta:
        """The changes after `version`, waiting up to `timeout_s` (at most `MAX_WAIT_S`) for one: the
        replicas' long-poll. Runs without the store's lock, so a waiting call blocks no other."""
        return self._feed.wait(epoch, int(version), min(max(0.0, float(timeout_s)), MAX_WAIT_S))

    # ------------------------------------------------------------------ slots
    def set_executor_count(self: StateStore, count: int) -> int:
        """Place cameras over `count` executor slots (the ingress calls it at start; idempotent):
        the first call restores the stored slots (and stores one for every camera that had none), a
        changed count moves ~1/N of the cameras. New slots are stored and pushed; returns how many."""
        with self._transaction() as conn:
            if self._placement is None:  # first call in this process: restore, and store a slot for every camera
                configs = {cam: json.loads(cfg) for cam, cfg in conn.execute("SELECT camera_id, config_json FROM cameras")}
                self._placement = Placement.restore(count, {cam: (camera_slot(cam, cfg, count), config_cost(cam, cfg))
                                                            for cam, cfg in configs.items()})
                moved = {cam: slot for cam, slot in self._placement.slots.items() if configs[cam].get("slot") != slot}
            else:
                moved = self._placement.resize(count) if count != self._placement.count else {}
            for cam, slot in moved.items():
                conn.execute("UPDATE cameras SET config_json = json_set(config_json, '$.slot', ?) WHERE camera_id = ?",
                             (slot, cam))
            self._feed.stage(Change(SLOT, cam, str(slot)) for cam, slot in sorted(moved.items()))
        if moved:
            log.info("%d camera(s) placed anew over %d executor slots", len(moved), count)
        return len(moved)

    def place_cameras(self: StateStore, cameras: list[CameraSpec]) -> Mapping[str, int]:
        """Each camera's slot (a new camera is placed now; a placed one keeps its slot): what the
        ingress registers it on before storing it. Without a known executor count: empty."""
        with self._lock:
            if self._placement is None:
                return {}
            return {c.camera_id: self._placement.place(c.camera_id, camera_cost(c)) for c in cameras}

    def _slot_configs(self: StateStore, rows: list[tuple[str, str, str | None]]) -> list[tuple[str, str, str | None]]:
        """`put_cameras` rows with each camera's slot written into its config (when placing is on)."""
        if self._placement is None:
            return rows
        out = []
        for cam, config_json, mac in rows:
            config = json.loads(config_json)
            config["slot"] = self._placement.place(cam, config_cost(cam, config))
            out.append((cam, json.dumps(config, sort_keys=True, separators=(",", ":")), mac))
        return out

    def release_cameras(self: StateStore, camera_ids: list[str]) -> int:
        """Give back the slots `place_cameras` reserved for cameras that were then not stored (their
        registration failed); stored cameras keep theirs. Returns how many were released."""
        with self._lock:
            if self._placement is None:
                return 0
            gone = [cam for cam in camera_ids if self.get_camera(cam) is None and cam in self._placement.slots]
            for cam in gone:
                self._placement.remove(cam)
            return len(gone)

    def _unplace(self: StateStore, camera_id: str) -> None:
        """A removed camera gives its slot's load back, and replicas forget its slot."""
        if self._placement is not None:
            self._placement.remove(camera_id)
        self._feed.stage([Change(SLOT, camera_id, None)])
