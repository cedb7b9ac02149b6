"""Make-before-break reallocation of GPU shares: the pure plan that `actors.reallocator` executes.

Ray fixes an actor's `num_gpus` when it is created, so a new share means a new actor. Killing the
old one first (what Ekya does) drops every request in flight; instead the new actor is created
and warmed up, traffic is switched to it, the old one drains its queue, and only then dies.
This module only *orders* the steps (pure data, testable); the Reallocator runs exactly these,
phase by phase (`phase`), skipping a role's later steps when its new actor never got warm.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum

from stemcell.control.roles import EXECUTOR, successor_name


class Op(str, Enum):
    CREATE = "create"  # start a new actor with the new share (a worker resumes from the old one's checkpoint)
    WARM = "warm"  # wait until it has loaded its models and run a warm-up batch
    SWITCH = "switch"  # publish the routes: the role's cameras/jobs go to the new actor
    DRAIN = "drain"  # wait until the old executor has answered everything already queued
    KILL = "kill"  # stop the old actor


@dataclass(frozen=True)
class RoleState:
    """One role's row in the Planner's durable role table."""

    kind: str  # EXECUTOR or RETRAIN (`stemcell.control.roles`)
    generation: int  # bumps on every share change (actor names carry it)
    share: float  # GPU share the serving actor was created with
    actor: str  # name of the actor serving the role now


@dataclass(frozen=True)
class Step:
    op: Op  # what to do
    role: str  # logical slot, e.g. "executor-0" or "retrain-0" (stable across generations)
    actor: str  # concrete actor name the step acts on
    share: float  # GPU share of that actor
    kind: str = EXECUTOR  # the role's kind (what CREATE starts, whether DRAIN applies)


def reallocation_steps(current: Mapping[str, RoleState], target: Mapping[str, float], *,
                       down: Collection[str] = ()) -> list[Step]:
    """Steps moving each role of `current` to its share in `target`, in the order they must run.

    A changed share creates generation+1, warms it, switches, drains the old actor and kills it.
    Creates and warm-ups of all roles come first, so the whole new layout is ready before any
    traffic moves and the total never dips below what is serving. Only executors are drained
    (a worker's jobs moved with its checkpoint), and not `down` roles (their actor waits for a node
    and would only answer once placed). Roles only in `target` are not created here (a role is
    added with its generation-0 actor); roles only in `current` are left alone.
    """
    first: list[Step] = []
    switch: list[Step] = []
    last: list[Step] = []
    for role, share in sorted(target.items()):
        if role not in current or abs(current[role].share - share) < 1e-9:
            continue
        old = current[role]
        new = successor_name(role, old.generation + 1)
        first += [Step(Op.CREATE, role, new, share, old.kind), Step(Op.WARM, role, new, share, old.kind)]
        switch.append(Step(Op.SWITCH, role, new, share, old.kind))
        if old.kind == EXECUTOR and role not in down:
            last.append(Step(Op.DRAIN, role, old.actor, old.share, old.kind))
        last.append(Step(Op.KILL, role, old.actor, old.share, old.kind))
    return first + switch + last


def phase(steps: list[Step], op: Op, roles: Collection[str] | None = None) -> list[Step]:
    """The steps of one op, in plan order, limited to `roles` when given (roles still moving)."""
    return [s for s in steps if s.op == op and (roles is None or s.role in roles)]
