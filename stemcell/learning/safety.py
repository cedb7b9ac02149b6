"""RECL's safety check: the one rule that decides which model serves a camera.

Why: a retraining phase can make a model worse (a burst of wrong teacher labels, a buffer that no
longer matches the scene, an unlucky step), and a zoo expert the gating network proposes can be
wrong for this camera; a worse model pushed to the executor and the edges costs accuracy until
something repairs it. So every change of the serving model is weighed on the camera's newest
teacher-labelled samples (for a retrained model: held out of the phase that trained it), and
the model serving now is replaced only by one that beats it there.

"Beats" = higher accuracy on those samples, or the same accuracy with a lower loss (a few samples
often tie on accuracy; the loss still tells which model is surer of the teacher's answers). Among
several challengers (the zoo's gating top-K, the last retrained model) the one that beats all
others wins; an exact tie keeps the incumbent (switching costs a model push and buys nothing),
else the earliest. The same rule keeps a retrained model back (`safety_verdict`, in AMS
retraining) and picks a zoo expert (`stemcell.learning.zoo.selection.safety_check`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class SafetyVerdict:
    deploy: bool
    samples: int  # held-out samples both models were measured on
    accuracy_deployed: float
    accuracy_new: float
    loss_deployed: float
    loss_new: float


def beats(accuracy: float, loss: float, other_accuracy: float, other_loss: float) -> bool:
    """Does a model scoring (accuracy, loss) beat one scoring (other_accuracy, other_loss)? See the module."""
    return accuracy > other_accuracy or (accuracy == other_accuracy and loss < other_loss)


def best_model(accuracies: Mapping[str, float], losses: Mapping[str, float] | None = None,
               incumbent: str | None = None) -> str:
    """The candidate that beats every other (missing losses count as equal); ties keep `incumbent`
    when it is a candidate, else the earliest."""
    if not accuracies:
        raise ValueError("the safety check needs at least one candidate")
    loss = losses or {}
    order = list(accuracies)
    if incumbent in accuracies:
        order.remove(incumbent)
        order.insert(0, incumbent)
    best = order[0]
    for name in order[1:]:
        if beats(accuracies[name], loss.get(name, 0.0), accuracies[best], loss.get(best, 0.0)):
            best = name
    return best


def safety_verdict(accuracy_deployed: float, accuracy_new: float, loss_deployed: float, loss_new: float,
                   samples: int) -> SafetyVerdict:
    """Deploy the new model iff it beats the deployed one on the held-out samples (see the module)."""
    deploy = best_model({"deployed": accuracy_deployed, "new": accuracy_new},
                        {"deployed": loss_deployed, "new": loss_new}, incumbent="deployed") == "new"
    return SafetyVerdict(deploy, samples, accuracy_deployed, accuracy_new, loss_deployed, loss_new)


def holdout_count(buffered: int, fresh: int, most: int) -> int:
    """How many of the newest samples to hold out: at most `most`, only fresh ones (not trained on by an
    earlier phase), and never more than a quarter of the buffer (training keeps the rest). 0: no check."""
    return max(0, min(most, fresh, buffered // 4))
