"""The saved plan is one JSON document with one section per writer.

The ingress writes `cameras` (what each camera runs, rebuilt from the stored cameras); the Planner
writes `planner` (GPU shares, which actor serves each role, the last round's schedules). Each
writer replaces only its own section, reading and writing in one call on the store, so two
writers never erase each other. Run it on the StateStore actor (whose calls are serialised):

    store.__ray_call__.remote(save_plan_section, "planner", section)
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stemcell.state import StateStore

CAMERAS = "cameras"  # section written by the ingress (app.service)
PLANNER = "planner"  # section written by the Planner actor
PLANNER_ACTOR = "stemcell-planner"  # the Planner actor's name (in the executors' namespace)


def save_plan_section(store: StateStore, section: str, value: Mapping[str, Any]) -> int:
    """Replace `section` of the latest plan with `value`, keep the others; returns the plan version."""
    latest = store.latest_plan()
    plan = dict(latest.plan) if latest is not None else {}
    plan[section] = dict(value)
    return store.save_plan(plan)


def plan_section(store: StateStore, section: str) -> dict[str, Any] | None:
    """One section of the latest plan, None when nothing was saved under it."""
    latest = store.latest_plan()
    value = None if latest is None else latest.plan.get(section)
    return dict(value) if isinstance(value, Mapping) else None


def executor_routes(store: StateStore) -> dict[str, str]:
    """Role (executor slot or retraining worker) -> name of the actor serving it, as the Planner last
    published (empty: none). The executor pool reads only its slots' roles."""
    routes = (plan_section(store, PLANNER) or {}).get("routes", {})
    return {str(k): str(v) for k, v in routes.items()}
