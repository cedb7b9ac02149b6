"""When a zoo expert replaces a camera's own model (stemcell.learning.zoo.switching, wired in
stemcell.learning.serving): only on a clear lead on the fresh samples, and the replaced own model
stays a contender for a few batches."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stemcell.learning.zoo.switching import OwnModel, switch_due
from stemcell.models import build_base
from tests.helpers.builders import bright_dark_samples
from tests.unit.test_live_learning import _feed, _live, _switched, _train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_an_expert_needs_a_clear_lead_to_replace_the_serving_model() -> None:
    assert not switch_due(0.5, 0.5, 0.25)  # a tie (the loss would break it) keeps the camera's own model
    assert not switch_due(0.625, 0.5, 0.25)  # one sample of eight: noise
    assert switch_due(0.75, 0.5, 0.25) and switch_due(1.0, 0.0, 1.0)
    assert switch_due(0.51, 0.5, 0.0) and not switch_due(0.5, 0.5, 0.0)  # margin 0: any lead, never a tie
    with pytest.raises(ValueError):
        switch_due(1.0, 0.0, -0.1)


def test_the_own_model_stays_a_contender_for_its_batches() -> None:
    own = OwnModel("model", batches=3)
    assert own.spend() and own.spend() and not own.spend()
    with pytest.raises(ValueError):
        OwnModel("model", batches=0)


def _half_and_half(start: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four samples of scene A then four of scene B: the camera's model and B's expert are right on half each."""
    t_s, frames, labels = bright_dark_samples(8, start, flip=False)
    labels[4:, 1] = 1 - labels[4:, 1]
    return t_s, frames, labels


def test_a_tie_on_the_fresh_samples_keeps_the_own_model(tmp_path: Path) -> None:
    live = _live(tmp_path, build_base("tiny_cnn", num_classes=5, seed=0))
    _train(live, "other", flip=True, start=0.0)  # scene B's expert in the zoo
    _train(live, "cam", flip=False, start=0.0)  # this camera's own model: scene A
    job = live.trainer.job("cam", "car")
    before = job.version
    for start in range(40, 104, 8):  # it serves scene A well: its agreement climbs to that level
        _feed(live, "cam", *bright_dark_samples(8, float(start), flip=False))
    t_s, frames, labels = _half_and_half(104.0)
    assert live.measure("cam", ["car"], t_s, frames, labels) == ["car"]  # 0.5 after 1.0: drift
    assert not live.switch("cam", "car", frames, labels)
    assert job.version == before and live.counts["switches"] == 0
    stay = live.decisions[-1]
    assert stay["kind"] == "stay" and stay["expert_accuracy"] == stay["serving_accuracy"] == 0.5
    assert stay["expert"] in live.zoo.store and stay["ts"] == 111.0  # the best expert, for the record
    # the same model still serves and is still below the level it had reached: the zoo is asked again
    assert live.measure("cam", ["car"], *_half_and_half(112.0)) == ["car"]


def test_a_clear_lead_switches_and_is_logged(tmp_path: Path) -> None:
    live, _ = _switched(tmp_path)  # scene B: the own model 0 of 8, B's expert 8 of 8
    switch = live.decisions[-1]
    assert switch["kind"] == "switch" and (switch["serving_accuracy"], switch["expert_accuracy"]) == (0.0, 1.0)
    assert switch["expert"] == live.experts[("cam", "car")] and switch["ts"] == 71.0


def test_the_own_model_comes_back_on_a_later_batch(tmp_path: Path) -> None:
    live, _ = _switched(tmp_path)  # own_batches = 8 (the default)
    for start in (72.0, 80.0):  # scene B holds: the expert wins, the own model waits
        _feed(live, "cam", *bright_dark_samples(8, start, flip=True))
    assert live.counts["undone"] == 0 and ("cam", "car") in live.experts
    scene_a = bright_dark_samples(8, 88.0, flip=False)  # scene A is back on the third batch
    _feed(live, "cam", *scene_a)
    assert live.counts["undone"] == 1 and ("cam", "car") not in live.experts
    job = live.trainer.job("cam", "car")
    assert ((job.predict(scene_a[1]) > 0) == (scene_a[2][:, 1] > 0.5)).all()
    assert live.decisions[-1]["kind"] == "undone" and live.decisions[-1]["ts"] == 95.0


def test_after_its_batches_the_own_model_is_let_go(tmp_path: Path) -> None:
    live, _ = _switched(tmp_path, own_batches=1)
    _feed(live, "cam", *bright_dark_samples(8, 72.0, flip=True))  # the expert holds its one probation batch
    assert live.counts["undone"] == 0 and ("cam", "car") in live.experts
    _feed(live, "cam", *bright_dark_samples(8, 80.0, flip=False))  # scene A again: nothing to go back to
    assert live.counts["undone"] == 0
