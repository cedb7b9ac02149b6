"""RECL gain-driven micro-window slicing (Algorithm 1) and its round-robin / equal-share baselines."""
from __future__ import annotations

import math

import numpy as np
import pytest

from stemcell.scheduling.gain_curves import HEADROOM_GAIN, headroom_prior
from stemcell.scheduling.slicing import (
    SLICING_POLICIES,
    GainCurve,
    JobGainTracker,
    RetrainJob,
    SlicingContext,
    blended_gain_curve,
    equal_share_slicing,
    expected_gain_curve,
    fit_gain_curve,
    gain_driven_slicing,
    last_gain_estimate,
    round_robin_slicing,
    run_micro_windows,
)


def _concave_job(start: float, ceiling: float, rate: float):
    """A simulated retraining job: accuracy after w windows = ceiling - (ceiling - start) * rate**w."""
    state = {"w": 0}

    def train() -> float:
        state["w"] += 1
        return ceiling - (ceiling - start) * rate ** state["w"]

    return train, state


def _run(policy_name: str, curves: dict[str, tuple[float, float, float]], windows: int, **kwargs: object):
    jobs = {name: _concave_job(*params) for name, params in curves.items()}
    initial = {name: params[0] for name, params in curves.items()}
    return run_micro_windows(
        SLICING_POLICIES[policy_name], initial, windows, lambda j: jobs[j][0](), **kwargs  # type: ignore[arg-type]
    )


# --- the gain-curve estimator ------------------------------------------------------------------


def test_fit_recovers_geometric_decay_and_predicts_next_gain() -> None:
    gains = [0.2 * 0.5**t for t in range(4)]
    curve = fit_gain_curve(gains)
    assert curve is not None
    assert curve.rate == pytest.approx(0.5, abs=0.011)
    assert curve.gain() == pytest.approx(0.2 * 0.5**4, rel=0.1)
    assert curve.gain(2) == pytest.approx(curve.gain() * curve.rate**2)


def test_fit_single_gain_uses_prior_rate_and_none_without_data() -> None:
    assert fit_gain_curve([], 0.6) is None
    curve = fit_gain_curve([0.1], prior_rate=0.6)
    assert curve == GainCurve(next=pytest.approx(0.06), rate=0.6)


def test_fit_tolerates_negative_and_flat_gains() -> None:
    flat = fit_gain_curve([0.02, 0.02, 0.02, 0.02])
    assert flat is not None and flat.rate > 0.9 and flat.gain() == pytest.approx(0.02, rel=0.1)
    falling = fit_gain_curve([-0.05, -0.02, -0.01])
    assert falling is not None and falling.gain() < 0
    assert all(math.isfinite(c.gain()) for c in (flat, falling))


def test_last_gain_estimator_is_algorithm1_literal() -> None:
    curve = last_gain_estimate([0.3, 0.1, 0.04])
    assert curve is not None and curve.gain() == 0.04 and curve.gain(5) == 0.04


# --- gain-driven policy (planning) ------------------------------------------------------------


def test_every_unprofiled_job_gets_a_probe_window_first() -> None:
    jobs = tuple(RetrainJob(f"j{i}") for i in range(4))
    decision = gain_driven_slicing(SlicingContext(jobs, windows_available=6))
    assert decision.order[:4] == ("j0", "j1", "j2", "j3")
    assert sum(w for _, w in decision.grants) == 6
    assert all(w >= 1 for _, w in decision.grants)


def test_fewer_windows_than_jobs_probes_in_context_order() -> None:
    jobs = tuple(RetrainJob(f"j{i}") for i in range(5))
    decision = gain_driven_slicing(SlicingContext(jobs, windows_available=3))
    assert decision.order == ("j0", "j1", "j2")


def test_plan_follows_expected_marginal_gain() -> None:
    steep = RetrainJob("steep", (0.20, 0.12), windows_used=2)
    slow = RetrainJob("slow", (0.01, 0.01), windows_used=2)
    decision = gain_driven_slicing(SlicingContext((slow, steep), windows_available=4))
    assert decision.order[0] == "steep"
    assert decision.windows_for("steep") > decision.windows_for("slow")
    assert decision.expected_gain > 0
    assert decision.seconds_for("steep") == decision.windows_for("steep") * decision.window_s


