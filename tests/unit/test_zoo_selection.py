"""Zoo selection rules: top-K shortlist + current + last retrained, safety check, pruning window."""
from __future__ import annotations

import pytest

from stemcell.learning.zoo import (
    CandidateContext,
    PruneContext,
    SelectionHistory,
    prune_context,
    prune_decision,
    safety_check,
    shortlist,
)


def test_shortlist_is_top_k_by_score_then_current_then_last_retrained() -> None:
    ctx = CandidateContext(
        ("e0", "e1", "e2", "e3"), (0.1, 0.4, 0.2, 0.3), current="cam0-v3", last_retrained="cam0-v4", k=2
    )
    assert shortlist(ctx) == ("e1", "e3", "cam0-v3", "cam0-v4")


def test_shortlist_deduplicates_and_breaks_score_ties_by_gating_order() -> None:
    ctx = CandidateContext(("e0", "e1", "e2"), (0.5, 0.5, 0.0), current="e1", last_retrained="e1", k=2)
    assert shortlist(ctx) == ("e0", "e1")
    assert shortlist(CandidateContext(("e0",), (1.0,), current="x", k=0)) == ("x",)
    assert shortlist(CandidateContext((), (), k=10)) == ()
    with pytest.raises(ValueError, match="scores"):
        CandidateContext(("e0",), (), k=1)


def test_default_k_is_ten() -> None:
    ids = tuple(f"e{i}" for i in range(15))
    picked = shortlist(CandidateContext(ids, tuple(float(i) for i in range(15))))
    assert picked == tuple(f"e{i}" for i in range(14, 4, -1))


def test_safety_check_picks_most_accurate_and_ties_keep_current() -> None:
    assert safety_check({"e1": 0.7, "e2": 0.9, "cur": 0.8}, current="cur").chosen == "e2"
    tie = safety_check({"e1": 0.9, "e2": 0.9, "cur": 0.9}, current="cur")
    assert tie.chosen == "cur" and tie.accuracy == 0.9
    assert safety_check({"e1": 0.9, "e2": 0.9, "cur": 0.5}, current="cur").chosen == "e1"
    decision = safety_check({"a": 0.1, "b": 0.2})
    assert decision.accuracies == (("a", 0.1), ("b", 0.2))
    with pytest.raises(ValueError):
        safety_check({})


def test_history_keeps_only_the_last_q_selections() -> None:
    history = SelectionHistory(q=3)
    for chosen in "abcde":
        history.record(chosen)
    assert list(history.recent) == ["c", "d", "e"] and history.total == 5


def _ctx(recent: str, **kw: object) -> PruneContext:
    defaults: dict[str, object] = dict(
        expert_ids=("a", "b", "c"), recent=tuple(recent), total_selections=len(recent), admitted_at={}, eta=2, q=6
    )
    defaults.update(kw)
    return PruneContext(**defaults)  # type: ignore[arg-type]


def test_prune_removes_experts_chosen_fewer_than_eta_times_in_window() -> None:
    # 'b' was popular long ago but only once in the last q=6 selections.
    decision = prune_decision(_ctx("bbbbaabacc"))
    assert dict(decision.counts) == {"a": 3, "b": 1, "c": 2}
    assert decision.remove == ("b",)


def test_prune_never_removes_in_use_or_not_yet_judged_experts() -> None:
    assert prune_decision(_ctx("bbbbaabacc", in_use=frozenset({"b"}))).remove == ()
    # 'c' was admitted 2 selections ago: it has not had a full window of q=6 yet.
    recent = "aaaaaaaaaa"
    decision = prune_decision(_ctx(recent, admitted_at={"c": 8}))
    assert decision.remove == ("b",)
    assert prune_decision(_ctx("aaa")).remove == ()  # fewer than q selections ever: nothing judged


def test_prune_context_from_history() -> None:
    history = SelectionHistory(q=4)
    history.admitted("x")
    for chosen in "xyyyy":
        history.record(chosen)
    ctx = prune_context(history, ["x", "y"], frozenset(), eta=1)
    assert ctx.recent == ("y", "y", "y", "y") and ctx.total_selections == 5
    assert prune_decision(ctx).remove == ("x",)
    history.forget("x")
    assert "x" not in history.admitted_at
