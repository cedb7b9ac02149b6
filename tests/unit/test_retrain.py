"""Retraining loop: stem untouched, loss goes down, the shipped update reproduces the server's model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stemcell.learning.buffer import SampleBuffer
from stemcell.learning.codec import apply_update, decode
from stemcell.learning.retrain import ContinualLearner, buffer_batches, retrain
from stemcell.models import build_base, make_app_model, segment_hash


def _app(branchpoint: int = 4):
    base = build_base("tiny_cnn", num_classes=5, seed=0)
    torch.manual_seed(0)  # the new head's initialisation
    return base, make_app_model(base, branchpoint, 1)


def _batches(count: int, seed: int = 0, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A learnable task: is the red channel brighter than the green one on average?"""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        x = torch.randn(8, 3, size, size, generator=g) + torch.randn(8, 3, 1, 1, generator=g)
        out.append((x, (x[:, 0].mean((1, 2)) > x[:, 1].mean((1, 2))).float()[:, None]))
    return out


def test_stem_is_never_touched() -> None:
    base, app = _app()
    stem_hashes = [segment_hash(s) for s in app.stem]
    base_upper_hashes = [segment_hash(s) for s in base.segments[app.branchpoint :]]
    learner = ContinualLearner(app, gamma=None)
    app.train()  # even if a caller left the model in train mode, BN statistics must not move
    for seed in range(2):
        learner.retrain(_batches(5, seed), iterations=5)
    assert [segment_hash(s) for s in app.stem] == stem_hashes
    assert [segment_hash(s) for s in base.segments[app.branchpoint :]] == base_upper_hashes  # deep copies trained
    assert not any(name.startswith("stem.") for name in learner.trainable_state())


def test_full_adam_reduces_loss() -> None:
    _, app = _app()
    result = retrain(app, _batches(20), iterations=20, lr=1e-2, gamma=None)
    assert result.mask_fraction == 1.0 and result.update.is_full
    assert result.loss_after < result.loss_before


def test_update_reproduces_server_weights_bit_for_bit() -> None:
    _, app = _app()
    learner = ContinualLearner(app, gamma=0.05, phase_steps=5)
    edge = learner.trainable_state()
    edge_version = 0
    for seed in range(3):
        old = learner.trainable_state()
        result = learner.retrain(_batches(5, seed), iterations=5)
        assert result.base_version == edge_version and result.version == edge_version + 1
        assert result.mask_fraction == pytest.approx(0.05, abs=1e-4)
        update = decode(result.update_bytes)
        masks = update.masks_by_name()
        for name, tensor in result.new_state.items():
            assert torch.equal(tensor[~torch.from_numpy(masks[name])], old[name][~torch.from_numpy(masks[name])])
        edge = apply_update(edge, update, current_version=edge_version)
        edge_version = update.version
        for name, tensor in learner.trainable_state().items():
            assert torch.equal(edge[name], tensor)


def test_optimizer_state_carries_across_calls() -> None:
    _, app = _app()
    learner = ContinualLearner(app, gamma=0.1, phase_steps=5)
    first = learner.retrain(_batches(5, 0), iterations=5)
    second = learner.retrain(_batches(5, 1), iterations=5)
    param = learner.named[0][1]
    assert int(learner.optimizer.adam.state[param]["step"]) == 10  # moments not reset between updates
    assert learner.optimizer.phase == 2
    assert not np.array_equal(first.update.mask, second.update.mask)  # phase 2: gradient-guided mask
    resumed_app = _app()[1]
    resumed = ContinualLearner(resumed_app, gamma=0.1, phase_steps=5)
    resumed.load_state_dict(learner.state_dict())
    a = learner.retrain(_batches(5, 2), iterations=5)
    b = resumed.retrain(_batches(5, 2), iterations=5)
    assert a.update_bytes == b.update_bytes  # a restarted worker continues exactly


def test_buffer_batches_select_app_label_columns() -> None:
    buf = SampleBuffer(horizon_s=60.0)
    rng = np.random.default_rng(0)
    for t in range(30):
        buf.add(float(t), rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), np.array([0, t % 2, 1, 0, 0], np.float32))
    batches = buffer_batches(buf, count=3, batch_size=8, rng=rng, targets=[1], input_size=16)
    assert len(batches) == 3
    x, y = batches[0]
    assert x.shape == (8, 3, 16, 16) and y.shape == (8, 1) and set(y.flatten().tolist()) <= {0.0, 1.0}
    _, app = _app()
    assert ContinualLearner(app).retrain(batches, iterations=3).version == 1
    with pytest.raises(ValueError):
        ContinualLearner(app).retrain(batches, iterations=4)


def test_training_from_cached_stem_activations_matches_training_from_frames() -> None:
    _, app_frames = _app()
    _, app_features = _app()
    batches = _batches(4, 5)
    with torch.no_grad():
        cached = [(app_features.stem_features(x), y) for x, y in batches]
    a = ContinualLearner(app_frames, gamma=0.05, phase_steps=4).retrain(batches, iterations=4)
    b = ContinualLearner(app_features, gamma=0.05, phase_steps=4, from_features=True).retrain(cached, iterations=4)
    assert a.update_bytes == b.update_bytes
    assert a.loss_after == pytest.approx(b.loss_after, rel=1e-5)
