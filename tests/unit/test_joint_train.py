"""Joint retraining of a merge step: cached prefix, suffix training, tied learning rate, batch interleaving."""
from __future__ import annotations

import pytest
import torch

from stemcell.models import build_base, make_app_model
from stemcell.sharing.joint_merge import Candidate, JointMerger, segment_index, stalled, tie
from stemcell.sharing.joint_train import (
    MergeConfig,
    ModelData,
    Suffix,
    interleaved_batches,
    param_groups,
    prefix_features,
    train_jointly,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(seed: int, branchpoint: int = 0):
    torch.manual_seed(seed)
    return make_app_model(build_base("tiny_cnn", seed=0), branchpoint, num_outputs=1).eval()


def _data(n: int = 32, size: int = 16, seed: int = 0) -> ModelData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n, 3, size, size, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).float()[:, None]
    return ModelData(x[:n], y[:n], x[n:], y[n:])


def test_suffix_on_the_cached_prefix_equals_the_whole_model() -> None:
    model = _model(0, branchpoint=2)  # a frozen two-segment stem, then the upper segments
    x = torch.randn(5, 3, 32, 32)
    assert segment_index(model, "stem.1") == 1 and segment_index(model, "upper.0") == 2
    assert segment_index(model, "upper.3.0") == 5  # a layer inside a segment
    with torch.no_grad():
        want = model(x)
        for start in (0, 2, 5):
            torch.testing.assert_close(Suffix(model, start)(prefix_features(model, start, x)), want)


def test_training_a_suffix_trains_the_models_own_modules_and_not_the_prefix() -> None:
    model = _model(1)
    d = _data()
    start = 4
    before = {k: v.clone() for k, v in model.state_dict().items()}
    suffix = Suffix(model, start)
    cached = ModelData(prefix_features(model, start, d.train_x), d.train_y, d.val_x, d.val_y)
    train_jointly([suffix], [cached], 1, MergeConfig(), torch.Generator().manual_seed(0))
    after = model.state_dict()
    assert not torch.equal(after["upper.4.0.weight"], before["upper.4.0.weight"])  # the suffix trained in place
    assert not torch.equal(after["head.fc.weight"], before["head.fc.weight"])
    for k in before:
        if k.startswith(("upper.0.", "upper.1.", "upper.2.", "upper.3.")):
            assert torch.equal(after[k], before[k]), k  # below the lowest tied segment: untouched
    # BatchNorm ran on its running statistics (as served): they did not move, by default
    assert torch.equal(after["upper.4.1.running_mean"], before["upper.4.1.running_mean"])
    train_jointly([suffix], [cached], 1, MergeConfig(batch_stats=True), torch.Generator().manual_seed(0))
    assert not torch.equal(model.state_dict()["upper.4.1.running_mean"], before["upper.4.1.running_mean"])


def test_param_groups_hold_each_tied_tensor_once_at_the_tied_rate() -> None:
    a, b = _model(2), _model(3)
    tie([a, b], Candidate("s", ((0, "upper.5"), (1, "upper.5")), 0))
    groups = param_groups([a, b], lr=1.0, tied=[a.upper[5]], tied_lr=0.25, frozen=[b.upper[0]])
    own, shared = groups
    assert shared["lr"] == 0.25 and own["lr"] == 1.0
    assert {id(p) for p in shared["params"]} == {id(p) for p in a.upper[5].parameters()}  # once, not twice
    everything = [id(p) for g in groups for p in g["params"]]
    assert len(everything) == len(set(everything))
    assert not {id(p) for p in b.upper[0].parameters()} & set(everything)  # frozen left out
    assert set(everything) >= {id(p) for p in a.upper[0].parameters()}  # a's own copy of that unit still trains


def test_interleaved_batches_give_every_model_a_batch_per_step_covering_its_data() -> None:
    batches = interleaved_batches([10, 64, 3], 8, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [8, 8, 8]  # steps set by the largest data set (64 / 8)
    assert sorted(torch.cat(batches[1]).tolist()) == list(range(64))  # one epoch sees each frame once
    assert set(torch.cat(batches[0]).tolist()) == set(range(10))  # a smaller set wraps around
    assert all(len(step) == 3 for step in batches[2])  # fewer frames than a batch: all of them


def test_a_tie_that_already_meets_every_target_is_kept_without_retraining() -> None:
    models = [_model(4), _model(5)]
    data = [_data(seed=0), _data(seed=1)]
    result = JointMerger(models, data, MergeConfig(max_epochs=3), targets=(0.0, 0.0)).run()
    assert result.groups and all(s.accepted and s.epochs == 0 for s in result.steps)
    assert all(m is result.models[0].upper[k] for k, m in enumerate(result.models[1].upper))


def test_a_step_that_stops_getting_closer_is_given_up_early() -> None:
    assert not stalled([5.0], 1) and not stalled([5.0, 3.0], 1) and stalled([5.0, 3.0, 3.0], 1)
    assert not stalled([5.0, 3.0, 4.0], 2) and stalled([3.0, 4.0, 3.5], 2)  # two epochs, no better than before
    assert not stalled([5.0, 5.0, 5.0], None)
    models = [_model(6), _model(7)]
    data = [_data(seed=2), _data(seed=3)]
    frozen_lr = MergeConfig(lr=0.0, max_epochs=5, patience=1)  # nothing moves: the first epoch brings nothing
    result = JointMerger(models, data, frozen_lr, targets=(0.0, 101.0)).run()
    assert result.steps and all(s.epochs == 1 and s.reason == "target missed" for s in result.steps)
