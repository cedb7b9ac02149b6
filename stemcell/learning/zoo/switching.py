"""When a zoo expert may replace a camera's own model, and how long the own model may come back.

Why (measured by benchmarks/live_zoo.py, full mode, 73 scene changes of one world): a switch gives
up the camera's own AMS lineage, the model trained on its T_horizon buffer, which in a world of
recurring scenes already spans most scenes the camera returns to, for an expert another camera
trained; retraining then continues from the expert with sparse updates. With a switch decided on
one live batch (3-8 fresh frames, ties broken by the loss) and undone only if the replaced model won
the very next batch, switches cost accuracy long after the minute they were made in: -4.1 points
where the zoo did nothing in the minute after a change (earlier switches' damage), -8.4 where the
switch was undone; overall -0.49 points after scene changes. So:

- `switch_due`: a zoo expert replaces the serving model only when it is right on more of the fresh
  samples, by at least `margin` (accuracy points); a tie never switches, whatever the losses (the
  loss still breaks ties between models of one lineage: `stemcell.learning.safety`).
- `OwnModel`: the model a switch replaced stays a contender for `batches` live batches (RECL: the
  camera's own model competes with the experts at every selection): on each of them, if it beats
  the serving expert by the safety rule, it serves again at once (the switch is undone). A switch
  then costs at most a batch when the camera returns to a scene its own model knows, and an expert
  serves the scenes it knows better.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

M = TypeVar("M")

EPS = 1e-9


def switch_due(expert_accuracy: float, serving_accuracy: float, margin: float) -> bool:
    """Does an expert scoring `expert_accuracy` on the fresh samples replace a serving model scoring
    `serving_accuracy` there? Only with a clear lead: at least `margin` (and never on a tie)."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    lead = expert_accuracy - serving_accuracy
    return lead > EPS and lead >= margin - EPS


@dataclass
class OwnModel(Generic[M]):
    """The camera's own model a switch replaced, a contender for the next `batches` live batches."""

    model: M
    batches: int

    def __post_init__(self) -> None:
        if self.batches < 1:
            raise ValueError(f"the own model must stay a contender for at least 1 batch, got {self.batches}")

    def spend(self) -> bool:
        """One batch it did not win: True while it stays a contender."""
        self.batches -= 1
        return self.batches > 0
