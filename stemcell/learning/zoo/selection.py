"""RECL model selection rules: gating top-K + current + last retrained, safety check, pruning.

The gating network is fast but not always right, so it only shortlists: the K experts with the
highest mean gating score, plus the camera's current model and the model last retrained on its
frames, go to a *safety checker* that measures each candidate on fresh teacher-labelled frames and
keeps the one that beats the others (RECL section 3.1), by the rule of `stemcell.learning.safety`
that also keeps a worse retrained model back. Ties go to the current model: switching costs a
model push to the edge and buys nothing.

Pruning (section 3.3) bounds the zoo: an expert the safety checker chose fewer than eta times in
the last q selections is dropped, unless a camera runs it right now or it is too new to have been
judged over a full window of q selections.
"""
from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stemcell.learning.safety import best_model


@dataclass(frozen=True)
class CandidateContext:
    """Inputs to the shortlist for one camera's model-update query."""

    expert_ids: tuple[str, ...]  # zoo experts of the camera's app, in gating-output order
    mean_scores: tuple[float, ...]  # gating score of each expert averaged over the sampled frames
    current: str | None = None  # model the camera runs now (a zoo expert or not)
    last_retrained: str | None = None  # newest model retrained on this camera's frames
    k: int = 10  # how many gating picks go to the safety checker

    def __post_init__(self) -> None:
        if len(self.expert_ids) != len(self.mean_scores):
            raise ValueError(f"{len(self.expert_ids)} experts but {len(self.mean_scores)} scores")
        if self.k < 0:
            raise ValueError(f"k must be >= 0, got {self.k}")


def shortlist(ctx: CandidateContext) -> tuple[str, ...]:
    """Top-K experts by mean gating score (ties: gating order), then current, then last retrained.

    Duplicates are removed keeping the first occurrence, so a current model that is also a top-K
    expert is checked once.
    """
    ranked = sorted(range(len(ctx.expert_ids)), key=lambda i: (-ctx.mean_scores[i], i))[: ctx.k]
    ordered = [ctx.expert_ids[i] for i in ranked] + [m for m in (ctx.current, ctx.last_retrained) if m is not None]
    return tuple(dict.fromkeys(ordered))


@dataclass(frozen=True)
class SafetyDecision:
    chosen: str  # candidate that beat every other (stemcell.learning.safety)
    accuracy: float  # its accuracy on the fresh teacher-labelled frames
    accuracies: tuple[tuple[str, float], ...]  # every candidate's accuracy, in shortlist order


def safety_check(accuracies: Mapping[str, float], current: str | None = None,
                 losses: Mapping[str, float] | None = None) -> SafetyDecision:
    """RECL's safety checker, by the one rule of `stemcell.learning.safety.best_model`: the most
    accurate candidate, equal accuracy broken by the lower loss; a tie keeps `current`, else the earliest."""
    chosen = best_model(accuracies, losses, current)
    return SafetyDecision(chosen, accuracies[chosen], tuple(accuracies.items()))


@dataclass
class SelectionHistory:
    """The last `q` safety-checker outcomes, and when each expert entered the zoo (in selections)."""

    q: int = 3000
    recent: deque[str] = field(default_factory=deque)
    total: int = 0  # selections ever recorded
    admitted_at: dict[str, int] = field(default_factory=dict)  # expert -> `total` when it was admitted

    def record(self, chosen: str) -> None:
        self.recent.append(chosen)
        self.total += 1
        while len(self.recent) > self.q:
            self.recent.popleft()

    def admitted(self, expert_id: str) -> None:
        self.admitted_at[expert_id] = self.total

    def forget(self, expert_id: str) -> None:
        self.admitted_at.pop(expert_id, None)

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready: what `ZooStore.put_history` keeps across restarts."""
        return {"recent": list(self.recent), "total": self.total, "admitted_at": dict(self.admitted_at)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.recent = deque(str(e) for e in list(state.get("recent", []))[-self.q:])
        self.total = int(state.get("total", len(self.recent)))
        self.admitted_at = {str(e): int(n) for e, n in dict(state.get("admitted_at", {})).items()}


@dataclass(frozen=True)
class PruneContext:
    expert_ids: tuple[str, ...]  # experts in the zoo
    recent: tuple[str, ...]  # the last (up to q) chosen models, oldest first
    total_selections: int  # selections ever made (to tell how long an expert has been judged)
    admitted_at: Mapping[str, int]  # expert -> total_selections when it was admitted (missing: 0)
    in_use: frozenset[str] = frozenset()  # experts some camera currently runs: never pruned
    eta: int = 4  # minimum selections in the window to stay
    q: int = 3000  # window length in selections


@dataclass(frozen=True)
class PruneDecision:
    remove: tuple[str, ...]  # experts to drop, in zoo order
    counts: tuple[tuple[str, int], ...]  # selections of every expert within the window


def prune_decision(ctx: PruneContext) -> PruneDecision:
    """Drop experts chosen fewer than eta times in the last q selections.

    An expert is judged only once q selections have passed since its admission (a new expert has
    had no chance to be chosen yet), and never while a camera runs it.
    """
    counts = Counter(ctx.recent[-ctx.q :] if ctx.q else ())
    remove = tuple(
        e
        for e in ctx.expert_ids
        if e not in ctx.in_use
        and ctx.total_selections - ctx.admitted_at.get(e, 0) >= ctx.q
        and counts[e] < ctx.eta
    )
    return PruneDecision(remove, tuple((e, counts[e]) for e in ctx.expert_ids))


def prune_context(
    history: SelectionHistory, expert_ids: Sequence[str], in_use: frozenset[str], eta: int = 4
) -> PruneContext:
    return PruneContext(tuple(expert_ids), tuple(history.recent), history.total, dict(history.admitted_at), in_use, eta, history.q)
