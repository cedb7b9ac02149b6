"""RECL's safety check for a retrained model: deploy it only if it beats the deployed one.

Why: a retraining phase can make a model worse (a burst of wrong teacher labels, a buffer that no
longer matches the scene, an unlucky step), and a worse model pushed to the executor and the edges
costs accuracy until the next phase repairs it. The check measures both models on the camera's
newest teacher-labelled samples, held out of the phase that trained the new one, and keeps the
new model back unless it wins there.

"Beats" = higher accuracy on the held-out samples, or the same accuracy with a lower loss (a few
held-out samples often tie on accuracy; the loss still tells which model is surer of the teacher's
answers). A model kept back is counted; its training is rolled back (weights, optimiser, version).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SafetyVerdict:
    deploy: bool
    samples: int  # held-out samples both models were measured on
    accuracy_deployed: float
    accuracy_new: float
    loss_deployed: float
    loss_new: float


def safety_verdict(accuracy_deployed: float, accuracy_new: float, loss_deployed: float, loss_new: float,
                   samples: int) -> SafetyVerdict:
    """Deploy the new model iff it beats the deployed one on the held-out samples (see the module)."""
    beats = accuracy_new > accuracy_deployed or (accuracy_new == accuracy_deployed and loss_new < loss_deployed)
    return SafetyVerdict(beats, samples, accuracy_deployed, accuracy_new, loss_deployed, loss_new)


def holdout_count(buffered: int, fresh: int, most: int) -> int:
    """How many of the newest samples to hold out: at most `most`, only fresh ones (not trained on by an
    earlier phase), and never more than a quarter of the buffer (training keeps the rest). 0: no check."""
    return max(0, min(most, fresh, buffered // 4))
