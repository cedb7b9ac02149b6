"""The Planner's dashboard series (`ray.util.metrics`): what it planned, how long it took, what it moved.

Kept apart from the actor so the Planner reads as planning; created in the Planner's process
(Ray metrics must be made where they are recorded).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.util import metrics

DECISION_MS_BOUNDARIES = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]


class PlannerMetrics:
    def __init__(self) -> None:
        self.share = metrics.Gauge("stemcell_planner_gpu_share", "Planned GPU share per role", tag_keys=("role", "kind"))
        self.fps = metrics.Gauge("stemcell_planner_planned_fps", "Planned frame rate", tag_keys=("camera", "app"))
        self.f1 = metrics.Gauge("stemcell_planner_predicted_f1", "Predicted event F1", tag_keys=("camera", "app"))
        self.objective = metrics.Gauge("stemcell_planner_objective", "Mean predicted event F1 over cameras")
        self.decision_ms = metrics.Histogram("stemcell_planner_decision_ms", "plan_round wall time",
                                             boundaries=DECISION_MS_BOUNDARIES)
        self.switches = metrics.Counter("stemcell_planner_switches_total", "Make-before-break switches",
                                        tag_keys=("role", "outcome"))
        self.camera_changes = metrics.Counter("stemcell_planner_camera_changes_total",
                                              "Camera reconfigurations pushed by the Planner",
                                              tag_keys=("camera", "outcome"))

    def export(self, roles: Mapping[str, Any], decision: Mapping[str, Any]) -> None:
        """Set the gauges from the role table (RoleState by role) and the decision view."""
        for role, st in roles.items():
            self.share.set(st.share, {"role": role, "kind": st.kind})
        for cam, entry in decision.get("cameras", {}).items():
            for app, choice in entry["apps"].items():
                self.fps.set(choice["fps"], {"camera": cam, "app": app})
                self.f1.set(choice["predicted_f1"], {"camera": cam, "app": app})
        if "objective" in decision:
            self.objective.set(decision["objective"])
