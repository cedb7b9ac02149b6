"""Learning from live samples without Ray (stemcell.learning.serving, live_stats, live_plan): the
deployed model is measured against the teacher, drift switches to a zoo expert at once, retrained
models enter the zoo, live estimates replace validation figures, and a restart keeps both."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from stemcell.learning import AmsConfig, AmsTrainer
from stemcell.learning.live_plan import annotate_plan, with_live_estimates
from stemcell.learning.live_stats import Agreement, Confusion, Estimate, wilson
from stemcell.learning.serving import LiveLearning
from stemcell.learning.zoo import ModelZoo, ZooConfig, ZooStore
from stemcell.models import build_base, make_app_model
from stemcell.scheduling.planner import CameraDemand
from stemcell.scheduling.problem import build_problem
from tests.helpers.builders import bright_dark_samples

SIZE = 16
CFG = AmsConfig(input_size=SIZE, iterations=30, batch_size=8, lr=1e-2, gamma=None, adaptive=False)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _live(root: Path, base, **options) -> LiveLearning:
    trainer = AmsTrainer(CFG)
    for camera in ("cam", "other"):
        trainer.add_job(camera, "car", make_app_model(base, 4, 1), 1, {"branchpoint": 4})
    zoo = ModelZoo(ZooStore(root), base, ZooConfig(k=3, gamma=1, input_size=SIZE, gating_steps=20,
                                                   gating_finetune_steps=5))
    candidates = {bp: make_app_model(base, bp, 1) for bp in (2, 4)}
    return LiveLearning(trainer, lambda app, bp: candidates[bp], lambda app: [2, 4], zoo=zoo, drift_threshold=0.1,
                        **options)


def _feed(live: LiveLearning, camera: str, t_s, frames, labels) -> list[str]:
    drifted = live.measure(camera, ["car"], t_s, frames, labels)
    live.trainer.add_samples(camera, t_s, frames, labels)
    return drifted


def _train(live: LiveLearning, camera: str, flip: bool, start: float) -> None:
    for phase in range(2):
        _feed(live, camera, *bright_dark_samples(16, start + 16 * phase, flip))
        for published in live.trainer.run_pending():
            if not published.kept_back:
                live.offer(published)


def test_wilson_interval_and_confusion_estimates() -> None:
    lo, hi = wilson(8, 10)
    assert lo < 0.8 < hi and 0.0 <= lo and hi <= 1.0 and wilson(0, 0) is None
    c = Confusion(window=6)
    c.add(np.array([1, 1, 0, 0, 1, 1, 1, 0]), np.array([1, 0, 1, 0, 1, 1, 1, 1]))  # the last 6 are kept
    e = c.estimate()
    assert e.samples == 6 and e.precision == 1.0 and e.recall == 0.6  # tp 3, fp 0, fn 2
    assert e.f1_ci[0] <= e.f1 <= e.f1_ci[1]


def test_agreement_drift_is_a_fall_from_the_slow_level() -> None:
    g = Agreement()
    for t in range(10):
        g.add(float(t), 0.95, version=0)
    assert not g.drifted(0.1) and g.v0 == pytest.approx(0.95)
    g.add(10.0, 0.4, version=1)
    assert g.drifted(0.1) and g.v0 == pytest.approx(0.95) and len(g.history) == 11
    g.switched()
    assert not g.drifted(0.1)


def _switched(root: Path, **options) -> tuple[LiveLearning, int]:
    """Camera "cam" learned scene A, "other" scene B (its model in the zoo); then cam's scene turns
    into B: drift, and a switch to other's expert. Returns the learning and cam's version before.
    `options`: LiveLearning's switching options."""
    base = build_base("tiny_cnn", num_classes=5, seed=0)
    live = _live(root, base, **options)
    _train(live, "other", flip=True, start=0.0)  # another camera learned scene B: its model enters the zoo
    _train(live, "cam", flip=False, start=0.0)  # this camera learned scene A
    assert live.counts["admissions"] >= 1 and len(live.zoo.store) >= 1
    version = live.trainer.job("cam", "car").version
    for start in (40.0, 48.0, 56.0):
        assert _feed(live, "cam", *bright_dark_samples(8, start, flip=False)) == []
    changed = bright_dark_samples(8, 64.0, flip=True)  # the scene turns into B
    assert _feed(live, "cam", *changed) == ["car"]
    assert live.switch("cam", "car", changed[1], changed[2])
    return live, version


def test_drift_switches_to_a_zoo_expert_and_restart_keeps_zoo_and_estimates(tmp_path: Path) -> None:
    live, version = _switched(tmp_path)
    base = live.zoo.base
    job = live.trainer.job("cam", "car")
    assert job.version == version + 1 and live.experts[("cam", "car")].startswith("other.car.")
    assert (job.predict(bright_dark_samples(8, 0.0, flip=True)[1]) > 0).tolist() == [False, True] * 4  # serves scene B now

    view = live.zoo_view()
    assert view["cameras"] == {"cam": live.experts[("cam", "car")]} and view["switches"] == 1
    assert {e["id"] for e in view["experts"]} >= {live.experts[("cam", "car")]} and all(e["size_bytes"] > 0 for e in view["experts"])
    status = live.learning_status("cam")
    assert status["expert"] == live.experts[("cam", "car")] and status["agreement_v0"] is not None
    assert status["samples_buffered"] == len(live.trainer.session("cam").buffer)

    again = _live(tmp_path, base)  # a restarted worker: the zoo from disk, the rest from the checkpoint
    again.load_state_dict(live.state_dict())
    sizes = {e["id"]: (e["size_bytes"], e["admitted_at"]) for e in view["experts"]}
    assert again.estimates() == live.estimates()
    assert {e["id"]: (e["size_bytes"], e["admitted_at"]) for e in again.zoo_view()["experts"]} == sizes
    assert again.zoo_view()["cameras"] == view["cameras"]
    uses = {e["id"]: e["uses"] for e in view["experts"]}
    assert uses[live.experts[("cam", "car")]] >= 1  # the switch chose it
    assert {e["id"]: e["uses"] for e in again.zoo_view()["experts"]} == uses  # persisted with the zoo
    assert again.counts == live.counts and again.experts == live.experts


