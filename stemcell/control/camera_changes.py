"""Which cameras a planning round reconfigures: the Planner's (app -> branchpoint, fps) against what runs.

Mainstream's schedule is only worth its cost accounting if the executors run it, so after a round
the Planner pushes every differing choice to the executor hosting the camera and to the stored
camera config (so a restart, `GET /admin/plan` and `GET /cameras/{id}/status` all agree).
Apps an admin pinned (asked for a branchpoint or frame rate explicitly) are never moved: the
admin's word beats the model's estimate. Pure logic: `plan_changes(current, decided)` is a
function of frozen values; the store-side commit runs on the StateStore actor (serialised calls)
as a compare-and-set, so a concurrent admin change always wins over a planner change.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stemcell.control import plan_state
from stemcell.scheduling.problem import Schedule, ScheduleProblem
from stemcell.state import StateStore


@dataclass(frozen=True)
class AppSetting:
    """One app as a camera runs it (the stored config's form)."""

    app: str
    branchpoint: int
    fps: float
    pinned: bool = False  # set explicitly by an admin: the Planner leaves it as it is

    def same_choice(self, branchpoint: int, fps: float) -> bool:
        return self.branchpoint == branchpoint and math.isclose(self.fps, fps, rel_tol=1e-9, abs_tol=1e-9)

    def as_dict(self) -> dict[str, Any]:
        return {"app": self.app, "branchpoint": self.branchpoint, "fps": self.fps, "pinned": self.pinned}


@dataclass(frozen=True)
class CameraSetting:
    """What a camera runs: its stream rate and its apps, in the stored order."""

    stream_fps: float
    apps: tuple[AppSetting, ...]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CameraSetting:
        """Parse a stored camera config `{"fps", "apps": [{"app", "branchpoint", "fps", "pinned"?}]}`;
        configs stored before pins were recorded count as unpinned."""
        apps = tuple(AppSetting(str(a["app"]), int(a["branchpoint"]), float(a["fps"]), bool(a.get("pinned", False)))
                     for a in config.get("apps", []))
        return cls(float(config["fps"]), apps)

    def as_config(self) -> dict[str, Any]:
        return {"fps": self.stream_fps, "apps": [a.as_dict() for a in self.apps]}


@dataclass(frozen=True)
class CameraChange:
    """One camera to reconfigure: from `before` (what the store held when decided) to `after`."""

    camera_id: str
    before: CameraSetting
    after: CameraSetting

    def describe(self) -> str:
        """`car 3@10 -> 6@1.25, ...` for the log (only the apps that move)."""
        moved = [f"{b.app} {b.branchpoint}@{b.fps:g} -> {a.branchpoint}@{a.fps:g}"
                 for b, a in zip(self.before.apps, self.after.apps) if b != a]
        return ", ".join(moved)

    def as_dict(self) -> dict[str, Any]:
        return {"camera_id": self.camera_id, "before": self.before.as_config(), "after": self.after.as_config()}


def plan_changes(current: Mapping[str, CameraSetting], decided: Mapping[str, Schedule]) -> list[CameraChange]:
    """The cameras whose decided (branchpoint, fps) differ from what they run, sorted by camera id.

    Cameras the round did not plan (registered since) and cameras no longer registered are left
    out; within a camera, pinned apps and apps the schedule does not mention keep their setting.
    A decided rate above the stream's is capped at the stream rate (an app cannot sample faster).
    """
    changes = []
    for camera_id in sorted(set(current) & set(decided)):
        before = current[camera_id]
        chosen = {c.app: c for c in decided[camera_id].choices}
        apps = []
        for app in before.apps:
            choice = chosen.get(app.app)
            fps = None if choice is None else min(float(choice.fps), before.stream_fps)
            if app.pinned or choice is None or app.same_choice(choice.branchpoint, fps):
                apps.append(app)
            else:
                apps.append(AppSetting(app.app, int(choice.branchpoint), fps))
        after = CameraSetting(before.stream_fps, tuple(apps))
        if after != before:
            changes.append(CameraChange(camera_id, before, after))
    return changes


def respect_pins(problem: ScheduleProblem, setting: CameraSetting) -> ScheduleProblem:
    """Restrict pinned apps to their pinned candidate, so the round's cost and the GPU split count
    what those apps really run (the frame-rate menu is shared by all apps, so a pinned rate is
    kept by `plan_changes`, not by the problem)."""
    pinned = {a.app: a.branchpoint for a in setting.apps if a.pinned}
    apps = tuple(
        dataclasses.replace(spec, candidates=kept)
        if spec.name in pinned and (kept := tuple(c for c in spec.candidates if c.branchpoint == pinned[spec.name]))
        else spec
        for spec in problem.apps
    )
    return dataclasses.replace(problem, apps=apps)


def commit_camera_change(store: StateStore, change: CameraChange, plan_entry: Mapping[str, Any]) -> bool:
    """Store `change.after` and the camera's plan entry if the camera still runs `change.before`.

    Run it on the StateStore actor (`store.__ray_call__.remote(commit_camera_change, change, entry)`):
    its calls are serialised, so the check and both writes are one step. False means the camera
    was changed (or removed) meanwhile and nothing was written. The token is kept.
    """
    record = store.get_camera(change.camera_id)
    if record is None or CameraSetting.from_config(record.config) != change.before:
        return False
    store.put_camera(change.camera_id, change.after.as_config())
    cameras = plan_state.plan_section(store, plan_state.CAMERAS) or {}
    plan_state.save_plan_section(store, plan_state.CAMERAS, cameras | {change.camera_id: dict(plan_entry)})
    return True
