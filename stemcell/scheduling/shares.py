"""From a planning round to one GPU share per actor role, and from measured latency to the problem.

`plan_round` decides GPU-seconds per second for inference and for retraining as wholes; actors are
created with a fixed `num_gpus`, so those totals must become one share per role (an executor, a
retraining worker). Shares are whole multiples of a quantum (Ray and MPS cannot use 0.1234 of a
GPU meaningfully, and tiny changes would rebuild actors for nothing), every role keeps a floor
(an actor with no share cannot even load its models), and the sum never exceeds the total.
`stable_shares` adds hysteresis: a role is moved only when its share changes by a real amount,
because each move costs a make-before-break switch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from stemcell.scheduling.planner import PlanDecision
from stemcell.scheduling.problem import ScheduleProblem

_EPS = 1e-9


def _score(camera_id: str, slot: int) -> bytes:
    return hashlib.blake2b(f"{camera_id}\x00{slot}".encode(), digest_size=8).digest()


def rendezvous_rank(camera_id: str, count: int) -> list[int]:
    """Slots 0..count-1 in `camera_id`'s order of preference (rendezvous hashing: the same on every
    replica; `stemcell.control.placement` says why)."""
    return sorted(range(count), key=lambda slot: _score(camera_id, slot), reverse=True)


def placement_index(camera_id: str, count: int) -> int:
    """Executor slot of a camera: its first-ranked slot by rendezvous hashing, a stable hash, so every
    ingress replica agrees without asking, and adding a slot moves only ~1/count of the cameras."""
    if count < 1:
        raise ValueError(f"need at least one executor slot, got {count}")
    return max(range(count), key=lambda slot: _score(camera_id, slot))


def split_share(total: float, weights: Mapping[str, float], *, quantum: float, floor: float,
                floors: Mapping[str, float] | None = None) -> dict[str, float]:
    """Split `total` over the keys of `weights` proportionally, in multiples of `quantum`.

    Each key first gets its floor (the larger of `floor` and its entry in `floors`, rounded up to a
    quantum) when the total allows every floor; when it does not, the floors shrink in proportion.
    Then the remaining quanta go by largest remainder of the proportional split (ties: key order).
    All-zero weights split evenly. The result never sums above `total`.
    """
    if quantum <= 0:
        raise ValueError(f"quantum must be > 0, got {quantum}")
    if not weights:
        return {}
    if any(w < 0 or not math.isfinite(w) for w in weights.values()):
        raise ValueError(f"weights must be finite and >= 0, got {dict(weights)}")
    units = int(math.floor(total / quantum + _EPS))
    keys = list(weights)
    least = {k: int(math.ceil(max(floor, (floors or {}).get(k, 0.0)) / quantum - _EPS)) for k in keys}
    if sum(least.values()) > units:
        need = sum(least.values())
        least = {k: units * least[k] // need for k in keys}
    left = units - sum(least.values())
    mass = sum(weights.values())
    # what each key deserves beyond its floor, rescaled so the extras add up to exactly `left`
    beyond = {k: max(0.0, (weights[k] / mass if mass > 0 else 1.0 / len(keys)) * units - least[k]) for k in keys}
    spread = sum(beyond.values())
    extra = {k: (beyond[k] * left / spread if spread > 0 else left / len(keys)) for k in keys}
    granted = {k: least[k] + math.floor(extra[k]) for k in keys}
    rest = units - sum(granted.values())
    by_remainder = sorted(keys, key=lambda k: (-(extra[k] - math.floor(extra[k])), keys.index(k)))
    for k in by_remainder[:rest]:
        granted[k] += 1
    return {k: round(granted[k] * quantum, 9) for k in keys}


@dataclass(frozen=True)
class ShareContext:
    """What turns a PlanDecision into per-role shares."""

    decision: PlanDecision  # the round's inference/retraining split and schedules
    camera_roles: Mapping[str, str]  # camera -> executor role hosting it
    executor_roles: tuple[str, ...]  # every executor role (also those with no camera yet)
    job_roles: Mapping[str, str]  # retraining job id -> worker role
    quantum: float = 0.05  # shares are multiples of this
    floor: float = 0.05  # least share of any role
    memory_floors: Mapping[str, float] = dataclasses.field(default_factory=dict)  # role -> least share by memory


def role_shares(ctx: ShareContext) -> dict[str, float]:
    """Executors split the inference share by their cameras' planned cost, never below the memory
    their models need; workers split the retraining share by the micro-windows the slicing granted
    their jobs."""
    d = ctx.decision
    load = {role: 0.0 for role in ctx.executor_roles}
    for camera, schedule in d.schedules.items():
        role = ctx.camera_roles.get(camera)
        if role in load:
            load[role] += schedule.cost
    shares = split_share(d.inference_share, load, quantum=ctx.quantum, floor=ctx.floor, floors=ctx.memory_floors)
    if ctx.job_roles:
        windows = {role: 0.0 for role in ctx.job_roles.values()}
        if d.slicing is not None:
            for job, granted in d.slicing.grants:
                if job in ctx.job_roles:
                    windows[ctx.job_roles[job]] += granted
        shares |= split_share(d.retrain_share, windows, quantum=ctx.quantum, floor=ctx.floor)
    return shares


def stable_shares(current: Mapping[str, float], target: Mapping[str, float], *, min_change: float,
                  total: float, floors: Mapping[str, float] | None = None) -> dict[str, float]:
    """`target`, except roles whose share moves by less than `min_change` keep their current share,
    unless the current share is below the role's floor (`stemcell.control.planning.memory_floor`: too little memory is a
    failure, not a small inefficiency).

    Keeping a share must not push the sum past `total`; when it would, the target is used as is
    (it always fits, being a split of the total).
    """
    def keep(role: str, share: float) -> bool:
        return role in current and abs(current[role] - share) < min_change \
            and current[role] >= (floors or {}).get(role, 0.0) - _EPS

    kept = {r: (current[r] if keep(r, s) else s) for r, s in target.items()}
    return kept if sum(kept.values()) <= total + _EPS else dict(target)


def measured_latency(problem: ScheduleProblem, segment_names: Sequence[str],
                     rows: Sequence[tuple[str, float]]) -> ScheduleProblem:
    """The problem with per-frame latencies replaced by what executors measured, where measured.

    `rows` are (segment, measured ms per frame) pairs from any number of executors; `segment_names` names the problem's segments in order (the head is
    "head"). The median over nodes of the same segment is used, so one odd node does not steer the
    plan; unmeasured segments keep the package's profile.
    """
    seen: dict[str, list[float]] = {}
    for segment, ms in rows:
        if math.isfinite(ms) and ms > 0:
            seen.setdefault(segment, []).append(float(ms) / 1e3)
    if len(segment_names) != len(problem.segment_latency_s):
        raise ValueError(f"{len(segment_names)} segment names for {len(problem.segment_latency_s)} segments")
    segments = tuple(
        statistics.median(seen[name]) if name in seen else t for name, t in zip(segment_names, problem.segment_latency_s)
    )
    head = statistics.median(seen["head"]) if "head" in seen else problem.head_latency_s
    return dataclasses.replace(problem, segment_latency_s=segments, head_latency_s=head)


def placeable_shares(current: Mapping[str, float], target: Mapping[str, float], *, free: float,
                     quantum: float, down: Collection[str] = ()) -> dict[str, float]:
    """The part of `target` that make-before-break can place now, given `free` unallocated GPU.

    Every changed role's new actor runs beside its old one until the switch, so all new shares
    (created together, `reallocation_steps`) must fit in `free` at once. Shrinking roles go first
    (they free room once done, and are cheap to place); a grow that does not fit whole is cut to
    the largest quantum multiple that still fits above the current share, else left for a later
    round. Roles not in `current` are ignored.

    `down` roles have no running actor (it waits for room the cluster lost with a node), so nothing
    of theirs needs to keep running beside the new one: they are placed first, at their target or
    at what fits, whichever is less (at least one quantum), and bring their cameras home.
    """
    out = {r: current[r] for r in target if r in current}
    room = free
    for role in sorted(r for r in down if r in out):
        want = min(target[role], math.floor((room + _EPS) / quantum) * quantum)
        if want >= quantum - _EPS and abs(want - current[role]) >= _EPS:
            out[role] = round(want, 9)
            room -= want
    changed = [r for r in out if r not in down and abs(target[r] - current[r]) >= _EPS]
    for role in sorted(changed, key=lambda r: (target[r] - current[r], r)):  # biggest shrink first
        want = target[role]
        if want > current[role]:
            want = min(want, math.floor((room + _EPS) / quantum) * quantum)
            if want <= current[role] + _EPS:
                continue
        if want > room + _EPS:
            continue
        out[role] = round(want, 9)
        room -= want
    return out