def test_a_switch_that_is_worse_on_the_next_batch_is_undone(tmp_path: Path) -> None:
    live, version = _switched(tmp_path)
    job = live.trainer.job("cam", "car")
    scene_a = bright_dark_samples(8, 72.0, flip=False)  # the drift was a blip: scene A is back
    _feed(live, "cam", *scene_a)
    assert live.counts == {**live.counts, "switches": 1, "undone": 1}
    assert job.version == version + 2 and ("cam", "car") not in live.experts  # a new version: the old weights
    assert ((job.predict(scene_a[1]) > 0) == (scene_a[2][:, 1] > 0.5)).all()  # serves scene A again
    assert live.zoo_view()["undone"] == 1 and live.learning_status("cam")["expert"] is None


def test_a_switch_that_holds_on_the_next_batch_stays(tmp_path: Path) -> None:
    live, version = _switched(tmp_path)
    _feed(live, "cam", *bright_dark_samples(8, 72.0, flip=True))  # still scene B
    assert live.counts["undone"] == 0 and live.trainer.job("cam", "car").version == version + 1
    assert live.experts[("cam", "car")].startswith("other.car.")


def test_a_new_camera_starts_on_the_expert_of_its_scene(tmp_path: Path) -> None:
    """RECL's model reuse: a camera's first batch asks the zoo, before any drift could be measured."""
    base = build_base("tiny_cnn", num_classes=5, seed=0)
    live = _live(tmp_path, base)
    _train(live, "other", flip=True, start=0.0)  # scene B, learned by another camera: in the zoo
    assert len(live.zoo.store) >= 1
    live.trainer.add_job("new", "car", make_app_model(base, 4, 1), 1, {"branchpoint": 4})
    first = bright_dark_samples(8, 0.0, flip=True)  # the new camera looks at scene B
    assert live.measure("new", ["car"], *first) == ["car"]
    assert live.switch("new", "car", first[1], first[2]) and live.experts[("new", "car")].startswith("other.car.")
    assert live.measure("new", ["car"], *bright_dark_samples(8, 8.0, flip=True)) == []  # no longer its first batch
    assert live.counts["undone"] == 0  # the expert beat the package's model on the probation batch too


def test_status_shows_every_learning_app() -> None:
    base = build_base("tiny_cnn", num_classes=5, seed=0)
    trainer = AmsTrainer(CFG)
    trainer.add_job("cam", "car", make_app_model(base, 4, 1), 1, {"branchpoint": 4})
    trainer.add_job("cam", "person", make_app_model(base, 4, 1), 0, {"branchpoint": 4})
    live = LiveLearning(trainer, lambda app, bp: make_app_model(base, bp, 1), lambda app: [4])
    t_s, frames, labels = bright_dark_samples(8, 0.0, flip=False)
    live.measure("cam", ["car", "person"], t_s, frames, labels)
    status = live.learning_status("cam")
    assert status["app"] == "car" and set(status["apps"]) == {"car", "person"}
    for block in status["apps"].values():
        assert block["agreement_now"] is not None and block["version"] == 0 and len(block["history"]) == 1
    assert {k: status[k] for k in status["apps"]["car"]} == status["apps"]["car"]  # the contract's keys: the first app
    assert live.learning_status("elsewhere") is None


def _demand() -> CameraDemand:
    rows = [{"app": "car", "branchpoint": bp, "precision": 0.9, "recall": 0.9} for bp in (2, 4)]
    problem = build_problem(rows, segment_latency_s=[0.001] * 5, head_latency_s=0.0005, frame_rates=(1.0, 5.0),
                            stream_fps=5.0, budget=1.0, event_length_frames={"car": 10.0}, correlation=0.5)
    return CameraDemand("cam", problem)


def test_live_estimates_replace_validation_after_min_samples() -> None:
    estimate = Estimate(150, 0.5, 0.4, 0.444, (0.3, 0.7), (0.25, 0.55), (0.3, 0.6))
    few = with_live_estimates(_demand(), {"car": {4: estimate}}, 200)
    assert [(c.precision, c.recall) for c in few.problem.apps[0].candidates] == [(0.9, 0.9), (0.9, 0.9)]
    enough = with_live_estimates(_demand(), {"car": {4: dataclasses.replace(estimate, samples=250)}}, 200)
    assert [(c.precision, c.recall) for c in enough.problem.apps[0].candidates] == [(0.9, 0.9), (0.5, 0.4)]

    plan = {"cameras": {"cam": {"apps": {"car": {"branchpoint": 4, "frame_f1": 0.9}}}}}
    annotate_plan(plan, {"cam": {"car": {4: estimate}}}, 200)
    assert plan["cameras"]["cam"]["apps"]["car"] == {
        "branchpoint": 4, "frame_f1": 0.9, "f1_validation": 0.9, "f1_live": None, "f1_live_ci": None,
        "live_samples": 150, "event_precision_live": None, "miss_correlation_live": None, "event_length_s_live": None}
    annotate_plan(plan, {"cam": {"car": {4: dataclasses.replace(estimate, samples=300)}}}, 200)
    assert plan["cameras"]["cam"]["apps"]["car"]["f1_live"] == 0.444
    assert plan["cameras"]["cam"]["apps"]["car"]["f1_live_ci"] == [0.3, 0.6]
