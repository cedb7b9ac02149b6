"""RECL's safety check in AMS retraining: a retrained model is published only if it beats the deployed
one on the newest teacher-labelled samples, which its phase did not train on."""
from __future__ import annotations

import pytest
import torch

from stemcell.learning import AmsConfig, AmsTrainer
from stemcell.learning.safety import best_model, holdout_count, safety_verdict
from stemcell.learning.zoo import safety_check
from stemcell.models import build_base, make_app_model
from tests.helpers.builders import bright_dark_samples

SIZE = 16
CFG = AmsConfig(input_size=SIZE, iterations=30, batch_size=8, lr=1e-2, gamma=None, adaptive=False,
                safety_holdout=8)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_verdict_needs_a_win() -> None:
    assert safety_verdict(0.5, 0.75, 0.7, 0.6, 8).deploy
    assert not safety_verdict(0.75, 0.5, 0.7, 0.6, 8).deploy
    assert safety_verdict(0.5, 0.5, 0.7, 0.6, 8).deploy  # a tie on accuracy: the surer model wins
    assert not safety_verdict(0.5, 0.5, 0.6, 0.6, 8).deploy  # no better at all: keep what serves


def test_one_rule_for_retrained_models_and_zoo_experts() -> None:
    """The zoo's safety checker and the retraining safety check answer alike on the same scores."""
    for acc_d, acc_n, loss_d, loss_n in ((0.5, 0.75, 0.7, 0.6), (0.75, 0.5, 0.7, 0.6), (0.5, 0.5, 0.7, 0.6),
                                         (0.5, 0.5, 0.6, 0.6), (0.5, 0.5, 0.6, 0.7)):
        zoo = safety_check({"new": acc_n, "deployed": acc_d}, "deployed", {"deployed": loss_d, "new": loss_n})
        assert (zoo.chosen == "new") == safety_verdict(acc_d, acc_n, loss_d, loss_n, 8).deploy


def test_best_model_among_several() -> None:
    acc = {"e1": 0.9, "e2": 0.9, "cur": 0.9, "e3": 0.6}
    assert best_model(acc, incumbent="cur") == "cur"  # an exact tie keeps what serves
    assert best_model(acc, {"e1": 0.3, "e2": 0.2, "cur": 0.25}, "cur") == "e2"  # surer of the teacher's labels
    assert best_model(acc) == "e1"  # no incumbent: the earliest of the tied
    with pytest.raises(ValueError):
        best_model({})


def test_holdout_only_fresh_and_at_most_a_quarter() -> None:
    assert holdout_count(buffered=40, fresh=40, most=8) == 8
    assert holdout_count(buffered=12, fresh=12, most=8) == 3
    assert holdout_count(buffered=100, fresh=2, most=8) == 2
    assert holdout_count(buffered=100, fresh=100, most=0) == 0


def _trained_job(flip_training: bool):
    trainer = AmsTrainer(CFG)
    base = build_base("tiny_cnn", num_classes=5, seed=0)
    job = trainer.add_job("cam", "car", make_app_model(base, 4, 1), 1, {"branchpoint": 4})
    before = {k: v.clone() for k, v in job.learner.trainable_state().items()}
    trainer.add_samples("cam", *bright_dark_samples(32, 0.0, flip=flip_training))  # what the phase trains on
    trainer.add_samples("cam", *bright_dark_samples(8, 32.0, flip=False))  # the newest: held out, labelled right
    [published] = trainer.run_pending()
    return job, published, before


def test_a_model_made_worse_on_purpose_is_kept_back() -> None:
    job, published, before = _trained_job(flip_training=True)  # trained on wrong labels
    assert published.kept_back and published.safety is not None
    assert published.safety.accuracy_new < published.safety.accuracy_deployed
    assert job.version == 0 and published.version == 0 and job.stats.kept_back == 1 and job.stats.updates == 0
    assert all(torch.equal(before[k], v) for k, v in job.learner.trainable_state().items())  # rolled back
    assert job.update_since(None).version == 0  # edges and executors see nothing new


def test_a_better_model_is_deployed() -> None:
    job, published, _ = _trained_job(flip_training=False)
    assert not published.kept_back and published.safety.deploy
    assert published.safety.accuracy_new > published.safety.accuracy_deployed
    assert job.version == 1 and job.stats.kept_back == 0 and job.stats.updates == 1
