"""Gating network: growth keeps old outputs, N(mean, var) init, pruning outputs, learning, dataset."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stemcell.learning.zoo import GatingDataset, GatingNet, gating_input, train_gating


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_growth_keeps_old_logits_exactly() -> None:
    net = GatingNet(3, seed=1).eval()
    x = torch.randn(5, 3, 64, 64)
    before = net(x)
    net.grow(2, generator=torch.Generator().manual_seed(0))
    after = net(x)
    assert net.num_experts == 5 and after.shape == (5, 5)
    assert torch.equal(after[:, :3], before)


def test_new_neurons_follow_mean_and_variance_of_old_ones() -> None:
    net = GatingNet(4, seed=2)
    old_w = net.out.weight.detach().clone()
    net.grow(4000, generator=torch.Generator().manual_seed(0))
    new_w = net.out.weight.detach()[4:]
    assert torch.allclose(new_w.mean(0), old_w.mean(0), atol=0.1 * old_w.std(0).max().item() + 1e-3)
    assert torch.allclose(new_w.std(0), old_w.std(0), rtol=0.1)


def test_growth_from_zero_and_one_output() -> None:
    net = GatingNet(0)
    assert net.num_experts == 0 and net.mean_scores(torch.randn(2, 3, 64, 64)).numel() == 0
    net.grow(1)
    net.grow(1)  # a single old row has no variance: the copy is its mean, i.e. itself
    assert torch.equal(net.out.weight[0], net.out.weight[1])


def test_keep_drops_outputs_without_touching_the_rest() -> None:
    net = GatingNet(4, seed=3).eval()
    x = torch.randn(3, 3, 64, 64)
    before = net(x)
    net.keep([0, 2, 3])
    assert torch.equal(net(x), before[:, [0, 2, 3]])


def _two_scene_frames(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dark frames (best expert 0) and bright frames (best expert 1)."""
    rng = np.random.default_rng(seed)
    dark = rng.integers(0, 60, size=(n, 32, 32, 3), dtype=np.uint8)
    bright = rng.integers(190, 255, size=(n, 32, 32, 3), dtype=np.uint8)
    return np.concatenate([dark, bright]), np.repeat([0, 1], n)


def test_training_learns_which_expert_fits_which_scene() -> None:
    frames, best = _two_scene_frames(32)
    net = GatingNet(2, width=8)
    gen = torch.Generator().manual_seed(0)
    train_gating(net, gating_input(frames), torch.as_tensor(best), steps=30, batch_size=32, generator=gen)
    test_frames, test_best = _two_scene_frames(16, seed=1)
    predicted = net(gating_input(test_frames)).argmax(1).numpy()
    assert (predicted == test_best).mean() >= 0.95
    assert net.mean_scores(gating_input(test_frames[16:]))[1] > 0.8


def test_dataset_keeps_capacity_new_frames_and_expert_columns() -> None:
    data = GatingDataset(capacity=6)
    frames = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    data.add_frames(frames, np.zeros(4, bool), torch.zeros((4, 0)))
    data.add_expert(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    data.add_expert(torch.tensor([0.9, 0.0, 0.0, 0.0]))
    assert data.targets().tolist() == [1, 0, 0, 0]
    new = np.full((4, 8, 8, 3), 255, dtype=np.uint8)
    data.add_frames(new, np.ones(4, bool), torch.tensor([[0.0, 1.0]] * 4), rng=np.random.default_rng(0))
    assert len(data) == 6 and data.scores.shape == (6, 2)
    assert (data.frames[-4:] == 255).all() and data.labels[-4:].all()  # new frames always kept
    data.keep_experts([1])
    assert data.num_experts == 1
    with pytest.raises(ValueError, match="frames x 1 experts"):
        data.add_frames(new, np.ones(4, bool), torch.zeros((4, 2)))
    with pytest.raises(ValueError, match="one score per stored frame"):
        data.add_expert(torch.zeros(2))
