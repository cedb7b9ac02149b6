"""Zoo admission: the alpha-promise threshold and the gamma / max-wait admission queue."""
from __future__ import annotations

import pytest

from stemcell.learning.zoo import AdmissionContext, AdmissionQueue, admission_decision


def test_admit_only_when_beating_every_other_candidate_by_alpha() -> None:
    accs = {"new": 0.90, "e1": 0.88, "cur": 0.85}
    assert admission_decision(AdmissionContext("new", accs, alpha=0.02)).admit
    assert not admission_decision(AdmissionContext("new", accs, alpha=0.03)).admit
    below = admission_decision(AdmissionContext("new", {"new": 0.90, "e1": 0.8801}, alpha=0.02))
    assert not below.admit and below.margin == pytest.approx(0.0199)


def test_first_model_of_an_empty_zoo_is_admitted_and_unknown_candidate_rejected() -> None:
    decision = admission_decision(AdmissionContext("new", {"new": 0.5}))
    assert decision.admit and decision.margin == float("inf")
    with pytest.raises(ValueError, match="not evaluated"):
        admission_decision(AdmissionContext("ghost", {"new": 0.5}))


def test_default_alpha_is_two_points() -> None:
    assert AdmissionContext("a", {"a": 1.0}).alpha == 0.02


def test_queue_flushes_at_gamma_models() -> None:
    queue: AdmissionQueue[str] = AdmissionQueue(gamma=3)
    queue.push("a")
    queue.push("b")
    assert not queue.due()
    queue.push("c")
    assert queue.due() and queue.drain() == ["a", "b", "c"]
    assert len(queue) == 0 and not queue.due()


def test_queue_flushes_a_lone_model_after_max_wait() -> None:
    now = [100.0]
    queue: AdmissionQueue[str] = AdmissionQueue(gamma=4, max_wait_s=30.0, clock=lambda: now[0])
    queue.push("a")
    now[0] = 129.0
    assert not queue.due()
    now[0] = 130.0
    assert queue.due()
    with pytest.raises(ValueError, match="gamma"):
        AdmissionQueue(gamma=0)