def test_flat_ties_are_shared_not_handed_to_the_first_job() -> None:
    jobs = (RetrainJob("a", (0.0,), 1), RetrainJob("b", (0.0, 0.0), 2), RetrainJob("c", (0.0,), 1))
    decision = gain_driven_slicing(SlicingContext(jobs, windows_available=4))
    assert decision.order == ("a", "c", "a", "b")  # fewest windows first, then context order


def test_windows_are_spent_even_when_all_gains_are_negative() -> None:
    jobs = (RetrainJob("a", (-0.01,), 1), RetrainJob("b", (-0.05,), 1))
    decision = gain_driven_slicing(SlicingContext(jobs, windows_available=3))
    assert decision.order == ("a", "a", "a")


def test_context_validates_inputs() -> None:
    with pytest.raises(ValueError, match="unique"):
        SlicingContext((RetrainJob("a"), RetrainJob("a")), 1)
    with pytest.raises(ValueError, match=">= 0"):
        SlicingContext((RetrainJob("a"),), -1)
    with pytest.raises(ValueError, match="estimator"):
        SlicingContext((RetrainJob("a"),), 1, estimator="oracle")


# --- in-band execution on hand-made concave curves --------------------------------------------

CURVES = {
    # name: (start accuracy, ceiling, per-window decay of the remaining gap)
    "steep": (0.50, 0.95, 0.6),
    "converged": (0.90, 0.91, 0.9),
    "slow": (0.70, 0.80, 0.95),
    "medium": (0.60, 0.85, 0.8),
}


@pytest.mark.parametrize("estimator", ["curve", "last"])
def test_in_band_gain_driven_favours_the_steep_job(estimator: str) -> None:
    run = _run("gain", CURVES, windows=16, estimator=estimator)
    assert len(run.order) == 16
    assert all(run.windows_for(j) >= 1 for j in CURVES)
    assert run.windows_for("steep") > run.windows_for("converged")
    assert run.windows_for("steep") > run.windows_for("slow")
    assert run.order[:4] == tuple(CURVES)  # one probe each, in order
    # Concave curves: granting windows by true marginal gain is optimal; the in-band run, which
    # only sees measured gains, gets within 2% of that optimum's improvement.
    improvement = sum(run.gains)
    assert improvement >= 0.98 * _optimal_improvement(CURVES, 16)


def _optimal_improvement(curves: dict[str, tuple[float, float, float]], windows: int) -> float:
    """Greedy on the true marginal gains (optimal for concave curves), one window per job first."""
    used = {name: 1 for name in curves}

    def marginal(name: str) -> float:
        start, ceiling, rate = curves[name]
        return (ceiling - start) * rate ** used[name] * (1 - rate)

    for _ in range(windows - len(curves)):
        best = max(curves, key=marginal)
        used[best] += 1
    return sum((c - s) * (1 - r ** used[n]) for n, (s, c, r) in curves.items())


def test_gain_driven_beats_baselines_on_total_improvement() -> None:
    totals = {}
    for name in SLICING_POLICIES:
        run = _run(name, CURVES, windows=12)
        totals[name] = sum(run.final_accuracy.values())
        assert sum(run.gains) == pytest.approx(totals[name] - sum(p[0] for p in CURVES.values()))
    assert totals["gain"] > totals["round_robin"] + 0.05
    assert totals["gain"] > totals["equal_share"] + 0.05


# --- baselines -------------------------------------------------------------------------------


def test_round_robin_interleaves_and_continues_across_update_windows() -> None:
    jobs = tuple(RetrainJob(j) for j in "abc")
    first = round_robin_slicing(SlicingContext(jobs, windows_available=4))
    assert first.order == ("a", "b", "c", "a")
    second = round_robin_slicing(SlicingContext(jobs, windows_available=2, elapsed_windows=4))
    assert second.order == ("b", "c")


def test_equal_share_is_a_fixed_contiguous_split() -> None:
    jobs = tuple(RetrainJob(j) for j in "abc")
    decision = equal_share_slicing(SlicingContext(jobs, windows_available=8))
    assert decision.order == ("a", "a", "a", "b", "b", "b", "c", "c")
    assert decision.expected_gain == 0.0


@pytest.mark.parametrize("name", ["round_robin", "equal_share"])
def test_baselines_ignore_gains_and_are_consistent_when_replanned(name: str) -> None:
    whole = SLICING_POLICIES[name](SlicingContext(tuple(RetrainJob(j) for j in CURVES), 10)).order
    run = _run(name, CURVES, windows=10)
    assert run.order == whole  # executing one window at a time == executing the plan


