"""A RetrainWorker's job order by the Planner's slicing grants (`stemcell.scheduling.grant_order`)."""
from __future__ import annotations

from collections import Counter

from stemcell.scheduling.grant_order import next_granted, worker_grants
from stemcell.scheduling.slicing import RetrainJob, SlicingContext, gain_driven_slicing


def _phases(due: list[str], grants: dict[str, int], n: int) -> list[str]:
    """What the worker does phase after phase while every job in `due` stays due."""
    served: Counter[str] = Counter()
    order = []
    for _ in range(n):
        job = next_granted(due, grants, served)
        assert job is not None
        order.append(job)
        served[job] += 1
    return order


def test_phases_follow_the_grants_not_round_robin() -> None:
    order = _phases(["a", "b", "c"], {"a": 4, "b": 1, "c": 1}, 6)
    assert Counter(order) == {"a": 4, "b": 1, "c": 1}
    # stride scheduling: a runs until its share falls to the others', then they take their turn
    assert order == ["a", "a", "a", "b", "c", "a"]
    assert Counter(_phases(["a", "b", "c"], {"a": 4, "b": 1, "c": 1}, 12)) == {"a": 8, "b": 2, "c": 2}


def test_ungranted_jobs_train_only_when_no_granted_job_is_due() -> None:
    grants = {"a": 2, "b": 0}
    assert next_granted(["a", "b"], grants, {"a": 5}) == "a"  # over its grant, still ahead of a 0-grant job
    assert next_granted(["b", "new"], grants, {}) == "b"  # nothing granted due: the idle GPU trains them
    assert next_granted(["b", "new"], grants, {"b": 1}) == "new"  # ... the one served least first


def test_only_due_jobs_are_picked_and_ties_keep_registration_order() -> None:
    grants = {"a": 3, "b": 3, "c": 1}
    assert next_granted(["b", "c"], grants, {}) == "b"  # a is not due
    assert next_granted(["a", "b"], grants, {}) == "a"
    assert next_granted(["a", "b"], grants, {"a": 1}) == "b"
    assert next_granted([], grants, {}) is None


def test_keys_can_be_camera_app_tuples() -> None:
    grants = {("cam0", "car"): 1, ("cam1", "car"): 3}
    assert next_granted([("cam0", "car"), ("cam1", "car")], grants, {}) == ("cam1", "car")


def test_worker_grants_split_the_slicing_by_worker() -> None:
    jobs = (RetrainJob("cam0/car", prior_gain=0.3), RetrainJob("cam1/car", prior_gain=0.0),
            RetrainJob("cam2/bus", prior_gain=0.2))
    decision = gain_driven_slicing(SlicingContext(jobs, 8))
    roles = {"cam0/car": "retrain-a", "cam1/car": "retrain-a", "cam2/bus": "retrain-b"}
    out = worker_grants(decision.grants, roles)
    assert set(out) == {"retrain-a", "retrain-b"}
    assert sum(n for jobs_ in out.values() for n in jobs_.values()) == 8
    assert out["retrain-a"]["cam0/car"] > out["retrain-a"]["cam1/car"] >= 1  # the drop prior leads, probe kept
    assert worker_grants((), {"x/y": "retrain-c"}) == {"retrain-c": {"x/y": 0}}
