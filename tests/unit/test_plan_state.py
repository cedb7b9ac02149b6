"""Two writers share the saved plan: each replaces its own section and keeps the other's."""
from __future__ import annotations

from pathlib import Path

from stemcell.control.plan_state import CAMERAS, PLANNER, executor_routes, plan_section, save_plan_section
from stemcell.state import StateStore


def test_sections_do_not_erase_each_other(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        assert plan_section(store, PLANNER) is None and executor_routes(store) == {}
        v1 = save_plan_section(store, CAMERAS, {"cam-1": {"fps": 10.0}})
        v2 = save_plan_section(store, PLANNER, {"routes": {"ex-0": "ex-0-g1"}, "roles": {}})
        v3 = save_plan_section(store, CAMERAS, {"cam-1": {"fps": 5.0}})
        assert v1 < v2 < v3
        assert store.latest_plan().plan == {CAMERAS: {"cam-1": {"fps": 5.0}},
                                            PLANNER: {"routes": {"ex-0": "ex-0-g1"}, "roles": {}}}
        assert executor_routes(store) == {"ex-0": "ex-0-g1"}
        # an unchanged section is not a new version (a retried or idle round writes nothing)
        assert save_plan_section(store, PLANNER, {"routes": {"ex-0": "ex-0-g1"}, "roles": {}}) == v3


def test_sections_survive_reopening(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        save_plan_section(store, PLANNER, {"routes": {"ex-0": "ex-0-g4"}})
    with StateStore(tmp_path / "state.db") as store:
        assert executor_routes(store) == {"ex-0": "ex-0-g4"}