@pytest.mark.parametrize("name", sorted(SLICING_POLICIES))
def test_total_windows_respected_and_every_job_served(name: str) -> None:
    jobs = tuple(RetrainJob(f"j{i}", (0.1 / (i + 1),), 1) for i in range(5))
    for windows in (0, 3, 5, 11):
        decision = SLICING_POLICIES[name](SlicingContext(jobs, windows))
        assert sum(w for _, w in decision.grants) == len(decision.order) == windows
        assert [j for j, _ in decision.grants] == [j.job_id for j in jobs]
    run = _run(name, CURVES, windows=9)
    assert all(run.windows_for(j) >= 1 for j in CURVES)


# --- the online tracker -----------------------------------------------------------------------


def test_tracker_turns_accuracies_into_gains_and_a_context() -> None:
    tracker = JobGainTracker(history=2)
    tracker.start("cam0", 0.5)
    assert tracker.observe("cam0", 1, 0.6) == pytest.approx(0.1)
    tracker.observe("cam0", 2, 0.65)
    tracker.observe("cam0", 3, 0.675)
    job = tracker.job("cam0")
    assert job.windows_used == 3 and job.recent_gains == pytest.approx((0.05, 0.025))
    assert tracker.accuracy("cam0") == 0.675
    assert tracker.expected_next_gain("cam0", prior_rate=0.5) == pytest.approx(0.0125, abs=2e-3)
    ctx = tracker.context(["cam0"], windows_available=3, window_s=2.0)
    assert ctx.jobs == (job,) and ctx.window_s == 2.0
    with pytest.raises(ValueError, match="expected window 4"):
        tracker.observe("cam0", 6, 0.7)
    with pytest.raises(KeyError, match="not started"):
        tracker.observe("cam9", 1, 0.7)


# --- keep-best checkpoints (rollback) -----------------------------------------------------------


class _ScriptedJobs:
    """Jobs whose accuracy moves by scripted steps per trained window; implements Checkpoints."""

    def __init__(self, steps: dict[str, list[float]], start: dict[str, float]) -> None:
        self.steps = {j: list(s) for j, s in steps.items()}
        self.current = dict(start)
        self.best = dict(start)
        self.log: list[tuple[str, str]] = []

    def train(self, job_id: str) -> float:
        self.current[job_id] += self.steps[job_id].pop(0)
        return self.current[job_id]

    def save(self, job_id: str) -> None:
        self.best[job_id] = self.current[job_id]
        self.log.append(("save", job_id))

    def restore(self, job_id: str) -> None:
        self.current[job_id] = self.best[job_id]
        self.log.append(("restore", job_id))


def test_keep_best_tracker_records_a_worse_window_as_zero_gain() -> None:
    tracker = JobGainTracker(keep_best=True)
    tracker.start("a", 0.6)
    assert tracker.observe("a", 1, 0.5) == 0.0
    assert tracker.accuracy("a") == 0.6
    assert tracker.observe("a", 2, 0.7) == pytest.approx(0.1)
    assert tracker.gains("a") == pytest.approx((0.0, 0.1))


def test_rollback_retries_from_the_best_checkpoint() -> None:
    jobs = _ScriptedJobs({"a": [-0.2, 0.1, 0.05]}, {"a": 0.6})
    run = run_micro_windows(SLICING_POLICIES["round_robin"], {"a": 0.6}, 3, jobs.train, checkpoints=jobs)
    # 0.6 -> 0.4 rolled back to 0.6 -> 0.7 -> 0.75
    assert jobs.log == [("save", "a"), ("restore", "a"), ("save", "a"), ("save", "a")]
    assert run.gains == pytest.approx((0.0, 0.1, 0.05))
    assert run.final_accuracy["a"] == pytest.approx(0.75) == jobs.current["a"]


@pytest.mark.parametrize("name", sorted(SLICING_POLICIES))
def test_keep_best_never_deploys_a_model_worse_than_the_start(name: str) -> None:
    steps = {"a": [-0.1] * 6, "b": [0.05, -0.3, 0.02] * 2, "c": [0.0] * 6}
    start = {"a": 0.5, "b": 0.6, "c": 0.7}
    jobs = _ScriptedJobs(steps, start)
    run = run_micro_windows(SLICING_POLICIES[name], start, 6, jobs.train, checkpoints=jobs)
    assert all(jobs.current[j] >= start[j] for j in start)
    assert run.final_accuracy == pytest.approx(jobs.current)
    assert sum(run.gains) == pytest.approx(sum(run.final_accuracy.values()) - sum(start.values()))


