"""Turning an admin's camera request into concrete (app, branchpoint, fps) choices, and the plan JSON.

No Ray, no HTTP: plain functions over the M-Package manifest and the last saved plan, so the
rules are readable in one place.

Plan schema (what `StateStore.save_plan` holds and `GET /admin/plan` returns; the Planner writes
the same shape)::

    {"cameras": {"cam-1": {"fps": 10.0,
                           "apps": {"car": {"branchpoint": 4, "branchpoint_name": "after_conv4",
                                            "fps": 5.0, "frame_f1": 0.81, "predicted_f1": 0.77,
                                            "pinned": false}}}}}
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stemcell.control.contracts import AppRequest, AppRun, CameraSpec
from stemcell.models.zones import Polygon, check_polygon
from stemcell.package.manifest import CandidateEntry, Manifest
from stemcell.scheduling.event_f1 import event_f1

F1_TOLERANCE = 0.05  # a default candidate may give up this much frame F1 to share more of the stem
MISS_CORRELATION = 0.5  # rho of the event-F1 model when nothing better is known (Planner's default)


def default_candidate(manifest: Manifest, app: str) -> CandidateEntry:
    """The most-shared candidate whose frame F1 is within `F1_TOLERANCE` of the app's best.

    Mainstream's observation: the deepest shared stems cost almost nothing per extra app, and
    often lose little accuracy; starting there (not at the most accurate, unshared model) keeps a
    new camera cheap until the Planner has measured enough to trade up.
    """
    candidates = manifest.candidates_for(app)
    if not candidates:
        raise KeyError(f"app {app!r} has no candidates in the package")
    best = max(c.f1 for c in candidates)
    return max((c for c in candidates if c.f1 >= best - F1_TOLERANCE), key=lambda c: c.branchpoint)


@dataclass(frozen=True)
class PlanHints:
    """What filling in a camera's open choices reads from the saved plan: the camera's own entry, and
    per app the branchpoint most cameras run (`StateStore.shared_branchpoints`, kept as counts), so a
    registration reads O(its camera), not the whole plan."""

    own: Mapping[str, Any] = field(default_factory=dict)  # this camera's plan entry ({"fps", "apps"})
    shared: Mapping[str, int] = field(default_factory=dict)  # app -> most shared branchpoint


def _planned(hints: PlanHints, app: str) -> Mapping[str, Any] | None:
    """This camera's entry for `app` in the plan, else the branchpoint most other cameras use."""
    own = hints.own.get("apps", {}).get(app)
    if own is not None:
        return own
    return {"branchpoint": hints.shared[app]} if app in hints.shared else None


def resolve_apps(manifest: Manifest, requests: Sequence[AppRequest], stream_fps: float,
                 hints: PlanHints) -> list[AppRun]:
    """Fill in what the admin left open and check the rest against the package.

    Branchpoint: asked > this camera's current plan > what other cameras run (shares their stem)
    > `default_candidate`.  Fps: asked > plan > the camera's stream rate.  An app with an asked
    branchpoint or fps is pinned (the Planner keeps it); the rest the Planner may re-plan. Raises
    ValueError with a message fit for a 422 answer.
    """
    known = {a.name for a in manifest.apps}
    names = [r.app for r in requests]
    if len(set(names)) != len(names):
        raise ValueError(f"each app may appear once per camera, got {names}")
    out = []
    for req in requests:
        if req.app not in known:
            raise ValueError(f"unknown app {req.app!r}; the package has {sorted(known)}")
        planned = _planned(hints, req.app) or {}
        branchpoint = req.branchpoint if req.branchpoint is not None else planned.get("branchpoint")
        if branchpoint is None:
            branchpoint = default_candidate(manifest, req.app).branchpoint
        have = [c.branchpoint for c in manifest.candidates_for(req.app)]
        if branchpoint not in have:
            raise ValueError(f"app {req.app!r} has no candidate at branchpoint {branchpoint}; have {have}")
        fps = req.fps if req.fps is not None else min(stream_fps, float(planned.get("fps", stream_fps)))
        if fps > stream_fps:
            raise ValueError(f"app {req.app!r}: fps {fps} exceeds the camera's stream rate {stream_fps}")
        pinned = req.branchpoint is not None or req.fps is not None
        out.append(AppRun(req.app, int(branchpoint), float(fps), pinned, app_zones(manifest, req)))
    return out


def app_zones(manifest: Manifest, req: AppRequest) -> tuple[Polygon, ...]:
    """The app's zones, checked: polygons of at least 3 [x, y] points, and only for detect apps."""
    task = next(a.task for a in manifest.apps if a.name == req.app)
    if req.zones and task != "detect":
        raise ValueError(f"app {req.app!r}: zones restrict detect apps' counts; this app's task is {task}")
    return tuple(check_polygon(z, f"app {req.app!r}: zones[{k}]") for k, z in enumerate(req.zones))


def camera_plan(manifest: Manifest, camera: CameraSpec) -> dict[str, Any]:
    """One camera's plan entry, with the event F1 the package's validation numbers predict."""
    entries: dict[str, Any] = {}
    for a in camera.apps:
        cand = next((c for c in manifest.candidates_for(a.app) if c.branchpoint == a.branchpoint), None)
        if cand is None:
            raise ValueError(f"app {a.app!r} has no candidate at branchpoint {a.branchpoint} in the package")
        event_frames = next(e.mean_event_frames for e in manifest.apps if e.name == a.app)
        stride = max(1.0, manifest.fps / a.fps)  # event lengths are in frames of the training stream
        predicted = float(event_f1(cand.precision, cand.recall, event_frames, stride, MISS_CORRELATION))
        entries[a.app] = {"branchpoint": a.branchpoint, "branchpoint_name": cand.branchpoint_name,
                          "fps": a.fps, "frame_f1": cand.f1, "predicted_f1": round(predicted, 4),
                          "pinned": a.pinned}
    return {"fps": camera.stream_fps, "apps": entries}
