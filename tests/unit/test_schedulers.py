"""Schedulers: budget safety, agreement with brute force, baselines, infeasibility, validation, output."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from stemcell.scheduling import (
    AppSpec,
    Candidate,
    ScheduleProblem,
    SearchTooLarge,
    build_problem,
    exhaustive,
    format_schedule,
    get_scheduler,
    mainstream_greedy,
    max_sharing,
    no_sharing,
    optimal,
    random_problem,
    stem_cost,
)

SEG = (0.01, 0.02, 0.03)
HEAD = 0.001
RATES = (2.5, 5.0, 10.0)


AppRows = Sequence[tuple[Sequence[tuple[int, float, float]], float]]


def _problem(apps: AppRows, budget: float, **kw: object) -> ScheduleProblem:
    """apps: [([(branchpoint, precision, recall), ...], event_length_frames), ...] on SEG/HEAD/RATES."""
    specs = tuple(
        AppSpec(f"app{i}", tuple(Candidate(b, p, r) for b, p, r in cands), length)
        for i, (cands, length) in enumerate(apps)
    )
    fields = dict(segment_latency_s=SEG, head_latency_s=HEAD, frame_rates=RATES, stream_fps=10.0, budget=budget)
    fields.update(kw)
    return ScheduleProblem(apps=specs, **fields)  # type: ignore[arg-type]


LADDER = [(3, 0.70, 0.50), (1, 0.85, 0.75), (0, 0.90, 0.85)]


def _random(rng: np.random.Generator, max_apps: int = 4, **kw: object) -> ScheduleProblem:
    return random_problem(
        rng,
        num_apps=int(rng.integers(1, max_apps + 1)),
        num_segments=int(rng.integers(2, 6)),
        candidates_per_app=2,
        num_rates=int(rng.integers(1, 5)),
        **kw,  # type: ignore[arg-type]
    )


def _config(schedule) -> list[tuple[int, float]]:  # noqa: ANN001 - Schedule
    return [(c.branchpoint, c.fps) for c in schedule.choices]


def test_generous_budget_gives_everyone_its_best_model_at_full_rate() -> None:
    problem = _problem([(LADDER, 5.0), (LADDER, 20.0)], budget=float(stem_cost(SEG, HEAD, [0, 0], [10, 10])))
    assert _config(mainstream_greedy(problem)) == _config(exhaustive(problem)) == [(0, 10.0), (0, 10.0)]


def test_budget_of_exactly_the_cheapest_plan_keeps_max_sharing_at_lowest_rate() -> None:
    problem = _problem([(LADDER, 5.0), (LADDER, 20.0)], budget=float(stem_cost(SEG, HEAD, [3, 3], [2.5, 2.5])))
    for schedule in (mainstream_greedy(problem), exhaustive(problem)):
        assert schedule.feasible and _config(schedule) == [(3, 2.5), (3, 2.5)]


def test_long_event_app_specialises_while_short_event_app_samples_fast() -> None:
    # app0: long events (rate barely matters), big gain from specialising; app1, app2: 2-frame
    # events, shared model almost as good as their own: they should share and sample at full rate.
    long_events = ([(3, 0.55, 0.45), (0, 0.95, 0.92)], 60.0)
    short_events = ([(3, 0.90, 0.90), (0, 0.91, 0.91)], 2.0)
    budget = float(stem_cost(SEG, HEAD, [0, 3, 3], [2.5, 10.0, 10.0]))
    problem = _problem([long_events, short_events, short_events], budget=budget)
    greedy, best = mainstream_greedy(problem), exhaustive(problem)
    assert _config(greedy) == _config(best) == [(0, 2.5), (3, 10.0), (3, 10.0)]
    assert greedy.objective > max(max_sharing(problem).objective, no_sharing(problem).objective)


def test_greedy_steps_over_a_shallower_candidate_that_is_no_better() -> None:
    # b=2 is (noisily) worse than b=3; the greedy must still reach b=0.
    problem = _problem([([(3, 0.7, 0.6), (2, 0.69, 0.59), (0, 0.95, 0.9)], 6.0)], budget=1.0)
    assert _config(mainstream_greedy(problem)) == _config(exhaustive(problem)) == [(0, 10.0)]


def test_greedy_never_exceeds_budget_on_random_instances() -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        apps, cands = int(rng.integers(1, 25)), int(rng.integers(2, 8))
        problem = random_problem(rng, num_apps=apps, num_segments=6, candidates_per_app=cands, num_rates=4)
        schedule = mainstream_greedy(problem)
        chosen_b, chosen_fps = [c.branchpoint for c in schedule.choices], [c.fps for c in schedule.choices]
        recomputed = stem_cost(problem.segment_latency_s, problem.head_latency_s, chosen_b, chosen_fps)
        assert schedule.feasible and schedule.cost == pytest.approx(recomputed)
        assert schedule.cost <= problem.budget * (1 + 1e-9)


def test_greedy_is_at_least_as_good_as_both_baselines_when_they_are_feasible() -> None:
    rng = np.random.default_rng(11)
    for _ in range(40):
        apps, cands = int(rng.integers(1, 30)), int(rng.integers(2, 7))
        problem = random_problem(rng, num_apps=apps, num_segments=5, candidates_per_app=cands, num_rates=4)
        greedy = mainstream_greedy(problem)
        for baseline in (max_sharing(problem), no_sharing(problem)):
            if baseline.feasible:
                assert greedy.objective >= baseline.objective - 1e-12, baseline.policy


def test_greedy_mean_is_within_2_percent_of_optimal_on_small_random_instances() -> None:
    rng = np.random.default_rng(5)
    ratios = [mainstream_greedy(p).objective / exhaustive(p).objective for p in (_random(rng) for _ in range(40))]
    assert min(ratios) <= 1.0 + 1e-12 and max(ratios) <= 1.0 + 1e-9  # never beats the optimum
    assert np.mean(ratios) >= 0.98


def test_profile_optimum_equals_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        problem = _random(rng, max_apps=3, budget_position=float(rng.uniform(-0.3, 1.1)))
        fast, brute = optimal(problem), exhaustive(problem)
        assert fast.feasible == brute.feasible
        assert fast.objective == pytest.approx(brute.objective, abs=1e-12)


def test_infeasible_budget_returns_cheapest_plan_flagged() -> None:
    problem = _problem([(LADDER, 5.0), (LADDER, 20.0)], budget=0.01)
    for decide in (mainstream_greedy, max_sharing, exhaustive, optimal):
        schedule = decide(problem)
        assert not schedule.feasible and schedule.cost > problem.budget
        assert _config(schedule) == [(3, 2.5), (3, 2.5)], schedule.policy
    assert _config(no_sharing(problem)) == [(0, 2.5), (0, 2.5)]  # its own plan at the lowest rate
    assert not no_sharing(problem).feasible


def test_baselines_pick_the_highest_common_rate_that_fits() -> None:
    # no-sharing: 3 x 61 ms at 5 fps = 0.915 fits, at 10 fps does not; max-sharing at 10 fps: 0.63
    budget = float(stem_cost(SEG, HEAD, [0, 0, 0], [5.0, 5.0, 5.0]))
    problem = _problem([(LADDER, 5.0)] * 3, budget=budget)
    assert _config(no_sharing(problem)) == [(0, 5.0)] * 3
    assert _config(max_sharing(problem)) == [(3, 10.0)] * 3


def test_exact_searches_refuse_oversized_instances() -> None:
    problem = random_problem(np.random.default_rng(0), num_apps=8, num_segments=5, candidates_per_app=6, num_rates=4)
    with pytest.raises(SearchTooLarge, match="max_combinations"):
        exhaustive(problem)
    with pytest.raises(SearchTooLarge, match="max_profiles"):
        optimal(problem, max_profiles=10)


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: Candidate(1, 1.5, 0.5), "precision"),
        (lambda: Candidate(-1, 0.5, 0.5), "branchpoint"),
        (lambda: AppSpec("a", (), 3.0), "candidates"),
        (lambda: AppSpec("a", (Candidate(0, 0.5, 0.5),), 0.0), "event_length_frames"),
        (lambda: _problem([(LADDER, 5.0)], budget=1.0, frame_rates=(5.0, 2.5)), "frame_rates"),
        (lambda: _problem([(LADDER, 5.0)], budget=1.0, frame_rates=(5.0, 20.0)), "frame_rates"),
        (lambda: _problem([(LADDER, 5.0)], budget=-1.0), "budget"),
        (lambda: _problem([(LADDER, 5.0)], budget=1.0, correlation=1.5), "correlation"),
        (lambda: _problem([([(4, 0.5, 0.5)], 5.0)], budget=1.0), "branchpoint"),
        (lambda: _problem([(LADDER, 5.0)], budget=1.0, segment_latency_s=()), "segment_latency_s"),
        (lambda: ScheduleProblem(apps=(AppSpec("a", (Candidate(0, 0.5, 0.5),), 3.0),) * 2, segment_latency_s=SEG,
                                 head_latency_s=HEAD, frame_rates=RATES, stream_fps=10.0, budget=1.0), "apps"),
    ],
)
def test_invalid_inputs_name_the_field(make, field: str) -> None:  # noqa: ANN001 - a factory
    with pytest.raises(ValueError, match=field):
        make()


def test_build_problem_groups_manifest_rows_by_app() -> None:
    rows = [
        {"app": "cars", "branchpoint": 3, "precision": 0.7, "recall": 0.6},
        {"app": "people", "branchpoint": 3, "precision": 0.8, "recall": 0.7},
        {"app": "cars", "branchpoint": 0, "precision": 0.9, "recall": 0.8, "name": "cars-full"},
    ]
    problem = build_problem(
        rows, segment_latency_s=SEG, head_latency_s=HEAD, frame_rates=RATES, stream_fps=10, budget=1.0,
        event_length_frames={"cars": 20, "people": 4}, weights={"people": 2.0},
    )
    assert [a.name for a in problem.apps] == ["cars", "people"]
    assert [c.name for c in problem.apps[0].candidates] == ["cars@b3", "cars-full"]
    assert problem.apps[1].weight == 2.0 and problem.apps[1].event_length_frames == 4
    with pytest.raises(ValueError, match="recall"):
        build_problem([{"app": "x", "branchpoint": 0, "precision": 0.5}], segment_latency_s=SEG, head_latency_s=HEAD,
                      frame_rates=RATES, stream_fps=10, budget=1.0, event_length_frames=3)


def test_format_schedule_lists_every_app_and_the_budget() -> None:
    problem = _problem([(LADDER, 5.0), (LADDER, 20.0)], budget=0.5)
    text = format_schedule(mainstream_greedy(problem))
    assert "app0" in text and "app1" in text and "budget 0.5" in text and "INFEASIBLE" not in text
    assert "INFEASIBLE" in format_schedule(mainstream_greedy(_problem([(LADDER, 5.0)], budget=0.0)))


def test_registry_names_every_policy() -> None:
    assert get_scheduler("mainstream") is mainstream_greedy
    with pytest.raises(ValueError, match="known"):
        get_scheduler("nope")
