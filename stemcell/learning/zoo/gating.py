"""RECL gating network: a small CNN that scores, per frame, which zoo expert will do best on it.

It is an image classifier whose classes are experts (RECL section 3.1), trained on
(frame, index of the best expert on that frame) pairs. "Best" is the expert that puts the most
probability on the teacher's label, a continuous score, so ties between experts that are merely
both right are broken by confidence.

When experts are admitted the network grows one output neuron each, initialised from the per-
coordinate mean and variance of the existing output neurons (RECL section 3.3): old outputs are
untouched by the growth, so the knowledge about old experts carries over and only a short
fine-tune is needed. Its training set (`GatingDataset`) keeps a fixed size by sub-sampling old
frames when new ones arrive, and keeps a score column for every expert.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stemcell.models import to_input

GATING_INPUT_SIZE = 64


def gating_input(frames: np.ndarray) -> torch.Tensor:
    """uint8 RGB frames -> normalised (N, 3, 64, 64): the gating net is cheap because its input is small."""
    return to_input(frames, size=GATING_INPUT_SIZE)


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """An nn.Linear holding exactly these weights (also valid with zero outputs)."""
    layer = nn.Linear(weight.shape[1], 1, device="meta")  # placeholder init, replaced right below
    layer.out_features = weight.shape[0]
    layer.weight = nn.Parameter(weight.detach().clone())
    layer.bias = nn.Parameter(bias.detach().clone())
    return layer


class GatingNet(nn.Module):
    """Four strided conv blocks + global pooling + one output neuron per expert.

    The output layer is evaluated row by row (multiply, then sum over features) rather than as one
    matrix product: a GEMM's blocking changes with the number of outputs, which would perturb old
    experts' logits in the last bits whenever the zoo grows or shrinks. Row-wise, every expert's
    logit is computed identically whatever the zoo size, so growth and pruning keep them exact.
    """

    def __init__(self, num_experts: int, width: int = 16, seed: int = 0) -> None:
        super().__init__()
        channels = [3, width, 2 * width, 4 * width, 4 * width]
        with torch.random.fork_rng(devices=[]):  # seeded init that leaves the caller's RNG alone
            torch.manual_seed(seed)
            blocks: list[nn.Module] = []
            for cin, cout in zip(channels, channels[1:]):
                blocks += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            bound = channels[-1] ** -0.5
            self.out = _linear(
                torch.empty(num_experts, channels[-1]).uniform_(-bound, bound), torch.zeros(num_experts)
            )

    @property
    def num_experts(self) -> int:
        return self.out.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        return (features.unsqueeze(1) * self.out.weight).sum(-1) + self.out.bias

    @torch.no_grad()
    def grow(self, count: int = 1, generator: torch.Generator | None = None) -> None:
        """Append `count` outputs with weights ~ N(mean, var) of the existing outputs, per coordinate.

        Existing rows are copied unchanged, so every old logit is exactly what it was. With fewer
        than two existing outputs there is no variance to measure: the mean (or zeros) is used.
        """
        old = self.out
        weight, bias = old.weight, old.bias
        if old.out_features >= 2:
            w_mean, w_std = weight.mean(0), weight.std(0)
            b_mean, b_std = bias.mean(), bias.std()
        else:
            w_mean = weight.mean(0) if old.out_features else torch.zeros(old.in_features)
            b_mean = bias.mean() if old.out_features else torch.zeros(())
            w_std, b_std = torch.zeros_like(w_mean), torch.zeros(())
        new_w = w_mean + w_std * torch.randn((count, old.in_features), generator=generator)
        new_b = b_mean + b_std * torch.randn((count,), generator=generator)
        self.out = _linear(torch.cat([weight, new_w]), torch.cat([bias, new_b]))

    @torch.no_grad()
    def keep(self, indices: Sequence[int]) -> None:
        """Keep only the outputs at `indices` (in that order): used when experts are pruned."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        self.out = _linear(self.out.weight[idx], self.out.bias[idx])

    @torch.no_grad()
    def mean_scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """Softmax score per expert averaged over frames (RECL ranks experts by average score)."""
        self.eval()
        if self.num_experts == 0:
            return torch.zeros(0)
        return F.softmax(self(inputs), dim=1).mean(0)


def train_gating(
    net: GatingNet,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
) -> float:
    """Cross-entropy on (frame, best expert) pairs for `steps` Adam steps; returns the last batch loss."""
    if net.num_experts == 0 or len(inputs) == 0 or steps <= 0:
        return float("nan")
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(len(inputs), (min(batch_size, len(inputs)),), generator=generator)
        loss = F.cross_entropy(net(inputs[idx].float()), targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return float(loss.detach())


@dataclass
class GatingDataset:
    """Teacher-labelled frames the gating net trains on, with every expert's confidence on each.

    Raw frames and labels are kept (not just gating inputs) because a newly admitted expert must be
    scored on the old frames too (RECL: "label the existing samples with the new experts"). New
    frames are always kept; when the set would exceed `capacity`, old frames are randomly
    sub-sampled to make room, so the training size stays constant over time.
    """

    capacity: int = 512
    frames: np.ndarray | None = None  # uint8 (N, H, W, 3)
    labels: np.ndarray | None = None  # bool (N,) or (N, outputs): teacher labels
    scores: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 0)))  # (N, experts) label confidence

    def __len__(self) -> int:
        return 0 if self.frames is None else len(self.frames)

    @property
    def num_experts(self) -> int:
        return self.scores.shape[1]

    def add_frames(
        self, frames: np.ndarray, labels: np.ndarray, scores: torch.Tensor, rng: np.random.Generator | None = None
    ) -> None:
        """Add frames scored by every expert (`scores`: (n, num_experts)), evicting random old ones."""
        if scores.shape != (len(frames), self.num_experts) or len(labels) != len(frames):
            raise ValueError(
                f"need labels and scores for {len(frames)} frames x {self.num_experts} experts, "
                f"got labels {len(labels)} scores {tuple(scores.shape)}"
            )
        frames, labels, scores = frames[-self.capacity :], labels[-self.capacity :], scores[-self.capacity :]
        if self.frames is None:
            self.frames, self.labels, self.scores = frames.copy(), labels.copy(), scores.float().clone()
            return
        rng = rng or np.random.default_rng(0)
        room = self.capacity - len(frames)
        keep = np.sort(rng.permutation(len(self))[:room])
        assert self.labels is not None
        self.frames = np.concatenate([self.frames[keep], frames])
        self.labels = np.concatenate([self.labels[keep], labels])
        self.scores = torch.cat([self.scores[torch.as_tensor(keep, dtype=torch.long)], scores.float()])

    def add_expert(self, scores: torch.Tensor) -> None:
        """Append the column of a newly admitted expert (its confidence on every stored frame)."""
        if scores.shape != (len(self),):
            raise ValueError(f"need one score per stored frame ({len(self)}), got {tuple(scores.shape)}")
        self.scores = torch.cat([self.scores, scores.float()[:, None]], dim=1)

    def keep_experts(self, indices: Sequence[int]) -> None:
        self.scores = self.scores[:, list(indices)]

    def targets(self) -> torch.Tensor:
        """Index of the best expert on each frame (most probability on the teacher's label)."""
        return self.scores.argmax(1)
