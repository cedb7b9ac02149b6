"""The one training loop every Stemcell trainer uses: mini-batch Adam on a BCE (presence) or Poisson
(count) objective."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
from torch import nn

log = logging.getLogger(__name__)


def training_device() -> torch.device:
    """Where Stemcell trains and profiles: the GPU when this process sees one (a Ray trial holding a
    GPU share sees exactly that GPU), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def balanced_pos_weight(targets: torch.Tensor) -> torch.Tensor:
    """Per-output positive weight = negatives/positives, so rare classes are not ignored."""
    pos = targets.sum(0).clamp(min=1.0)
    return ((len(targets) - pos) / pos).clamp(0.1, 20.0)


def fit_bce(
    forward: Callable[[torch.Tensor], torch.Tensor],
    params: Iterable[nn.Parameter],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    **options: object,
) -> float:
    """Train `forward(inputs) -> logits` against 0/1 `targets`; returns the last epoch's mean loss.

    `inputs` may be raw images or precomputed stem activations: fine-tuning above a frozen stem
    only needs the activation at the branchpoint, computed once instead of every epoch.
    """
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=balanced_pos_weight(targets))
    return fit(forward, params, inputs, targets, loss_fn, **options)  # type: ignore[arg-type]


def count_loss() -> nn.Module:
    """The count objective: `forward(inputs) -> log(expected count)` against object counts (Poisson likelihood)."""
    return nn.PoissonNLLLoss(log_input=True)


def fit(
    forward: Callable[[torch.Tensor], torch.Tensor],
    params: Iterable[nn.Parameter],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: nn.Module,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> float:
    """Mini-batch Adam on `loss_fn(forward(x), y)`; returns the last epoch's mean loss."""
    optimizer = torch.optim.Adam(list(params), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    mean_loss = float("nan")
    for epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = loss_fn(forward(inputs[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            count += len(batch)
        mean_loss = total / max(count, 1)
        if progress is not None:
            progress(epoch + 1, mean_loss)
    return mean_loss


@torch.no_grad()
def batched(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Run `fn` over `inputs` in chunks (bounded memory for large evaluation sets)."""
    return torch.cat([fn(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])
