"""Does a camera plan's merged memory fit its executor's share? If not: merge more, go deeper, swap, or refuse.

A GPU share is also a memory cap (`torch.cuda.set_per_process_memory_fraction`), so a plan whose
weights + activations exceed it would fail with out-of-memory at run time. The Planner asks this
policy first: a pure function of frozen inputs (the measured memory, the cap, and the remedies that
the merger, the M-Package and the swapping planner can offer, each with its cost) returning one
decision. Remedies are preferred in the seed's order: merging (memory back at no throughput cost,
accuracy within its target), then a deeper branchpoint (more shared stem, some accuracy lost), then
layer swapping (everything kept, throughput lost); a plan none of them brings under the cap is refused.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from stemcell.sharing.swap_plan import LayerUse, MemoryCapTooSmall, plan_residency

Action = Literal["merge_more", "deeper_branchpoint", "swap"]
PREFERENCE: tuple[Action, ...] = ("merge_more", "deeper_branchpoint", "swap")


@dataclass(frozen=True)
class MemoryOption:
    """One way to make the plan smaller, with what it costs."""

    action: Action
    weight_bytes: int  # device-resident weight bytes after the remedy (swap: resident + staging)
    accuracy_cost: float  # points the worst app is expected to lose (merge: at most its tolerance)
    throughput_factor: float = 1.0  # frames/s after / before (swap < 1)
    detail: str = ""  # what exactly (which branchpoint, how many layers swapped), for the plan view


@dataclass(frozen=True)
class MemoryFitContext:
    weight_bytes: int  # merged weights of the plan as it stands (the tree store's bytes)
    activation_bytes: int  # peak activations at the running batch (`ActivationBytes.merged_peak`)
    cap_bytes: int  # the executor's share of GPU memory
    options: tuple[MemoryOption, ...] = ()  # remedies on offer
    margin: float = 1.25  # allocator slack and batch growth (same as `memory_floor`)
    max_accuracy_cost: float = 1.0  # points a remedy may cost
    min_throughput_factor: float = 0.5  # least frames/s fraction a swap may leave


@dataclass(frozen=True)
class MemoryFitDecision:
    action: Literal["keep", "merge_more", "deeper_branchpoint", "swap", "refuse"]
    need_bytes: int  # (weights + activations) x margin after the decision (before it, when refused)
    cap_bytes: int
    option: MemoryOption | None  # the remedy chosen
    reason: str  # why, in words, for the log and the plan view


def _need(weight_bytes: int, ctx: MemoryFitContext) -> int:
    return int(ctx.margin * (weight_bytes + ctx.activation_bytes))


def fit_memory(ctx: MemoryFitContext) -> MemoryFitDecision:
    """Keep a plan that fits; otherwise the most preferred acceptable remedy that fits; else refuse."""
    need = _need(ctx.weight_bytes, ctx)
    if need <= ctx.cap_bytes:
        return MemoryFitDecision("keep", need, ctx.cap_bytes, None, "fits")
    acceptable = [o for o in ctx.options if _need(o.weight_bytes, ctx) <= ctx.cap_bytes
                  and o.accuracy_cost <= ctx.max_accuracy_cost and o.throughput_factor >= ctx.min_throughput_factor]
    if acceptable:
        best = min(acceptable, key=lambda o: (PREFERENCE.index(o.action), o.accuracy_cost, -o.throughput_factor,
                                              o.weight_bytes))
        return MemoryFitDecision(best.action, _need(best.weight_bytes, ctx), ctx.cap_bytes, best,
                                 f"needs {need} bytes > cap {ctx.cap_bytes}: {best.action} ({best.detail})")
    rejected = "; ".join(f"{o.action}: {_need(o.weight_bytes, ctx)} bytes, -{o.accuracy_cost:.1f} points, "
                         f"x{o.throughput_factor:.2f} fps" for o in ctx.options) or "no remedy offered"
    return MemoryFitDecision("refuse", need, ctx.cap_bytes, None,
                             f"needs {need} bytes > cap {ctx.cap_bytes} and no remedy fits within limits ({rejected})")


def swap_option(layers: Sequence[LayerUse], cap_bytes: int, activation_bytes: int, *, compute_s: float,
                copy_bytes_per_s: float, margin: float = 1.25) -> MemoryOption | None:
    """The layer-swapping remedy for weights `layers` under the cap, with its estimated throughput.

    Per batch every swapped layer is copied once; with two staging slots the copy overlaps compute
    (batch time = max(compute, copy)), with one it adds to it. None when not even the staging fits.
    """
    room = int(cap_bytes / margin) - activation_bytes
    try:
        plan = plan_residency(layers, room)
    except MemoryCapTooSmall:
        return None
    copy_s = sum(item.bytes for item in layers if item.key in plan.swapped) / copy_bytes_per_s
    batch_s = max(compute_s, copy_s) if plan.slots > 1 else compute_s + copy_s
    return MemoryOption("swap", plan.peak_bytes, 0.0, compute_s / batch_s if batch_s else 1.0,
                        f"{len(plan.resident)} layers resident, {len(plan.swapped)} swapped, {plan.slots} slots")
