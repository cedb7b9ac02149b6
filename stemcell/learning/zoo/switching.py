"""When a zoo expert may replace a camera's own model, and how long the own model may come back.

Why (measured by benchmarks/live_zoo.py, full mode, 73 scene changes): a switch throws away the
camera's own AMS lineage, the model trained on its T_horizon buffer, for an expert another camera
trained; retraining then continues from the expert with sparse updates, so a wrong switch costs
accuracy long after the minute it was made in. The safety check that picks the expert weighs it on
the few fresh samples of one live batch (3-8 frames): an expert that ties the serving model there
(the loss breaking the tie) or wins by one sample is noise, and those switches lost accuracy (-1.4
and -5.9 points in the minute after the change) where clear wins gained (+7.9). So:

- `switch_due`: a zoo expert replaces the serving model only when it is right on at least
  `margin` more of the fresh samples (accuracy points); a retrained model of the camera's own
  lineage still needs only to beat the deployed one (`stemcell.learning.safety`): it loses nothing.
- `OwnModel`: the model a switch replaced stays a contender for `batches` live batches (RECL: the
  camera's own retrained model competes with the experts in every selection); on each of them, if
  it beats the serving expert by the safety rule, it serves again at once (the switch is undone).
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
