"""RECL zoo admission: only promising retrained models enter, in batches.

A retrained model is *promising* when, on the fresh teacher-labelled frames the safety checker
used, it beats every other candidate (the gating top-K and the camera's current model) by at least
alpha (RECL section 3.3). Admitting near-duplicates would grow the zoo and make the gating
network's job harder for no accuracy.

Promising models wait in a queue that is flushed when it holds `gamma` models (the paper's rule:
every flush re-trains the gating network, so batching admissions bounds that cost). A lone
promising model should not wait forever on a quiet system, so an optional `max_wait_s` also
flushes the queue once its oldest entry has waited that long (clock injected for tests).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar


@dataclass(frozen=True)
class AdmissionContext:
    candidate: str  # id of the retrained model
    accuracies: Mapping[str, float]  # safety-checker accuracy of every candidate, the retrained one included
    alpha: float = 0.02  # required margin over the best other candidate


@dataclass(frozen=True)
class AdmissionDecision:
    admit: bool  # promising: queue it for the zoo
    margin: float  # candidate accuracy minus the best other candidate (inf when it had no rival)


def admission_decision(ctx: AdmissionContext) -> AdmissionDecision:
    """Promising iff accuracy >= best other candidate + alpha (an empty zoo admits the first model)."""
    if ctx.candidate not in ctx.accuracies:
        raise ValueError(f"candidate {ctx.candidate!r} was not evaluated by the safety checker")
    others = [a for c, a in ctx.accuracies.items() if c != ctx.candidate]
    margin = ctx.accuracies[ctx.candidate] - max(others) if others else float("inf")
    return AdmissionDecision(margin >= ctx.alpha - 1e-12, margin)


T = TypeVar("T")


@dataclass
class AdmissionQueue(Generic[T]):
    """Promising models waiting for the next zoo update (flush at `gamma` models or `max_wait_s`)."""

    gamma: int = 4
    max_wait_s: float | None = None
    clock: Callable[[], float] = time.monotonic
    _items: list[tuple[float, T]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.gamma < 1:
            raise ValueError(f"gamma must be >= 1, got {self.gamma}")

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: T) -> None:
        self._items.append((self.clock(), item))

    def due(self) -> bool:
        if len(self._items) >= self.gamma:
            return True
        return bool(self._items) and self.max_wait_s is not None and self.clock() - self._items[0][0] >= self.max_wait_s

    def drain(self) -> list[T]:
        """Everything queued, oldest first; the queue is empty afterwards."""
        items = [item for _, item in self._items]
        self._items.clear()
        return items
