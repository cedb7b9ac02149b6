"""Make-before-break: nothing is killed before its replacement is warm and serving."""
from __future__ import annotations

import pytest

from stemcell.control.reallocation import Op, RoleState, phase, reallocation_steps
from stemcell.control.roles import EXECUTOR, RETRAIN, executor_role, retrain_role, successor_name


def _index(steps, op, actor):  # noqa: ANN001, ANN202
    return next(i for i, s in enumerate(steps) if s.op == op and s.actor == actor)


def test_share_change_creates_warms_switches_then_drains_and_kills() -> None:
    current = {"executor-0": RoleState(EXECUTOR, 0, 0.25, "executor-0"),
               "retrain-0": RoleState(RETRAIN, 2, 0.5, "retrain-0-g2")}
    steps = reallocation_steps(current, {"executor-0": 0.5, "retrain-0": 0.25})
    order = [_index(steps, Op.CREATE, "executor-0-g1"), _index(steps, Op.WARM, "executor-0-g1"),
             _index(steps, Op.SWITCH, "executor-0-g1"), _index(steps, Op.DRAIN, "executor-0"),
             _index(steps, Op.KILL, "executor-0")]
    assert order == sorted(order)
    # generation 0 is the role's own actor: the old actor drained and killed is the one that runs
    assert [s.actor for s in phase(steps, Op.KILL)] == ["executor-0", "retrain-0-g2"]
    # a worker is not drained (its jobs moved with its checkpoint), only created, switched and killed
    assert [s.op for s in steps if s.role == "retrain-0"] == [Op.CREATE, Op.WARM, Op.SWITCH, Op.KILL]
    # every new actor is warm before the first switch, so capacity never dips
    last_warm = max(i for i, s in enumerate(steps) if s.op == Op.WARM)
    assert last_warm < min(i for i, s in enumerate(steps) if s.op == Op.SWITCH)


def test_unchanged_unknown_and_down_roles() -> None:
    current = {"executor-0": RoleState(EXECUTOR, 1, 0.5, "executor-0-g1"),
               "executor-1": RoleState(EXECUTOR, 0, 0.5, "adopted")}
    steps = reallocation_steps(current, {"executor-0": 0.5, "executor-1": 0.25, "executor-2": 0.5},
                               down={"executor-1"})
    assert not any(s.role in ("executor-0", "executor-2") for s in steps)  # unchanged; not a role yet
    # a down role has nothing running to drain: create, warm, switch, kill the adopted first actor
    assert [(s.op, s.actor) for s in steps] == [(Op.CREATE, "executor-1-g1"), (Op.WARM, "executor-1-g1"),
                                                (Op.SWITCH, "executor-1-g1"), (Op.KILL, "adopted")]
    assert phase(steps, Op.KILL, roles={"executor-0"}) == []


def test_role_names() -> None:
    assert executor_role("stemcell-executor", 2) == "stemcell-executor-2"
    assert retrain_role("w0") == "retrain-w0"
    assert successor_name("retrain-w0", 3) == "retrain-w0-g3"
    with pytest.raises(ValueError):
        successor_name("retrain-w0", 0)  # generation 0 is whatever the role started with
