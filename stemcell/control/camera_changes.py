"""Which cameras a planning round reconfigures: the Planner's (app -> branchpoint, fps) against what runs.

Mainstream's schedule is only worth its cost accounting if the executors run it, so after a round
the Planner pushes every differing choice to the executor hosting the camera and to the stored
camera config (so a restart, `GET /admin/plan` and `GET /cameras/{id}/status` all agree).
Apps an admin pinned (asked for a branchpoint or frame rate explicitly) are never moved: the
admin's word beats the model's estimate. Pure logic: `plan_changes(current, decided)` is a
function of frozen values; the store commits a change as a compare-and-set
(`StateStore.compare_and_set_camera`), so a concurrent admin change always wins over a planner change.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stemcell.control.contracts import AppRun, CameraSpec
from stemcell.scheduling.problem import Schedule, ScheduleProblem


@dataclass(frozen=True)
class CameraChange:
    """One camera to reconfigure: from `before` (what the store held when decided) to `after`."""

    before: CameraSpec
    after: CameraSpec

    def describe(self) -> str:
        """`car 3@10 -> 6@1.25, ...` for the log (only the apps that move)."""
        moved = [f"{b.app} {b.branchpoint}@{b.fps:g} -> {a.branchpoint}@{a.fps:g}"
                 for b, a in zip(self.before.apps, self.after.apps) if b != a]
        return ", ".join(moved)

    @property
    def camera_id(self) -> str:
        return self.after.camera_id

    def as_dict(self) -> dict[str, Any]:
        return {"camera_id": self.camera_id, "before": self.before.as_config(), "after": self.after.as_config()}


def plan_changes(current: Mapping[str, CameraSpec], decided: Mapping[str, Schedule]) -> list[CameraChange]:
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
                apps.append(dataclasses.replace(app, branchpoint=int(choice.branchpoint), fps=fps))  # zones stay
        after = dataclasses.replace(before, apps=tuple(apps))
        if after != before:
            changes.append(CameraChange(before, after))
    return changes


def respect_pins(problem: ScheduleProblem, camera: CameraSpec) -> ScheduleProblem:
    """Restrict pinned apps to their pinned candidate, so the round's cost and the GPU split count
    what those apps really run (the frame-rate menu is shared by all apps, so a pinned rate is
    kept by `plan_changes`, not by the problem)."""
    pinned = {a.app: a.branchpoint for a in camera.apps if a.pinned}
    apps = tuple(
        dataclasses.replace(spec, candidates=kept)
        if spec.name in pinned and (kept := tuple(c for c in spec.candidates if c.branchpoint == pinned[spec.name]))
        else spec
        for spec in problem.apps
    )
    return dataclasses.replace(problem, apps=apps)
