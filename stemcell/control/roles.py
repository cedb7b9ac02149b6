"""Every control-plane name in one place: roles (stable slots) and the actors serving them.

A role is a stable slot: executor `<name_prefix>-<i>` (where `placement_index` puts cameras) or
retraining worker `retrain-<name>`. Ray fixes an actor's GPU share at creation, so a new share is a
new actor: generation g > 0 of a role is the actor `<role>-g<g>`. Generation 0 is the actor the role
started with (named like the role, or an adopted worker's own name), so it is only ever read from the
role table, never rebuilt from the role.
"""
from __future__ import annotations

EXECUTOR, RETRAIN = "executor", "retrain"  # role kinds
PLANNER_ACTOR = "stemcell-planner"  # the Planner actor's name (in the executors' namespace)


def executor_role(name_prefix: str, index: int) -> str:
    """Executor slot `index`'s role (and the name of its generation-0 actor)."""
    return f"{name_prefix}-{index}"


def retrain_role(worker_name: str) -> str:
    """The role of retraining worker `worker_name`."""
    return f"{RETRAIN}-{worker_name}"


def successor_name(role: str, generation: int) -> str:
    """The actor serving `role` at `generation` (> 0): what a share change creates."""
    if generation < 1:
        raise ValueError(f"generation 0 of {role!r} is the role's first actor, not a derived name")
    return f"{role}-g{generation}"
