"""What one AMS retraining phase reports (`Published`), a job's running costs (`JobStats`), how an
update relates to an edge's version (`payload_kind`), and how a job's model answers on raw frames
(`model_logits`): shared by the trainer, live learning (`stemcell.learning.serving`) and benchmarks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from stemcell.learning.buffer import BufferItem
from stemcell.learning.safety import SafetyVerdict
from stemcell.models import AppModel, to_input
from stemcell.models.detection import presence_logits

if TYPE_CHECKING:
    from stemcell.learning.ams import AmsConfig


def payload_kind(version: int, base_version: int | None, since: int | None) -> str:
    """How an update relates to the edge's version: "full", "sparse" (one step) or "merged"."""
    if base_version is None:
        return "full"
    return "sparse" if since is not None and version == since + 1 else "merged"


@dataclass(frozen=True)
class Published:
    """One model update that a job published."""

    camera: str
    app: str
    version: int  # version after the update
    t_s: float  # video time of the newest sample it trained on
    update_bytes: int  # encoded size (downlink cost of a current edge)
    mask_fraction: float  # coordinates sent / trainable coordinates
    loss_before: float
    loss_after: float
    fresh_accuracy_before: float | None  # accuracy on samples newer than the last update, before training
    fresh_accuracy_after: float | None  # same samples after training (they were in the training set)
    wall_s: float  # retraining wall time
    cpu_s: float  # process CPU time spent retraining
    kept_back: bool = False  # the safety check refused it: nothing was published, the version is unchanged
    safety: SafetyVerdict | None = None  # both models on the held-out samples (None: no check)


@dataclass
class JobStats:
    """Measured costs and recent gains of one job (what the Planner reads)."""

    updates: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    recent_gains: list[float] = field(default_factory=list)  # accuracy after - before on fresh samples
    last: dict[str, Any] | None = None
    kept_back: int = 0  # retrained models the safety check refused


@torch.no_grad()
def model_logits(model: AppModel, frames: np.ndarray, config: AmsConfig) -> np.ndarray:
    """(N,) logits of a one-output app model on uint8 frames, preprocessed as the package trained (a
    detect app: its first class's presence, `stemcell.models.detection.presence_logits`)."""
    device = next(model.parameters()).device
    model.eval()
    output = model(to_input(frames, config.input_size, mean=config.mean, std=config.std).to(device))
    return presence_logits(model, output)[:, 0].cpu().numpy()


def stack_items(items: list[BufferItem]) -> tuple[np.ndarray, np.ndarray] | None:
    """(frames, labels) of buffered samples; None when there are none."""
    return (np.stack([it.frame for it in items]), np.stack([it.labels for it in items])) if items else None
