"""Make-before-break: nothing is killed before its replacement is warm and serving."""
from __future__ import annotations

from stemcell.control.reallocation import Op, actor_name, reallocation_steps


def _index(steps, op, actor):
    return next(i for i, s in enumerate(steps) if s.op == op and s.actor == actor)


def test_share_change_creates_warms_switches_then_drains_and_kills() -> None:
    steps = reallocation_steps({"executor-0": (0, 0.25), "retrain-0": (2, 0.5)}, {"executor-0": 0.5, "retrain-0": 0.25})
    for role, old_gen in (("executor-0", 0), ("retrain-0", 2)):
        new, old = actor_name(role, old_gen + 1), actor_name(role, old_gen)
        order = [_index(steps, Op.CREATE, new), _index(steps, Op.WARM, new), _index(steps, Op.SWITCH, new),
                 _index(steps, Op.DRAIN, old), _index(steps, Op.KILL, old)]
        assert order == sorted(order)
    # every new actor is warm before the first kill, so capacity never dips
    last_warm = max(i for i, s in enumerate(steps) if s.op == Op.WARM)
    first_kill = min(i for i, s in enumerate(steps) if s.op == Op.KILL)
    assert last_warm < first_kill


def test_unchanged_roles_are_left_alone_and_removed_roles_drained_first() -> None:
    steps = reallocation_steps({"executor-0": (1, 0.5), "executor-1": (0, 0.5)}, {"executor-0": 0.5, "executor-2": 0.5})
    assert not any(s.role == "executor-0" for s in steps)
    assert [s.op for s in steps if s.role == "executor-1"] == [Op.DRAIN, Op.KILL]
    assert [s.op for s in steps if s.role == "executor-2"] == [Op.CREATE, Op.WARM, Op.SWITCH]
    assert _index(steps, Op.SWITCH, "executor-2-g0") < _index(steps, Op.DRAIN, "executor-1-g0")
