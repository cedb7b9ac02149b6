"""Make-before-break reallocation of GPU shares.

Ray fixes an actor's `num_gpus` when it is created, so a new share means a new actor. Killing the
old one first (what Ekya does) drops every request in flight; instead the new actor is created
and warmed up, traffic is switched to it, the old one drains its queue, and only then dies.
This module only *orders* the steps (pure data, testable); the Planner actor executes them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum


class Draining(RuntimeError):
    """Raised (returned) by an actor being drained for new calls: resolve the role's current actor and retry there."""


class Op(str, Enum):
    CREATE = "create"  # start a new actor with the new share (also restores its state)
    WARM = "warm"  # wait until it has loaded its models and run a warm-up batch
    SWITCH = "switch"  # route the old actor's cameras/jobs to the new one
    DRAIN = "drain"  # wait until the old actor has answered everything already queued
    KILL = "kill"  # stop the old actor


@dataclass(frozen=True)
class Step:
    op: Op  # what to do
    role: str  # logical slot, e.g. "executor-0" or "retrain-0" (stable across generations)
    actor: str  # concrete actor name the step acts on
    share: float  # GPU share of that actor


def actor_name(role: str, generation: int) -> str:
    return f"{role}-g{generation}"


def reallocation_steps(
    current: Mapping[str, tuple[int, float]], target: Mapping[str, float]
) -> list[Step]:
    """Steps moving each role from (generation, share) in `current` to the share in `target`.

    New roles are only created (and warmed); removed roles are drained then killed; a changed share
    creates generation+1, warms it, switches, drains and kills the old generation, in that order.
    Creates and warm-ups of all roles come first, so the whole new layout is ready before any
    traffic moves and the total never dips below what is serving.
    """
    first: list[Step] = []
    last: list[Step] = []
    for role, share in sorted(target.items()):
        if role in current and abs(current[role][1] - share) < 1e-9:
            continue
        generation = current[role][0] + 1 if role in current else 0
        new = actor_name(role, generation)
        first += [Step(Op.CREATE, role, new, share), Step(Op.WARM, role, new, share)]
        if role in current:
            old_gen, old_share = current[role]
            old = actor_name(role, old_gen)
            last += [Step(Op.SWITCH, role, new, share), Step(Op.DRAIN, role, old, old_share),
                     Step(Op.KILL, role, old, old_share)]
        else:
            last.append(Step(Op.SWITCH, role, new, share))
    for role in sorted(set(current) - set(target)):
        old_gen, old_share = current[role]
        old = actor_name(role, old_gen)
        last += [Step(Op.DRAIN, role, old, old_share), Step(Op.KILL, role, old, old_share)]
    return first + last
