"""Event figures from live samples (stemcell.learning.live_events) and what the Planner takes from them
(stemcell.learning.live_plan): event precision where frame precision misleads, the camera's own event
length, samples weighted by the time they stand for, and estimates as of a moment (rolling plans)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stemcell.learning.live_events import event_figures, runs, sample_spans
from stemcell.learning.live_plan import live_app, plan_fields, with_live_estimates
from stemcell.learning.live_stats import Confusion, Estimate, LiveStats
from stemcell.scheduling.event_f1 import event_f1
from stemcell.scheduling.planner import CameraDemand
from stemcell.scheduling.problem import AppSpec, Candidate, build_problem
from stemcell.scheduling.tables import build_tables


def test_spans_repeat_the_last_gap_and_a_long_gap_breaks_runs() -> None:
    spans, breaks = sample_spans(np.array([0.0, 1.0, 2.0, 3.0, 100.0, 101.0]))
    assert spans.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # the 97 s gap counts as a typical one
    assert breaks.tolist() == [False, False, False, True, False, False]
    assert runs(np.array([1, 1, 0, 1, 1, 1], bool), breaks) == [(0, 2), (3, 4), (4, 6)]
    assert sample_spans(np.array([5.0]))[0].tolist() == [1.0] and runs(np.array([], bool), np.array([], bool)) == []


def test_a_long_stretch_of_yes_over_a_short_event_has_low_frame_but_full_event_precision() -> None:
    teacher = np.zeros(40, bool)
    teacher[10:13] = teacher[30:32] = True  # two events: 3 and 2 samples
    predicted = np.zeros(40, bool)
    predicted[5:35] = True  # one long run covering both
    stamps = np.arange(40) * 0.5  # sampled every 0.5 s
    ev = event_figures(predicted, teacher, stamps)
    assert (ev.events, ev.predicted_events, ev.correct_events) == (2, 1, 1)
    assert ev.event_precision == 1.0 and ev.event_recall == 1.0
    assert ev.event_length_s == pytest.approx((3 + 2) / 2 * 0.5)
    c = Confusion()
    c.add(predicted, teacher, stamps)
    e = c.estimate()
    assert e.precision == pytest.approx(5 / 30) and e.recall == 1.0  # frame precision stays low
    assert e.event_precision == 1.0 and e.event_precision_ci[0] < 1.0 and (e.events, e.predicted_events) == (2, 1)
    spurious = event_figures(np.r_[True, False, True, np.zeros(37, bool)], teacher, stamps)
    assert spurious.event_precision == 0.0 and spurious.event_recall == 0.0


def test_samples_weigh_the_time_they_stand_for() -> None:
    """ASR sampled one period 10x more densely: that period must not outweigh an equally long sparse one."""
    dense = np.arange(0.0, 10.0, 0.1)  # 100 samples over 10 s: the model is right (tp)
    sparse = 10.0 + np.arange(0.0, 10.0, 1.0)  # 10 samples over the next 10 s: all false positives
    c = Confusion()
    c.add(np.ones(100, bool), np.ones(100, bool), dense)
    c.add(np.ones(10, bool), np.zeros(10, bool), sparse)
    e = c.estimate()
    assert e.precision == pytest.approx(0.5, abs=0.01)  # unweighted it would be 100 / 110
    lo, hi = e.precision_ci
    assert hi - lo > 0.3  # effective sample size ~ 20, not 110
    past = c.until(10.0).estimate()
    assert past.samples == 100 and past.precision == 1.0 and past.event_length_s == pytest.approx(10.0)


def _estimate(samples: int, **events) -> Estimate:
    return Estimate(samples, 0.1, 0.6, 0.17, (0.05, 0.2), (0.4, 0.8), (0.1, 0.3), **events)


def test_live_app_takes_event_precision_and_the_cameras_event_length() -> None:
    spec = AppSpec("car", (Candidate(2, 0.9, 0.9), Candidate(4, 0.9, 0.9)), event_length_frames=10.0)
    with_events = _estimate(300, event_precision=0.8, event_length_s=3.0, events=5, predicted_events=4)
    live = live_app(spec, {4: with_events, 2: _estimate(300)}, 200, stream_fps=5.0)
    assert [(c.precision, c.recall) for c in live.candidates] == [(0.1, 0.6), (0.8, 0.6)]
    assert live.event_length_frames == pytest.approx(15.0)  # 3 s at 5 fps
    assert event_f1(0.8, 0.6, 15.0, 1, 0.5) > 2 * event_f1(0.1, 0.6, 10.0, 1, 0.5)
    too_few = live_app(spec, {4: dataclasses.replace(with_events, samples=100)}, 200, stream_fps=5.0)
    assert too_few == spec  # under min_samples: validation figures and the package's event length
    rows = [{"app": "car", "branchpoint": 4, "precision": 0.9, "recall": 0.9}]
    problem = build_problem(rows, segment_latency_s=[0.001] * 5, head_latency_s=0.0005, frame_rates=(1.0, 10.0),
                            stream_fps=10.0, budget=1.0, event_length_frames={"car": 10.0})
    demand = with_live_estimates(CameraDemand("cam", problem), {"car": {4: with_events}}, 200)
    assert demand.problem.apps[0].event_length_frames == pytest.approx(30.0)  # the camera's stream rate
    shown = plan_fields(0.9, dataclasses.replace(with_events, miss_correlation=0.75), 200)
    assert (shown["event_precision_live"], shown["miss_correlation_live"], shown["event_length_s_live"]) == (0.8, 0.75, 3.0)


def test_live_stats_keep_capture_times_across_a_restart() -> None:
    stats = LiveStats()
    teacher = np.array([0, 1, 1, 0, 0, 1, 1, 1], bool)
    stats.observe("cam", "car", 4, 0, 4.0, teacher, teacher, stamps=np.arange(8) * 0.5)
    before = stats.estimates("cam", "car")[4]
    assert before.event_length_s == pytest.approx(1.25) and before.event_precision == 1.0
    restored = LiveStats()
    restored.load_state_dict(stats.state_dict())
    assert restored.estimates("cam", "car")[4] == before
    old = stats.state_dict()
    old["confusion"] = [row[:4] for row in old["confusion"]]  # a checkpoint from before the capture times
    legacy = LiveStats()
    legacy.load_state_dict(old)
    assert legacy.estimates("cam", "car")[4].event_length_s == pytest.approx(2.5)  # taken as 1 s apart


def test_whole_event_misses_fit_a_high_miss_correlation_and_the_plan_uses_it() -> None:
    """Half the events are missed on every sample, half found on every sample: frame recall 0.5, but
    more frames per event find nothing more (rho ~ 1), unlike the package's rho 0.5."""
    teacher = np.tile(np.r_[np.ones(4, bool), np.zeros(4, bool)], 8)  # 8 events of 4 samples
    predicted = teacher.copy()
    predicted[np.flatnonzero(teacher)[:16]] = False  # the first 4 events missed whole
    e = Confusion()
    e.add(predicted, teacher, np.arange(64) * 0.5)
    est = e.estimate()
    assert est.recall == pytest.approx(0.5) and est.event_recall == pytest.approx(0.5)
    assert est.miss_correlation == pytest.approx(1.0)
    scattered = np.where(teacher, np.tile([True, False], 32), False)  # every other sample of every event
    e2 = Confusion()
    e2.add(scattered, teacher, np.arange(64) * 0.5)
    assert e2.estimate().event_recall == 1.0 and e2.estimate().miss_correlation < 0.3
    few = Confusion()
    few.add(predicted[:16], teacher[:16], np.arange(16) * 0.5)  # 2 events: too few to fit
    assert few.estimate().miss_correlation is None

    spec = AppSpec("car", (Candidate(4, 0.9, 0.9),), event_length_frames=10.0)
    cand = live_app(spec, {4: est}, 50, stream_fps=2.0).candidates[0]
    assert cand.correlation == pytest.approx(1.0)
    rows = [{"app": "car", "branchpoint": 4, "precision": 1.0, "recall": 0.5}]
    problem = build_problem(rows, segment_latency_s=[0.001] * 5, head_latency_s=0.0005, frame_rates=(1.0, 2.0),
                            stream_fps=2.0, budget=1.0, event_length_frames={"car": 4.0}, correlation=0.5)
    live = dataclasses.replace(problem, apps=(dataclasses.replace(
        problem.apps[0], candidates=(dataclasses.replace(problem.apps[0].candidates[0], correlation=1.0),)),))
    assert build_tables(live).recall[0, 0, -1] == pytest.approx(0.5)  # whole-event misses: recall stays 0.5
    assert build_tables(problem).recall[0, 0, -1] == pytest.approx(1 - 0.5 * 0.75 ** 3)  # the problem's rho 0.5