def test_prior_estimator_decays_the_prior_and_ignores_noisy_probes() -> None:
    # A job whose probe measured a loss but whose agreement dropped a lot since its last update is
    # still expected to gain: the prior, decayed once per window already granted.
    job = RetrainJob("drifted", recent_gains=(-0.1,), windows_used=1, prior_gain=0.2)
    curve = expected_gain_curve(job, SlicingContext((job,), 3, estimator="prior", prior_rate=0.5))
    assert curve is not None and curve.next == pytest.approx(0.1) and curve.rate == 0.5
    # Without a prior the "prior" estimator falls back to the curve fit of the measured gains.
    bare = RetrainJob("new", recent_gains=(0.04,), windows_used=1)
    ctx = SlicingContext((bare,), 3, estimator="prior", prior_rate=0.5)
    assert expected_gain_curve(bare, ctx) == fit_gain_curve((0.04,), 0.5)
    with pytest.raises(ValueError, match="unknown estimator"):
        SlicingContext((job,), 3, estimator="nope")


def test_prior_gains_steer_the_in_band_run_to_the_drifted_job() -> None:
    # Both jobs' probes gain the same; only the drop since the last update tells them apart.
    flat = {"static": (0.8, 0.9, 0.5), "drifted": (0.8, 0.9, 0.5)}
    run = _run("gain", flat, 8, estimator="prior", prior_gains={"static": 0.0, "drifted": 0.3})
    assert sorted(run.order[:2]) == ["drifted", "static"]  # Algorithm 1's probes first, the higher prior first
    assert run.windows_for("drifted") > run.windows_for("static") + 2
    plain = _run("gain", flat, 8, estimator="curve")
    assert plain.windows_for("drifted") == plain.windows_for("static")


# --- the blended estimator (the Planner's default) -----------------------------------------------


def test_blend_is_the_prior_before_any_window_and_shrinks_towards_measured_gains() -> None:
    # Nothing measured: the prior is window 0's expected gain.
    assert blended_gain_curve((), 0.2, rate=0.5, weight=4.0) == GainCurve(next=0.2, rate=0.5)
    # One window measured at 0.0 after a prior of 0.2 (worth 4 windows): level = 0.8 / 5, then decayed once.
    curve = blended_gain_curve((0.0,), 0.2, rate=0.5, weight=4.0)
    assert curve is not None and curve.next == pytest.approx(0.16 * 0.5)
    # The more windows measured, the less the prior counts: many flat windows pull the level towards 0.
    many = blended_gain_curve((0.0,) * 6, 0.2, rate=0.9, weight=4.0)
    level = 4.0 * 0.2 / (4.0 + sum(0.81**t for t in range(6)))  # about half the prior
    assert many is not None and many.next == pytest.approx(level * 0.9**6) and level < 0.11
    # Weight 0: the measured gains alone (least squares for the level of a known rate).
    alone = blended_gain_curve((0.1, 0.05), 0.9, rate=0.5, weight=0.0)
    assert alone is not None and alone.next == pytest.approx(0.025)
    # Gains measured from window 2 on (history cut) decay from there; without anything: None.
    late = blended_gain_curve((0.05,), None, rate=0.5, weight=4.0, first_window=2)
    assert late is not None and late.next == pytest.approx(0.025)
    assert blended_gain_curve((), None, rate=0.5, weight=4.0) is None
    assert blended_gain_curve((), 0.2, rate=0.5, weight=0.0) is None  # a prior worth nothing is no estimate


def test_blend_without_a_prior_takes_the_fleets_mean_prior() -> None:
    jobs = (RetrainJob("a", prior_gain=0.1), RetrainJob("b", prior_gain=0.3), RetrainJob("new"))
    ctx = SlicingContext(jobs, 4)
    assert ctx.estimator == "blend" and ctx.fleet_prior() == pytest.approx(0.2)
    assert expected_gain_curve(jobs[2], ctx) == GainCurve(next=pytest.approx(0.2), rate=0.7)
    assert SlicingContext((RetrainJob("x"),), 1).fleet_prior() is None
    # A job without a prior that was measured (an edge-only job, say) is planned from its own gains.
    measured = RetrainJob("edge", recent_gains=(0.1,), windows_used=30)
    ctx = SlicingContext((*jobs, measured), 4)
    curve = expected_gain_curve(measured, ctx)
    assert curve == blended_gain_curve((0.1,), None, rate=0.7, weight=4.0, first_window=29)
    assert curve is not None and curve.next == pytest.approx(0.07)  # its last gain, decayed once


