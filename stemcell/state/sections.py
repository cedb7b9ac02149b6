"""The control plane's transactions on the store: plan sections, routes, camera compare-and-set.

The saved plan is one JSON document with one section per writer: the ingress writes `cameras`
(what each camera runs, rebuilt from the stored cameras), the Planner writes `planner` (GPU shares,
which actor serves each role, the last round's decision). Each writer replaces only its own section
in one call, so two writers never erase each other. These are methods of `StateStore` (this mixin
keeps store.py to the storage itself); the store's lock is re-entrant and its actor's calls are
serialised, so each method is one step for every caller, in-process or through Ray.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stemcell.control.contracts import CameraSpec, Routes

if TYPE_CHECKING:
    from stemcell.state.store import StateStore

CAMERAS = "cameras"  # section written by the ingress (app.service)
PLANNER = "planner"  # section written by the Planner actor


class PlanSections:
    """Plan-section and camera transactions; a base of `StateStore`, whose plan and camera methods they use."""

    def plan_section(self: StateStore, section: str) -> dict[str, Any] | None:
        """One section of the latest plan, None when nothing was saved under it."""
        latest = self.latest_plan()
        value = None if latest is None else latest.plan.get(section)
        return dict(value) if isinstance(value, Mapping) else None

    def save_plan_section(self: StateStore, section: str, value: Mapping[str, Any]) -> int:
        """Replace `section` of the latest plan with `value`, keep the others; returns the plan version
        (unchanged when the section already held `value`: a retried call writes nothing)."""
        with self._lock:
            latest = self.latest_plan()
            plan = dict(latest.plan) if latest is not None else {}
            plan[section] = dict(value)
            return self.save_plan(plan)

    def routes(self: StateStore) -> Routes:
        """Role (executor slot or retraining worker) -> the actor serving it, as the Planner last
        published in its section (empty: none published; every role is served by its generation 0)."""
        actors = (self.plan_section(PLANNER) or {}).get("routes", {})
        return Routes({str(k): str(v) for k, v in actors.items()})

    def location(self: StateStore) -> str:
        """The database file's path on the store's node (start-up checks compare it with the config)."""
        return str(self.path)

    def compare_and_set_camera(self: StateStore, before: CameraSpec, after: CameraSpec, plan_entry: Mapping[str, Any]) -> bool:
        """Store `after` and the camera's plan entry if the camera still runs `before`; the token is kept.

        False means the camera was changed (or removed) meanwhile and nothing was written: an admin's
        concurrent change always wins over a Planner's.
        """
        with self._lock:
            record = self.get_camera(before.camera_id)
            if record is None or CameraSpec.from_config(record.camera_id, record.config) != before:
                return False
            self.put_camera(after.camera_id, {**record.config, **after.as_config()})  # keeps e.g. `source`
            cameras = self.plan_section(CAMERAS) or {}
            self.save_plan_section(CAMERAS, cameras | {after.camera_id: dict(plan_entry)})
            return True