def test_min_windows_first_then_the_priors_decide() -> None:
    jobs = (RetrainJob("static", prior_gain=0.0), RetrainJob("drifted", prior_gain=0.3))
    probed = gain_driven_slicing(SlicingContext(jobs, 6))
    assert probed.order[:2] == ("drifted", "static")  # the minimum window checks the static camera too
    assert probed.windows_for("drifted") == 5
    assert dict(probed.next_gains) == {"static": 0.0, "drifted": pytest.approx(0.3)}
    assert probed.expected_gain == pytest.approx(0.3 * sum(0.7**k for k in range(5)))
    unprobed = gain_driven_slicing(SlicingContext(jobs, 6, min_windows=0))
    assert unprobed.windows_for("static") == 0 and unprobed.order[0] == "drifted"
    twice = gain_driven_slicing(SlicingContext(jobs, 6, min_windows=2))
    assert twice.order[:4] == ("drifted", "static") * 2 and twice.windows_for("static") == 2
    # Fewer windows than jobs (a Planner round with many cameras): the minimum windows go to the
    # jobs known by nothing, then to the highest priors, not to the first jobs in context order.
    many = (*jobs, RetrainJob("mild", prior_gain=0.1), RetrainJob("unknown", recent_gains=(), windows_used=0))
    scarce = gain_driven_slicing(SlicingContext(many, 3, estimator="prior"))
    assert scarce.order == ("unknown", "drifted", "mild")
    with pytest.raises(ValueError, match="min_windows"):
        SlicingContext(jobs, 6, min_windows=-1)


def _noisy_job(need: float, rate: float, noise: float, rng: np.random.Generator):
    """A job whose window w gains need * rate**w, measured with Gaussian noise of sd `noise`."""
    state = {"acc": 0.5, "w": 0}

    def train() -> float:
        state["acc"] += need * rate ** state["w"]
        state["w"] += 1
        return state["acc"] + float(rng.normal(0.0, noise))

    return train, state


def test_blend_spends_more_on_the_needy_jobs_than_the_noisy_curve_fit() -> None:
    # Two jobs need retraining (drop 0.2), two do not; measurements are noisy (sd 0.1), as a window's
    # gain on a few dozen held-out labels is. Summed over seeds, the blend (prior + gains) trains the
    # needy jobs more and earns more true gain than Algorithm 1's curve fit of the noisy gains.
    needs = {"a": 0.2, "b": 0.0, "c": 0.2, "d": 0.0}
    totals = {"blend": 0.0, "curve": 0.0}
    needy = {"blend": 0, "curve": 0}
    for estimator in totals:
        for seed in range(10):
            rng = np.random.default_rng(seed)
            jobs = {name: _noisy_job(n, 0.7, 0.1, rng) for name, n in needs.items()}
            run = run_micro_windows(SLICING_POLICIES["gain"], {j: 0.5 for j in needs}, 12,
                                    lambda j, jobs=jobs: jobs[j][0](), estimator=estimator, prior_gains=needs)
            totals[estimator] += sum(n * (1 - 0.7 ** jobs[j][1]["w"]) / 0.3 for j, n in needs.items())
            needy[estimator] += run.windows_for("a") + run.windows_for("c")
    assert needy["blend"] > needy["curve"] and totals["blend"] > totals["curve"]


def test_headroom_prior_scales_the_disagreement_with_the_teacher() -> None:
    assert headroom_prior(1.0) == 0.0  # an adapted model that agrees with the teacher has nothing to gain
    assert headroom_prior(0.6) == pytest.approx(0.4 * HEADROOM_GAIN)
    assert headroom_prior(0.5, scale=0.2) == pytest.approx(0.1)
    assert headroom_prior(1.2) == 0.0  # never negative
    # ranked by it, the camera whose model disagrees most gets the windows beyond the probes
    jobs = (RetrainJob("adapted", prior_gain=headroom_prior(0.95)),
            RetrainJob("drifting", prior_gain=headroom_prior(0.6)))
    decision = gain_driven_slicing(SlicingContext(jobs, 6))
    assert decision.windows_for("adapted") == 1 and decision.windows_for("drifting") == 5
